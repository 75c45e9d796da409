"""Fixtures and helpers shared by the upstream tests: a core loop with the upstream handlers, keys
made at test time, and the UP/1 app served on loopback. conftest.py registers the fixtures."""
from __future__ import annotations

import functools

import msgpack
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry

from core_ext import Request, ledger
from gateway._http import serve_asgi
from upstream import Metrics, SealSignal, Settings, decode_envelope, make_app, make_handlers

from ._data import NOW
from .erp_test_client import request


class Upstream:
    """A running core loop with the upstream handlers, and what a test needs around it."""

    def __init__(self, core, store_key, erp_key, settings, signal):
        self.core = core
        self.store = core.store
        self.submit = core.submit
        self.store_key = store_key
        self.erp_key = erp_key
        self.settings = settings
        self.signal = signal

    async def sale(self, sid: str, sku: str = "SKU-2", qty: int = 1, unit: int = 4990):
        res = await self.core.request("sale", {"id": sid, "lines": [{"code": sku, "qty": qty}],
                                               "payments": [{"method": "cash", "cents": unit * qty}]})
        assert res.ok, res.body
        return res

    async def seal(self, *, flush: bool = True) -> dict:
        res = await self.submit(Request("seal", {"flush": flush}, source="sealer"))
        assert res.ok, res.body
        return res.body

    async def seal_all(self) -> int:
        """Seal until every committed event is in a batch (a request may only read a big backlog,
        sealing nothing yet); returns the number of requests."""
        with self.store.read() as tx:
            last = tx.last_seq()
        calls = 1
        while (await self.seal())["last_event"] < last:
            calls += 1
        return calls

    def envelopes(self) -> list[dict]:
        with self.store.read() as tx:
            return [decode_envelope(bytes(v)) for _k, v in tx.txn.cursor(db=tx.db["batches"])]

    def events(self, first: int = 1, last: int | None = None) -> list[dict]:
        with self.store.read() as tx:
            return list(tx.events(first, last))


def handlers_for(store_key, erp_key, settings, signal):
    return make_handlers(store_id="S001", signing_key=store_key, erp_public_key=erp_key.public_key(),
                         config=settings, signal=signal)


@pytest.fixture
def store_key():
    return Ed25519PrivateKey.generate()


@pytest.fixture
def erp_key():
    return Ed25519PrivateKey.generate()


@pytest.fixture
def upstream_settings():
    return Settings(token="t0ken", batch_max_events=4, batch_max_age_s=5.0)


@pytest.fixture
async def upstream(make_core, seeded_store, store_key, erp_key, upstream_settings):
    sig = SealSignal()
    core = await make_core(seeded_store, extra_handlers=handlers_for(store_key, erp_key, upstream_settings, sig))
    return Upstream(core, store_key, erp_key, upstream_settings, sig)


def append_sales(store, n: int, *, sku: str = "SKU-4") -> None:
    """`n` ledger events straight into the store, as a long day of sales would leave them."""
    with store.begin(write=True) as tx:
        for i in range(n):
            moves = [[sku, None, -1 if i % 3 else 2, None, []]]
            ledger.apply_moves(tx, moves)
            tx.append_event({"type": "sale", "id": f"bulk:{i}", "ts_ms": int(NOW * 1000) + i, "moves": moves})


TOKEN = "t0ken"


class Served:
    def __init__(self, url, up, registry):
        self.url = url
        self.up = up
        self.registry = registry

    async def call(self, method, path, *, token=TOKEN, body=None, headers=None, cafile=None):
        raw = msgpack.packb(body, use_bin_type=True) if body is not None and not isinstance(body, bytes) else body
        return await trio.to_thread.run_sync(functools.partial(
            request, self.url, method, path, token=token, body=raw, headers=headers, cafile=cafile))

    def metric(self, name, labels=None):
        return self.registry.get_sample_value(name, labels or {})


async def serve(nursery, up, *, certfile="", keyfile="", settings=None, edge=None):
    registry = CollectorRegistry()
    app = make_app(up.submit, up.store.read, settings or up.settings, Metrics(registry, up.store),
                   store_id="S001", public_key=up.store_key.public_key(), signal=up.signal, edge=edge)
    urls = await nursery.start(functools.partial(serve_asgi, app, "127.0.0.1:0", certfile=certfile, keyfile=keyfile))
    return Served(urls[0], up, registry)


@pytest.fixture
async def served(upstream, nursery):
    return await serve(nursery, upstream)


async def sales_and_seal(up, n: int, prefix: str = "s"):
    for i in range(n):
        await up.sale(f"{prefix}{i}")
    await up.seal()
