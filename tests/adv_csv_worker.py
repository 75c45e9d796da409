"""A csv_drop over a real core in a process of its own, for kill -9 in the middle of a file.

`python -m tests.adv_csv_worker DATA DROP stall[:K] [SLICE_BASKETS]` takes every file in DROP once,
but after the core answered its K-th slice (so after that slice's commit; K is 1 unless given) prints
"committed" with the slices so far and stops, waiting to be killed: with K the file's last slice,
that is between the commit and the move. With `run` it takes every file in DROP and prints each
outcome, then exits.
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


def device(drop: str, slice_baskets: int) -> dict:
    return {"name": "legacy-pos", "kind": "csv_drop", "dir": drop, "settle_s": 0.0, "poll_s": 0.01,
            "columns": {"id": "TicketNo", "code": "ItemCode", "qty": "Qty", "lot": "Lot"},
            "slice_baskets": slice_baskets, "slice_ms": 1000.0}  # counts cut the slices, not the pace


async def main(data_dir: str, drop_dir: str, mode: str, slice_baskets: str = "16") -> None:
    store = Store(data_dir)
    with store.read() as tx:
        fresh = tx.get("catalog", "SKU-1") is None
    if fresh:
        seed(store)
    core = build_core(store, STORE)
    async with trio.open_nursery() as nursery:
        await nursery.start(core.run)

        stall_after = int(mode.partition(":")[2] or 1) if mode.startswith("stall") else None
        slices = []

        async def submit(request):
            response = await core.submit(request)
            if request.kind == "csv_slice":
                slices.append(response.body.get("next"))
                if len(slices) == stall_after:
                    print(json.dumps({"committed": response.body.get("ok"), "slices": slices}), flush=True)
                    await trio.sleep_forever()
            return response

        drop = CsvDrop(device(drop_dir, int(slice_baskets)), submit, Metrics(CollectorRegistry()))
        drop.prepare()
        print(json.dumps({"outcomes": await drop.poll()}), flush=True)
        nursery.cancel_scope.cancel()
    store.close()


if __name__ == "__main__":
    trio.run(main, *sys.argv[1:5])
