"""A gateway core in a process of its own, for the kill -9 test.

Reads requests as JSON lines on stdin ({"kind", "body", "source"}), submits each to the core loop
as it arrives, and prints {"id", "ok", "seq"} on stdout only once the core answered (so after the
commit). The test kills it with SIGKILL at random moments and starts it again on the same data.
"""
from __future__ import annotations

import json
import sys

import trio

from core_ext import Request, Store
from gateway._app_core import build_core

from tests._data import STORE, seed


async def main(data_dir: str) -> None:
    store = Store(data_dir)
    with store.read() as tx:
        fresh = tx.get("catalog", "SKU-1") is None
    if fresh:
        seed(store)
    core = build_core(store, STORE)
    stdin = trio.lowlevel.FdStream(0)
    out = sys.stdout

    async def one(line: bytes) -> None:
        msg = json.loads(line)
        res = await core.submit(Request(msg["kind"], msg["body"], source=msg.get("source", "lane1"), channel="ecr"))
        out.write(json.dumps({"id": msg["body"]["id"], "ok": res.body.get("ok"), "seq": res.body.get("seq"),
                              "err": res.body.get("err")}) + "\n")
        out.flush()

    async with trio.open_nursery() as nursery:
        await nursery.start(core.run)
        print(json.dumps({"ready": True}), flush=True)
        buf = b""
        async with trio.open_nursery() as requests:  # left only when every request was answered
            while True:
                data = await stdin.receive_some(65536)
                if not data:
                    break
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.strip():
                        requests.start_soon(one, line)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
