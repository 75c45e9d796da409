"""A gateway core and its NATS link in a process of its own, for the kill -9 test.

`python -m tests.nats_worker DATA_DIR HUB_URL MODE`: seals the sales waiting in DATA_DIR and runs the link.
MODE "hold" stops right after the stream acknowledged the batches and before the published cursor is
written (prints {"published": N} and waits to be killed); MODE "run" runs the link normally and prints
{"published": N} once the cursor reaches the chain head.
"""
from __future__ import annotations

import json
import sys

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core_ext import Request, Store
from gateway._app_core import build_core
from upstream import SealSignal, Settings, make_handlers
from upstream._nats_bridge import open_asyncio_thread
from upstream._nats_link import PUBLISHED, LinkMetrics, LinkSettings, NatsLink, make_nats_handlers
from upstream._sealer import read_head
from prometheus_client import CollectorRegistry

from tests._data import STORE, seed

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


async def main(data_dir: str, url: str, mode: str) -> None:
    store = Store(data_dir)
    with store.read() as tx:
        fresh = tx.get("catalog", "SKU-1") is None
    if fresh:
        seed(store)
    signal = SealSignal()
    handlers = make_handlers(store_id="S001", signing_key=KEY, erp_public_key=None,
                             config=Settings(batch_max_events=3), signal=signal)
    handlers.update(make_nats_handlers(trust_stream=False))
    core = build_core(store, STORE, extra_handlers=handlers)
    async with trio.open_nursery() as nursery:
        await nursery.start(core.run)
        for i in range(7):
            res = await core.submit(Request("sale", {"id": f"{mode}{i}-{data_dir[-6:]}", "lines": [
                {"code": "SKU-4", "qty": 1}], "payments": [{"method": "cash", "cents": 350}]}, source="lane1",
                channel="ecr"))
            assert res.ok, res.body
        await core.submit(Request("seal", {"flush": True}, source="sealer"))
        with store.read() as tx:
            head = read_head(tx).seq
        async with open_asyncio_thread() as bridge:
            link = NatsLink(store_id="S001", store=store, submit=core.submit, signal=signal,
                            config=LinkSettings(servers=(url,), backoff_s=0.05, fetch_wait_s=0.2),
                            metrics=LinkMetrics(CollectorRegistry(), store), bridge=bridge)
            if mode == "hold":
                async def hold_before_the_cursor():
                    print(json.dumps({"published": link.published, "head": head}), flush=True)
                    await trio.sleep_forever()
                link._record = hold_before_the_cursor
            async with trio.open_nursery() as inner:
                inner.start_soon(link.run)
                if mode == "run":
                    while True:
                        with store.read() as tx:
                            if tx.meta(PUBLISHED, 0) >= head:
                                break
                        await core.wait_commit()
                    print(json.dumps({"published": head, "head": head}), flush=True)
                    inner.cancel_scope.cancel()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main, *sys.argv[1:4])
