"""What a POS app sees: sales per second and the latency of "ok" over POS/1, through the whole gateway
(HTTP on loopback, the core loop, a durable commit per group), compiled and pure Python side by side.

    python -m benchmarks.bench_pos [--sales N] [--terminals T]

Each flavour runs the gateway in a child process of its own (the flavour is chosen at import); the
terminals are threads with keep-alive HTTP connections, as POS apps on a store LAN would be.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time

from ._flavours import run_both

CONFIG = """
[store]
id = "BENCH"
data_dir = "data"
timezone = "UTC"
[keys]
signing_key = "store.pem"
erp_public_key = "erp.pub.pem"
[pos_api]
listen = "127.0.0.1:0"
[pos_api.tokens]
{tokens}
[upstream]
listen = "127.0.0.1:0"
token = "bench"
[metrics]
listen = "127.0.0.1:0"
"""


def _terminal(url: str, token: str, name: str, n: int, latencies: list) -> None:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    for i in range(n):
        body = json.dumps({"id": f"{name}-{i}", "lines": [{"code": "B-1", "qty": 1}],
                           "payments": [{"method": "cash", "cents": 350}]})
        started = time.perf_counter()
        conn.request("POST", "/pos/v1/sales", body, headers)
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - started)
        if response.status != 201:
            raise RuntimeError(f"{name}: sale {i} answered {response.status}")
    conn.close()


def _child(sales: int, terminals: int) -> dict:
    import trio

    import core_ext
    from core_ext import _master
    from gateway._app import Gateway
    from gateway._config import load_config
    from upstream import write_keypair

    with tempfile.TemporaryDirectory() as tmp:
        write_keypair(os.path.join(tmp, "store.pem"), os.path.join(tmp, "store.pub.pem"))
        tokens = "\n".join(f'pos{t} = "token-{t}"' for t in range(terminals))
        with open(os.path.join(tmp, "gateway.toml"), "w") as f:
            f.write(CONFIG.format(tokens=tokens))
        config = load_config(os.path.join(tmp, "gateway.toml"))
        out = {"flavour": core_ext.FLAVOUR}

        async def main():
            async with trio.open_nursery() as nursery:
                gateway = await nursery.start(Gateway(config).run)
                with gateway.store.begin(write=True) as tx:  # the writer is idle: seed the catalog and stock
                    _master.apply(tx, "catalog", 1, {"items": [{"sku": "B-1", "name": "Bandage", "category": "c",
                                                                "unit_cents": 350}]})
                    tx.put("lots", b"B-1\x00", {"qty": 10 * sales, "expiry": None, "serials": []})
                    tx.put("skus", "B-1", 10 * sales)
                url = gateway.urls["pos_api"][0]
                latencies: list[float] = []
                per = sales // terminals
                started = time.perf_counter()
                threads = [threading.Thread(target=_terminal, args=(url, f"token-{t}", f"pos{t}", per, latencies))
                           for t in range(terminals)]
                for thread in threads:
                    thread.start()
                await trio.to_thread.run_sync(lambda: [thread.join() for thread in threads])
                elapsed = time.perf_counter() - started
                latencies.sort()
                out.update(sales_per_s=len(latencies) / elapsed,
                           p50_ms=latencies[len(latencies) // 2] * 1000,
                           p99_ms=latencies[int(len(latencies) * 0.99) - 1] * 1000,
                           commits=gateway.core.commits)
                nursery.cancel_scope.cancel()

        trio.run(main)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_pos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sales", type=int, default=2000, help="sales per flavour (default 2000)")
    parser.add_argument("--terminals", type=int, default=8, help="concurrent POS terminals (default 8)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.sales, args.terminals)))
        return 0
    print(f"POS/1 benchmark: {args.sales} sales from {args.terminals} terminals per flavour", file=sys.stderr)
    results = run_both("benchmarks.bench_pos", ["--sales", str(args.sales), "--terminals", str(args.terminals)])
    if results is None:
        return 1
    c, p = results["cython"], results["python"]
    print(f"{'figure':30} {'cython':>10} {'python':>10} {'ratio':>7}")
    print(f"{'sales/s (durable, over HTTP)':30} {c['sales_per_s']:10,.0f} {p['sales_per_s']:10,.0f} "
          f"{c['sales_per_s'] / p['sales_per_s']:7.2f}")
    print(f"{'p50 latency of ok (ms)':30} {c['p50_ms']:10.2f} {p['p50_ms']:10.2f}")
    print(f"{'p99 latency of ok (ms)':30} {c['p99_ms']:10.2f} {p['p99_ms']:10.2f}")
    print(f"commits (cython run): {c['commits']} for {args.sales} sales: "
          f"{args.sales / max(c['commits'], 1):.1f} sales per durable commit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
