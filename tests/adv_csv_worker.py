"""A csv_drop over a real core in a process of its own, for the kill -9 between commit and move.

`python -m tests.adv_csv_worker DATA DROP stall` takes every file in DROP once, but after the core
answered (so after the commit) prints "committed" and stops before the move, waiting to be killed.
With `run` it takes every file in DROP and prints each outcome, then exits.
"""
from __future__ import annotations

import json
import sys

import trio
from prometheus_client import CollectorRegistry

from core_ext import Store
from device_plugins.csv_drop import CsvDrop, Metrics
from gateway._app_core import build_core

from tests._data import STORE, seed


def device(drop: str) -> dict:
    return {"name": "legacy-pos", "kind": "csv_drop", "dir": drop, "settle_s": 0.0, "poll_s": 0.01,
            "columns": {"id": "TicketNo", "code": "ItemCode", "qty": "Qty", "lot": "Lot"}}


async def main(data_dir: str, drop_dir: str, mode: str) -> None:
    store = Store(data_dir)
    with store.read() as tx:
        fresh = tx.get("catalog", "SKU-1") is None
    if fresh:
        seed(store)
    core = build_core(store, STORE)
    async with trio.open_nursery() as nursery:
        await nursery.start(core.run)

        async def submit(request):
            response = await core.submit(request)
            if mode == "stall":
                print(json.dumps({"committed": response.body.get("ok")}), flush=True)
                await trio.sleep_forever()
            return response

        drop = CsvDrop(device(drop_dir), submit, Metrics(CollectorRegistry()))
        drop.prepare()
        print(json.dumps({"outcomes": await drop.poll()}), flush=True)
        nursery.cancel_scope.cancel()
    store.close()


if __name__ == "__main__":
    trio.run(main, *sys.argv[1:4])
