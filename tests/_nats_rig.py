"""What the NATS/1 tests share: a hub, the chain's side of it (streams, reading them back), a store
with the upstream and link handlers, and the link running in the test's nursery."""
from __future__ import annotations

import msgpack
import nats
from nats.js.errors import NotFoundError
import pytest
import trio
from prometheus_client import CollectorRegistry

from upstream._nats_bridge import open_asyncio_thread
from upstream._nats_erp import ensure_streams, publish_document, stream_names
from upstream._nats_link import LinkMetrics, LinkSettings, NatsLink, PUBLISHED, make_nats_handlers

from ._nats_hub import NatsHub
from ._upstream import Upstream, handlers_for

DEADLINE_S = 8.0


async def until(predicate, *, deadline_s: float = DEADLINE_S, what: str = "the condition") -> None:
    """Poll `predicate` (a component's own state) until true; fail after a bounded deadline."""
    with trio.move_on_after(deadline_s) as scope:
        while not predicate():
            await trio.sleep(0.02)
    if scope.cancelled_caught:
        pytest.fail(f"timed out after {deadline_s} s waiting for {what}")


async def until_async(predicate, *, deadline_s: float = DEADLINE_S, what: str = "the condition") -> None:
    with trio.move_on_after(deadline_s) as scope:
        while not await predicate():
            await trio.sleep(0.05)
    if scope.cancelled_caught:
        pytest.fail(f"timed out after {deadline_s} s waiting for {what}")


class Chain:
    """The chain's side, for the tests: its own connection to the hub on the bridge's asyncio thread."""

    def __init__(self, bridge, hub: NatsHub, prefix: str = "gw"):
        self.bridge = bridge
        self.hub = hub
        self.prefix = prefix
        self.nc = None

    async def _connect(self):
        self.nc = await nats.connect(self.hub.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)

    async def open(self, *, duplicate_window_s: float = 120.0) -> "Chain":
        await self.bridge.run(self._connect)
        await self.bridge.run(lambda: ensure_streams(self.nc.jetstream(), self.prefix,
                                                     duplicate_window_s=duplicate_window_s))
        return self

    async def close(self) -> None:
        if self.nc is not None:
            await self.bridge.run(self.nc.close)

    async def batches(self, store: str = "S001") -> list:
        """[(stream seq, headers, payload)] of `<prefix>.batches.<store>`, in stream order."""
        stream = stream_names(self.prefix)[0]

        async def read():
            js = self.nc.jetstream()
            info = await js.stream_info(stream)
            found = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg(stream, seq)
                if msg.subject == f"{self.prefix}.batches.{store}":
                    found.append((msg.seq, dict(msg.headers or {}), msg.data))
            return found

        return await self.bridge.run(read)

    async def publish_doc(self, doc: dict, *, store: str | None = None, subject: str | None = None,
                          msg_id: str | None = None):
        async def send():
            js = self.nc.jetstream()
            if subject is None and msg_id is None:
                return await publish_document(js, self.prefix, doc, store=store)
            headers = {"Nats-Msg-Id": msg_id} if msg_id else None
            return await js.publish(subject or f"{self.prefix}.master.{doc['kind']}",
                                    msgpack.packb(doc, use_bin_type=True), headers=headers)

        return await self.bridge.run(send)

    async def consumer_pending(self, durable: str) -> tuple[int, int] | None:
        """(messages not yet delivered, delivered and not acknowledged) of a consumer of the documents
        stream; None while the consumer does not exist yet."""
        async def info():
            try:
                ci = await self.nc.jetstream().consumer_info(stream_names(self.prefix)[1], durable)
            except NotFoundError:
                return None  # the gateway's link has not made its consumer yet: nothing drained
            return ci.num_pending, ci.num_ack_pending

        return await self.bridge.run(info)


@pytest.fixture
def hub(tmp_path):
    h = NatsHub(tmp_path / "hub").start()
    yield h
    h.stop()


@pytest.fixture
async def bridge():
    async with open_asyncio_thread("test-chain") as b:
        yield b


@pytest.fixture
async def chain(bridge, hub):
    c = await Chain(bridge, hub).open()
    yield c
    await c.close()


def link_settings(hub: NatsHub, **overrides) -> LinkSettings:
    values = dict(servers=(hub.url,), prefix="gw", backoff_s=0.05, backoff_max_s=0.5, fetch_wait_s=0.5,
                  nak_delay_s=0.2)
    values.update(overrides)
    return LinkSettings(**values)


class StoreRig:
    """A store's core (upstream and link handlers) and, once started, its link."""

    def __init__(self, up: Upstream, registry: CollectorRegistry):
        self.up = up
        self.registry = registry
        self.link: NatsLink | None = None
        self.metrics = LinkMetrics(registry, up.store)

    async def start_link(self, nursery, settings: LinkSettings) -> NatsLink:
        """The link on an asyncio thread of its own, as `run_link` runs it; `link_scope` stops both."""
        scope = trio.CancelScope()

        async def run(task_status=trio.TASK_STATUS_IGNORED):
            with scope:
                async with open_asyncio_thread("test-link") as bridge:
                    link = NatsLink(store_id="S001", store=self.up.store, submit=self.up.submit,
                                    signal=self.up.signal, config=settings, metrics=self.metrics, bridge=bridge)
                    await link.run(task_status=task_status)

        self.link = await nursery.start(run)
        self.link_scope = scope
        return self.link

    def published(self) -> int:
        with self.up.store.read() as tx:
            return tx.meta(PUBLISHED, 0)

    def head(self) -> int:
        return self.up.envelopes()[-1]["seq"] if self.up.envelopes() else 0

    def raw_batches(self) -> list[bytes]:
        with self.up.store.read() as tx:
            return [bytes(v) for _k, v in tx.txn.cursor(db=tx.db["batches"])]

    def metric(self, name, labels=None):
        return self.registry.get_sample_value(name, labels or {})

    async def sales(self, n: int, prefix: str) -> None:
        for i in range(n):
            await self.up.sale(f"{prefix}{i}")
        await self.up.seal()


@pytest.fixture
async def rig(make_core, seeded_store, store_key, erp_key, upstream_settings):
    from upstream import SealSignal
    sig = SealSignal()
    handlers = handlers_for(store_key, erp_key, upstream_settings, sig)
    handlers.update(make_nats_handlers(trust_stream=False))
    core = await make_core(seeded_store, extra_handlers=handlers)
    return StoreRig(Upstream(core, store_key, erp_key, upstream_settings, sig), CollectorRegistry())
