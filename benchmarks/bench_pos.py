"""POS/1 under load: priced sales per second over 16 keep-alive connections, through the whole gateway
(HTTP, the core loop, a durable commit per group), against a hello-world hypercorn app on trio loaded
by the same tool with the same requests in the same run."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

from . import _dataset
from ._common import ROOT, Figure, at_least, say
from ._gateway import Gateway, PosClient, free_port, priced_pool
from ._load import ID_MARK, post_load

CONNECTIONS = 16
SKUS, RULES = 2_000, 300


def _sale_template(lines: list[dict], total: int) -> str:
    return json.dumps({"id": ID_MARK, "lines": lines, "payments": [{"method": "cash", "cents": total}]})


def _hello(seconds: float, template: str):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks._hello", str(port)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the hello-world server did not start")
                time.sleep(0.02)
        return post_load(f"http://127.0.0.1:{port}", "/pos/v1/sales", "hello", template,
                         connections=CONNECTIONS, seconds=seconds, prefix="h")
    finally:
        proc.terminate()
        proc.wait(10)


def run(ctx) -> list[Figure]:
    seconds = ctx.size(1.0, 10.0)
    with tempfile.TemporaryDirectory() as tmp:
        with Gateway(ctx, tmp, label="pos") as gw:
            gw.stock_up(_dataset.catalog(SKUS), _dataset.promotions(RULES, SKUS),
                        _dataset.receipts(SKUS, 1_000_000))
            client = PosClient(gw.pos_url, "lane1", gw.tokens["lane1"])
            [(lines, total)] = priced_pool(client, _dataset.baskets(1, 3, SKUS, seed=3))
            client.close()
            template = _sale_template(lines, total)
            say(f"pos: hello-world baseline, {CONNECTIONS} connections, {seconds:.0f} s")
            hello = _hello(seconds, template)
            say(f"pos: the gateway, {CONNECTIONS} connections, {seconds:.0f} s")
            gateway = post_load(gw.pos_url, "/pos/v1/sales", gw.tokens["lane1"], template,
                                connections=CONNECTIONS, seconds=seconds, prefix=f"w{int(time.time())}-")
    if gateway.bad or hello.bad:
        raise RuntimeError(f"answers other than 2xx: gateway {gateway.bad}, hello world {hello.bad}")
    value = gateway.requests_per_s
    return [Figure("pos_api_16_connections", f"POS/1 priced 3-line sales at {CONNECTIONS} keep-alive connections",
                   value, "sales/s", target=">= 50 % of hello-world hypercorn on trio",
                   met=at_least(value / hello.requests_per_s, 0.5), baseline=hello.requests_per_s,
                   baseline_of="hello-world hypercorn app on trio",
                   extra={"load_tool": gateway.tool, "p50_ms": gateway.p50_ms, "p99_ms": gateway.p99_ms,
                          "requests": gateway.requests, "seconds": seconds})]
