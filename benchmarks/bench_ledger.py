"""Ledger throughput: events committed per second, compiled and pure Python side by side, with the
raw LMDB put rate of the same machine, measured in the same run, as the ceiling.

    python -m benchmarks.bench_ledger [--events N] [--clients C]

Each flavour runs in a child process (the flavour is chosen at import), one after the other, so the
figures come from the same machine at nearly the same moment; ratios are printed at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from ._flavours import run_both

def _raw_lmdb(n: int, path: str) -> dict:
    """The ceiling: msgpack puts in one transaction, and durable one-put commits."""
    import lmdb
    import msgpack

    env = lmdb.open(path, map_size=1 << 30, sync=True, metasync=True)
    value = msgpack.packb({"seq": 1, "type": "sale", "moves": [["SKU-1", "A1", -1, "2027-01-01", []]]})
    t = time.perf_counter()
    with env.begin(write=True) as txn:
        for i in range(n):
            txn.put(i.to_bytes(8, "big"), value, append=True)
    puts = n / (time.perf_counter() - t)
    commits = max(50, n // 100)
    t = time.perf_counter()
    for i in range(commits):
        with env.begin(write=True) as txn:
            txn.put((n + i).to_bytes(8, "big"), value, append=True)
    durable = commits / (time.perf_counter() - t)
    env.close()
    return {"puts_per_s": puts, "durable_commits_per_s": durable}


def _flavour_child(n: int, clients: int) -> dict:
    """Runs inside a child process with the flavour already chosen by the environment."""
    import trio

    import core_ext
    from core_ext import Request, Store
    from gateway._app_core import build_core
    from tests._data import STORE, seed

    out = {"flavour": core_ext.FLAVOUR}
    with tempfile.TemporaryDirectory() as tmp:
        # Handler cost alone: n receipts and sales in one transaction, nothing synced.
        store = Store(os.path.join(tmp, "a"), map_size=1 << 31)
        seed(store)
        from types import SimpleNamespace

        from core_ext._handlers import HANDLERS
        ctx = SimpleNamespace(now_ms=int(time.time() * 1000), settings=STORE)
        tx = store.begin(write=True)
        t = time.perf_counter()
        for i in range(n):
            if i % 2 == 0:
                HANDLERS["receipt"][0](tx, Request("receipt", {"id": f"r{i}", "sku": "SKU-1", "lot": f"L{i % 50}",
                                                               "expiry": f"2027-{i % 12 + 1:02d}-01", "qty": 3}, "erp"), ctx)
            else:
                HANDLERS["sale"][0](tx, Request("sale", {"id": f"s{i}", "lines": [{"code": "SKU-1", "qty": 2}],
                                                         "payments": [{"method": "cash", "cents": 3980}]}, "lane1", "ecr"), ctx)
        out["handler_events_per_s"] = n / (time.perf_counter() - t)
        tx.abort()
        # Replay (what verify-ledger does), over the events of a committed log.
        with store.begin(write=True) as tx:
            for i in range(n):
                HANDLERS["receipt"][0](tx, Request("receipt", {"id": f"r{i}", "sku": "SKU-2", "qty": 1}, "erp"), ctx)
        with store.read() as tx:
            events = list(tx.events())
        t = time.perf_counter()
        for _ in range(5):
            core_ext.ledger.replay(events)
        out["replay_events_per_s"] = 5 * len(events) / (time.perf_counter() - t)
        store.close()

        # Through the core loop: durable group commits under `clients` concurrent terminals.
        store = Store(os.path.join(tmp, "b"), map_size=1 << 31)
        seed(store)
        with store.begin(write=True) as tx:
            tx.put("lots", b"SKU-4\x00", {"qty": 10 * n, "expiry": None, "serials": []})
            tx.put("skus", "SKU-4", 10 * n)

        async def main():
            core = build_core(store, STORE)
            async with trio.open_nursery() as nursery:
                await nursery.start(core.run)
                per_client = n // clients
                t0 = time.perf_counter()

                async def client(c):
                    for i in range(per_client):
                        res = await core.submit(Request("sale", {"id": f"c{c}-{i}", "lines": [{"code": "SKU-4", "qty": 1}],
                                                                 "payments": [{"method": "cash", "cents": 350}]}, f"lane{c}", "ecr"))
                        assert res.ok, res.body

                async with trio.open_nursery() as inner:
                    for c in range(clients):
                        inner.start_soon(client, c)
                out["committed_events_per_s"] = per_client * clients / (time.perf_counter() - t0)
                out["commits"] = core.commits
                nursery.cancel_scope.cancel()

        trio.run(main)
        store.close()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_ledger", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=4000, help="events per measurement (default 4000)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent terminals for the core loop (default 32)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_flavour_child(args.events, args.clients)))
        return 0

    print(f"ledger benchmark: {args.events} events per figure, {args.clients} concurrent clients", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        print("  raw LMDB ...", file=sys.stderr)
        raw = _raw_lmdb(args.events * 5, os.path.join(tmp, "raw"))
    results = run_both("benchmarks.bench_ledger", ["--events", str(args.events), "--clients", str(args.clients)])
    if results is None:
        return 1
    c, p = results["cython"], results["python"]
    print(f"{'figure':38} {'cython':>12} {'python':>12} {'ratio':>7}")
    for key, label in (("handler_events_per_s", "ledger events/s (handlers, no sync)"),
                       ("replay_events_per_s", "replay events/s (verify-ledger)"),
                       ("committed_events_per_s", "committed events/s (core loop, durable)")):
        print(f"{label:38} {c[key]:12,.0f} {p[key]:12,.0f} {c[key] / p[key]:7.2f}")
    print(f"{'raw LMDB puts/s (one txn)':38} {raw['puts_per_s']:12,.0f}")
    print(f"{'raw LMDB durable commits/s':38} {raw['durable_commits_per_s']:12,.0f}")
    print(f"core loop: {c['commits']} commits for {args.events} sales (cython run): "
          f"{args.events / max(c['commits'], 1):.1f} requests per commit")
    print(f"committed sales per durable commit ceiling: {c['committed_events_per_s'] / raw['durable_commits_per_s']:.1f}x "
          "the one-request-per-commit rate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
