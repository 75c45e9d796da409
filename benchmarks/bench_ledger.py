"""The core loop, durable: sales committed per second under enough concurrent clients to fill its
groups (compiled core, in a child process), against two baselines writing the very same records
(each event document MessagePack-packed, and the balance rows it touched) in the same group sizes,
in the same run:

- raw LMDB (py-lmdb, sync and metasync on, as the store opens it): the ceiling;
- an SQLite ledger written the obvious way (stdlib sqlite3, WAL, synchronous=FULL, one transaction
  per group).

Then the same clients ask `ping`, which writes nothing: the loop's own ceiling, reported beside the
figure against the raw LMDB baseline. Last, the floor of any loop that answers each request to a
trio task of its own: the same number of tasks handing bare slots to one task that wakes them a
group at a time, nothing checked, applied or counted (`task_floor_per_s`).
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time

from ._common import ROOT, Figure, at_least, say


def _records(store, first: int) -> list[tuple[bytes, bytes, list[tuple[bytes, bytes]]]]:
    """(event key, packed event, [(balance key, packed balance row)]) for every event from `first`."""
    import msgpack
    from core_ext import lot_key, total_key
    out = []
    with store.read() as tx:
        rows = {}
        for doc in tx.events(first):
            balances = []
            for sku, lot, *_ in doc.get("moves", []):
                # The lot's row and the SKU's total, keyed as the `lots` table keys them.
                for key in (lot_key(sku, lot), total_key(sku)):
                    if key not in rows:
                        rows[key] = msgpack.packb(tx.get("lots", key), use_bin_type=True)
                    balances.append((key, rows[key]))
            out.append((doc["seq"].to_bytes(8, "big"), msgpack.packb(doc, use_bin_type=True), balances))
    return out


def _groups(records: list, size: int):
    for i in range(0, len(records), size):
        yield records[i:i + size]


def raw_lmdb(path: str, records: list, group: int) -> float:
    """Records per second into a bare LMDB environment, one durable commit per group."""
    import lmdb
    env = lmdb.open(path, map_size=1 << 31, sync=True, metasync=True, max_dbs=4)
    events, balances = env.open_db(b"events"), env.open_db(b"balances")
    started = time.perf_counter()
    for chunk in _groups(records, group):
        with env.begin(write=True) as txn:
            for key, doc, rows in chunk:
                txn.put(key, doc, db=events, append=True)
                for bkey, row in rows:
                    txn.put(bkey, row, db=balances)
    elapsed = time.perf_counter() - started
    env.close()
    return len(records) / elapsed


def sqlite_ledger(path: str, records: list, group: int) -> float:
    """Records per second into SQLite written the obvious way: WAL, synchronous=FULL, a transaction
    per group, an event table and a balance table."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE events (seq BLOB PRIMARY KEY, doc BLOB NOT NULL)")
    db.execute("CREATE TABLE balances (key BLOB PRIMARY KEY, row BLOB NOT NULL)")
    started = time.perf_counter()
    for chunk in _groups(records, group):
        db.execute("BEGIN")
        for key, doc, rows in chunk:
            db.execute("INSERT INTO events VALUES (?, ?)", (key, doc))
            db.executemany("INSERT OR REPLACE INTO balances VALUES (?, ?)", rows)
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return len(records) / elapsed


async def _clients(core, clients: int, per_client: int, make) -> float:
    """Requests answered per second when `clients` tasks each submit `per_client` requests made by
    `make(client, i)`, one after another, every answer checked to be ok."""
    import trio

    async def client(c):
        for i in range(per_client):
            answer = await core.submit(make(c, i))
            if not answer.body.get("ok"):
                raise RuntimeError(f"{answer.body.get('re')} refused: {answer.body}")

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for c in range(clients):
            nursery.start_soon(client, c)
    return per_client * clients / (time.perf_counter() - started)


async def _task_floor(clients: int, per_client: int) -> float:
    """Requests per second through trio alone: `clients` tasks each queueing a bare slot and parking
    until one writer task, woken by the first of a group and giving the others the core loop's
    gather turns, wakes them all (as `CoreLoop` wakes its callers). No request, handler, queue by
    source, thread or commit: what a task per request costs on this interpreter by itself."""
    import trio
    from trio.lowlevel import Abort, checkpoint, current_task, reschedule, wait_task_rescheduled

    from gateway._core_loop import GATHER_TURNS

    waiting: list = []
    writer: list = [None]

    def parked(_):
        return Abort.SUCCEEDED

    async def client():
        for _ in range(per_client):
            waiting.append(current_task())
            if writer[0] is not None:
                reschedule(writer[0])
                writer[0] = None
            await wait_task_rescheduled(parked)

    async def wake_groups():
        while True:
            if not waiting:
                writer[0] = current_task()
                await wait_task_rescheduled(parked)
            for _ in range(GATHER_TURNS):
                await checkpoint()
            group = waiting[:]
            del waiting[:]
            for task in group:
                reschedule(task)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wake_groups)
        started = time.perf_counter()
        async with trio.open_nursery() as callers:
            for _ in range(clients):
                callers.start_soon(client)
        elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    return per_client * clients / elapsed


def _child(sales: int, clients: int) -> dict:
    import trio

    import core_ext
    from core_ext import Request, Store
    from gateway._app_core import build_core
    from tests._data import STORE, seed

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(os.path.join(tmp, "core"), map_size=1 << 31)
        seed(store)
        # Stock for every sale: a store selling what it has (not units beyond its ledger, each of
        # which would also rewrite the SKU's unallocated alert, a row the baselines do not write).
        receipt = Request("receipt", {"id": "stock", "sku": "SKU-4", "lot": None, "expiry": None, "qty": sales},
                          "erp", "erp")
        slot = [receipt, None, None]
        build_core(store, STORE)._apply_group([slot])
        if not slot[1].body.get("ok"):
            raise RuntimeError(f"the receipt was refused: {slot[1].body}")
        with store.read() as tx:
            first = tx.last_seq() + 1
        # As `gateway run` does before it serves.
        core_ext.load_writer_state(store)
        core_ext.freeze_loaded_state()
        per_client = sales // clients
        out = {"flavour": core_ext.FLAVOUR}

        def sale(c, i):
            return Request("sale", {"t": "sale", "id": f"c{c}-{i}", "lines": [{"code": "SKU-4", "qty": 1}],
                                    "payments": [{"method": "cash", "cents": 350}]}, f"lane{c}", "ecr")

        def ping(c, i):
            return Request("ping", {"t": "ping", "id": f"p{c}-{i}"}, f"lane{c}", "ecr")

        async def main():
            core = build_core(store, STORE)
            async with trio.open_nursery() as nursery:
                await nursery.start(core.run)
                out["events_per_s"] = await _clients(core, clients, per_client, sale)
                out["commits"] = core.commits
                # The same clients asking what writes nothing: the loop's own ceiling (queue, places,
                # wake-ups, the group's step around a request), with neither a sale nor a sync in it.
                out["loop_alone_per_s"] = await _clients(core, clients, per_client, ping)
                nursery.cancel_scope.cancel()
            out["task_floor_per_s"] = await _task_floor(clients, per_client)

        trio.run(main)
        records = _records(store, first)
        store.close()
        group = max(1, round(len(records) / max(1, out["commits"])))
        out["group"] = group
        out["raw_lmdb_per_s"] = raw_lmdb(os.path.join(tmp, "raw"), records, group)
        out["sqlite_per_s"] = sqlite_ledger(os.path.join(tmp, "ledger.sqlite"), records, group)
        out["records"] = len(records)
    return out


def run(ctx) -> list[Figure]:
    clients = ctx.size(64, 512)
    sales = clients * ctx.size(25, 100)
    say(f"core loop: {sales:,} sales from {clients} concurrent clients, then the same records raw")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_ledger", "--child", str(sales), str(clients)],
                          cwd=ROOT, env={**env, "GATEWAY_REQUIRE_EXTENSIONS": "1", "PYTHONPATH": ROOT},
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the core loop child failed: {done.stderr[-2000:]}")
    r = json.loads(done.stdout.strip().splitlines()[-1])
    value = r["events_per_s"]
    extra = {"clients": clients, "sales": sales, "mean_group": r["group"], "commits": r["commits"],
             "loop_alone_per_s": r["loop_alone_per_s"],
             "loop_alone_vs_raw_lmdb": r["loop_alone_per_s"] / r["raw_lmdb_per_s"],
             "task_floor_per_s": r["task_floor_per_s"],
             "task_floor_vs_raw_lmdb": r["task_floor_per_s"] / r["raw_lmdb_per_s"],
             "raw_lmdb_vs_sqlite": r["raw_lmdb_per_s"] / r["sqlite_per_s"]}
    return [
        Figure("core_loop_durable", f"core loop, durable, {clients} clients, events/s", value, "events/s",
               target=">= 50 % of raw LMDB, same records and groups", met=at_least(value / r["raw_lmdb_per_s"], 0.5),
               baseline=r["raw_lmdb_per_s"], baseline_of="raw LMDB, same records and group sizes", extra=extra),
        Figure("core_loop_durable_vs_sqlite", f"core loop, durable, {clients} clients, against SQLite", value,
               "events/s", target=">= 5x SQLite (WAL, synchronous=FULL, a transaction per group)",
               met=at_least(value / r["sqlite_per_s"], 5.0), baseline=r["sqlite_per_s"],
               baseline_of="SQLite ledger, WAL, synchronous=FULL, same records and group sizes", extra=extra),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=2, type=int, required=True)
    print(json.dumps(_child(*parser.parse_args().child)))
    sys.exit(0)
