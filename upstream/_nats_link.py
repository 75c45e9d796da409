"""NATS/1, the gateway's side: sealed batches up to the chain's JetStream hub, signed documents down.

Two trio tasks over one `Hub` (nats-py on its own asyncio thread, reached through the bridge):

- the publisher sends every sealed batch, in order, to `<prefix>.batches.<store>` with
  `Nats-Msg-Id: <store>:<seq>` and `Nats-Expected-Last-Subject-Sequence`; each acknowledgement moves
  the `published` cursor, written through the single writer (`nats_published`). The stream is the
  truth about what it holds: at start and whenever it refuses an expected sequence, the publisher reads
  this store's last message there and continues after it, so a restart, a week without the hub or a
  `kill -9` between the publish and the cursor neither skips nor doubles a batch.
- the consumer reads `<prefix>.master.<kind>`, `<prefix>.master.<kind>.<store>` and
  `<prefix>.movements.<store>` through the durable consumer `gw-<store>`, submits each document to the
  same handlers UP/1 uses, and acknowledges it only once committed or refused for good.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import trio
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily

from core_ext import Refused, Request, errors, is_int, u64

from ._envelope import DOCUMENT_KINDS, decode_envelope, unpack
from ._nats_bridge import AsyncioThread, BridgeClosed, open_asyncio_thread
from ._nats_hub import MSG_ID, EXPECTED_LAST_SUBJECT_SEQUENCE, Hub, HubSettings, HubUnavailable, WrongLastSequence
from ._sealer import FIRST_AVAILABLE, STREAM_TRUSTED, SealSignal, read_head
from ._sources import NATS

log = logging.getLogger("gateway.upstream.nats")

PUBLISHED = "upstream.nats.published"   # meta: highest batch seq the stream acknowledged
OUTCOMES = ("applied", "refused")
# Refusals that will never change on a retry; anything else (UNAVAILABLE: disk full, shutting down) waits.
TRANSIENT = frozenset({errors.UNAVAILABLE})


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """The [nats] section plus the link's internal knobs."""

    servers: tuple = ()
    prefix: str = "gw"
    token: str = ""
    creds: str = ""
    tls_ca: str = ""
    trust_stream: bool = False
    fetch_batch: int = 64
    fetch_wait_s: float = 5.0
    # A run of publishes moves the cursor once at its end, or every this many batches.
    record_every: int = 64
    backoff_s: float = 0.2
    backoff_max_s: float = 30.0
    nak_delay_s: float = 5.0
    # A document fetched and not acknowledged within this is delivered again (the gateway died meanwhile).
    ack_wait_s: float = 30.0

    @classmethod
    def from_config(cls, config) -> "LinkSettings":
        if isinstance(config, cls):
            return config
        names = [n for n in cls.__slots__ if hasattr(config, n)]
        values = {n: getattr(config, n) for n in names}
        values["servers"] = tuple(values.get("servers", ()))
        return cls(**values)

    def hub(self, store_id: str) -> HubSettings:
        return HubSettings(servers=tuple(self.servers), token=self.token, creds=self.creds, tls_ca=self.tls_ca,
                           name=f"gateway {store_id}")


def batch_subject(prefix: str, store_id: str) -> str:
    return f"{prefix}.batches.{store_id}"


def down_filters(prefix: str, store_id: str) -> list[str]:
    """The consumer's subjects: chain-wide master data, this store's master data, its movements."""
    return [f"{prefix}.master.*", f"{prefix}.master.*.{store_id}", f"{prefix}.movements.{store_id}"]


def msg_id(store_id: str, seq: int) -> str:
    return f"{store_id}:{seq}"


def batch_seq_of(last, store_id: str) -> int:
    """The batch seq of a message in `<prefix>.batches.<store>`: from its Nats-Msg-Id, else its envelope."""
    store, _, seq = str(last.headers.get(MSG_ID, "")).rpartition(":")
    if store == store_id and seq.isdigit():
        return int(seq)
    return decode_envelope(last.data)["seq"]


# ---------------------------------------------------------------------------------------------
# The handler (runs inside the single writer)

def make_nats_handlers(*, trust_stream: bool) -> dict:
    """`nats_published`: the stream acknowledged every batch through `through`."""

    def nats_published(tx, request, ctx) -> dict:
        through = request.body.get("through")
        if not is_int(through) or through < 0:
            raise Refused(errors.BAD_REQUEST, f"through must be an integer >= 0, got {through!r}")
        last = read_head(tx).seq
        if through > last:
            raise Refused(errors.BAD_REQUEST, f"batch {through} was never sealed; the last is {last}")
        published = max(tx.meta(PUBLISHED, 0), through)
        tx.set_meta(PUBLISHED, published)
        # Retention trusts the stream only while configured to; turned off, the ERP's ack alone counts again.
        trusted = published if trust_stream else 0
        if tx.meta(STREAM_TRUSTED, 0) != trusted:
            tx.set_meta(STREAM_TRUSTED, trusted)
        return {"published": published}

    return {"nats_published": nats_published}


# ---------------------------------------------------------------------------------------------
# Metrics

class LinkMetrics:
    """The link's metrics; the cursor and the lag are read from LMDB at scrape time."""

    def __init__(self, registry: CollectorRegistry, store=None):
        self.connected = False
        self.reachable = False
        self.documents = Counter("gateway_nats_documents", "Documents from the hub, by kind and outcome "
                                 "(applied, refused for good).", ["kind", "outcome"], registry=registry)
        for kind in DOCUMENT_KINDS:
            for outcome in OUTCOMES:
                self.documents.labels(kind=kind, outcome=outcome)
        self.publish_failures = Counter("gateway_nats_publish_failures",
                                        "Publishes that got no acknowledgement (hub down or refusing).",
                                        registry=registry)
        self.published = Counter("gateway_nats_batches_published", "Batches the stream acknowledged.",
                                 registry=registry)
        self.store = store
        registry.register(self)

    def describe(self):
        return [GaugeMetricFamily(name, doc) for name, doc in _GAUGES]

    def collect(self):
        values = {"gateway_nats_connected": int(self.connected), "gateway_nats_hub_reachable": int(self.reachable)}
        if self.store is not None:
            with self.store.read() as tx:
                published = tx.meta(PUBLISHED, 0)
                values["gateway_nats_published_seq"] = published
                values["gateway_nats_publish_lag_batches"] = max(0, read_head(tx).seq - published)
        for name, doc in _GAUGES:
            if name in values:
                yield GaugeMetricFamily(name, doc, value=values[name])


_GAUGES = (
    ("gateway_nats_connected", "1 while the connection to the NATS hub is up."),
    ("gateway_nats_hub_reachable", "1 when the hub's JetStream answered the last request."),
    ("gateway_nats_published_seq", "Highest batch seq the stream acknowledged."),
    ("gateway_nats_publish_lag_batches", "Sealed batches the stream has not acknowledged yet."),
)


# ---------------------------------------------------------------------------------------------
# The link

@dataclass(slots=True)
class Position:
    """Where the publisher stands: the next batch to send and the stream sequence of the one before."""

    next_seq: int
    expected: int


class NatsLink:
    """The store's link to the hub: `run` publishes and consumes until cancelled."""

    def __init__(self, *, store_id: str, store, submit, signal: SealSignal, config, metrics: LinkMetrics,
                 bridge: AsyncioThread):
        self.store_id = store_id
        self.store = store
        self.submit = submit
        self.signal = signal
        self.settings = LinkSettings.from_config(config)
        self.metrics = metrics
        self.bridge = bridge
        self.hub = Hub(self.settings.hub(store_id))
        self.subject = batch_subject(self.settings.prefix, store_id)
        self.position: Position | None = None   # None: learn it from the stream first
        self.published = 0                      # highest batch seq the stream holds, as this task knows

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_connection)
                nursery.start_soon(self.run_publisher)
                nursery.start_soon(self.run_consumer)
                task_status.started(self)
        finally:
            with trio.CancelScope(shield=True), contextlib.suppress(BridgeClosed):
                await self.bridge.run(self.hub.close)

    async def _call(self, fn, *args):
        """One request to the hub; keeps `reachable` true to what the last request found."""
        try:
            result = await self.bridge.run(fn, *args)
        except HubUnavailable:
            self.metrics.reachable = False
            raise
        self.metrics.reachable = True
        return result

    async def _watch_connection(self) -> None:
        # nats-py reports the state on its own loop; the gauge samples it (a scrape needs no more).
        while True:
            self.metrics.connected = self.hub.connected
            await trio.sleep(0.5)

    # --- batches up ------------------------------------------------------------------------

    async def run_publisher(self) -> None:
        failures = 0
        unrecorded = 0
        while True:
            waiter = self.signal.waiter()
            try:
                if self.position is None:
                    await self._resync()
                    unrecorded = 1
                raw = self._batch(self.position.next_seq)
                if raw is None:
                    if unrecorded:
                        await self._record()
                        unrecorded = 0
                    await waiter.wait()
                    continue
                ack = await self._call(self.hub.publish, self.subject, raw, {
                    MSG_ID: msg_id(self.store_id, self.position.next_seq),
                    EXPECTED_LAST_SUBJECT_SEQUENCE: str(self.position.expected)})
                if ack.duplicate:
                    log.info("batch %d was already in the stream (duplicate window)", self.position.next_seq)
                self.metrics.published.inc()
                self.published = self.position.next_seq
                self.position = Position(self.position.next_seq + 1, ack.seq)
                unrecorded += 1
                failures = 0
                if unrecorded >= self.settings.record_every:
                    await self._record()
                    unrecorded = 0
            except WrongLastSequence as exc:
                # Someone's idea of the stream is stale: ours (a batch landed but its ack was lost) or
                # the stream's. Read what it holds and continue from there.
                log.info("the stream refused batch %d (%s): reading where it stands",
                         self.position.next_seq if self.position else 0, exc)
                self.position = None
            except HubUnavailable as exc:
                failures += 1
                self.metrics.publish_failures.inc()
                delay = min(self.settings.backoff_max_s, self.settings.backoff_s * 2 ** min(failures - 1, 16))
                log.warning("publishing to the hub failed (%s); trying again in %.1f s", exc, delay)
                await trio.sleep(delay)

    def _batch(self, seq: int) -> bytes | None:
        """The envelope of batch `seq`, None when not sealed yet; skips batches pruned before the hub had them."""
        with self.store.read() as tx:
            if seq > read_head(tx).seq:
                return None
            raw = tx.get_raw("batches", u64(seq))
            if raw is not None:
                return raw
            first = tx.meta(FIRST_AVAILABLE, 1)
        log.error("batch %d was pruned (the ERP acknowledged it) before the hub got it: the stream continues "
                  "at batch %d", seq, first)
        self.position = Position(first, self.position.expected)
        return self._batch(first)

    async def _resync(self) -> None:
        last = await self._call(self.hub.last_message, self.subject)
        with self.store.read() as tx:
            head = read_head(tx).seq
            first = tx.meta(FIRST_AVAILABLE, 1)
        if last is None:
            self.position = Position(max(1, first), 0)
            self.published = 0
            return
        seq = batch_seq_of(last, self.store_id)
        if seq > head:
            # Another gateway publishes as this store, or this data directory is older than the stream.
            raise HubUnavailable(f"the stream holds batch {seq} of {self.store_id} but this gateway sealed only "
                                 f"{head}: not publishing over it")
        self.position = Position(seq + 1, last.stream_seq)
        self.published = seq

    async def _record(self) -> None:
        if self.published <= 0:
            return
        answer = await self.submit(Request("nats_published", {"through": self.published}, source=NATS,
                                           channel="internal"))
        if not answer.ok:
            log.warning("recording the published cursor refused: %s", answer.body.get("msg"))

    # --- documents down --------------------------------------------------------------------

    async def run_consumer(self) -> None:
        sub = None
        failures = 0
        prefix = self.settings.prefix
        while True:
            try:
                if sub is None:
                    sub = await self._call(self.hub.pull_subscribe, f"{prefix}.movements.{self.store_id}",
                                           f"gw-{self.store_id}", down_filters(prefix, self.store_id),
                                           self.settings.ack_wait_s, self.settings.fetch_batch)
                messages = await self._call(self.hub.fetch, sub, self.settings.fetch_batch,
                                            self.settings.fetch_wait_s)
                for message in messages:
                    await self._take(message)
                failures = 0
            except HubUnavailable as exc:
                failures += 1
                delay = min(self.settings.backoff_max_s, self.settings.backoff_s * 2 ** min(failures - 1, 16))
                log.warning("reading documents from the hub failed (%s); trying again in %.1f s", exc, delay)
                if "consumer is gone" in str(exc):
                    sub = None
                await trio.sleep(delay)

    async def _take(self, message) -> None:
        """Apply one document and acknowledge it, or leave it to JetStream to deliver again."""
        outcome, kind, text = await self.apply(message.subject, message.data)
        if outcome is None:
            await self._call(self.hub.nak, message, self.settings.nak_delay_s)
            return
        if outcome == "refused":
            log.warning("document on %s refused for good: %s", message.subject, text)
        if kind in DOCUMENT_KINDS:
            self.metrics.documents.labels(kind=kind, outcome=outcome).inc()
        await self._call(self.hub.ack, message)

    async def apply(self, subject: str, data: bytes) -> tuple[str | None, str, str]:
        """(outcome, kind, words): "applied", "refused" (for good) or None (try again later)."""
        kind, store = parse_down_subject(self.settings.prefix, subject)
        if kind is None:
            return "refused", "", f"{subject} is not a master-data or movements subject"
        if store is not None and store != self.store_id:
            return "refused", kind, f"{subject} is for store {store}, not {self.store_id}"
        try:
            doc = unpack(data, "the document")
        except ValueError as exc:
            return "refused", kind, str(exc)
        if kind == "movements":
            request = Request("movements", {"doc": doc}, source=NATS, channel="erp")
        else:
            request = Request("master", {"kind": kind, "doc": doc}, source=NATS, channel="erp")
        answer = await self.submit(request)
        if answer.ok:
            return "applied", kind, ""
        if answer.body.get("err") in TRANSIENT:
            return None, kind, str(answer.body.get("msg"))
        return "refused", kind, f"{answer.body.get('err')}: {answer.body.get('msg')}"


def parse_down_subject(prefix: str, subject: str) -> tuple[str | None, str | None]:
    """(kind, store or None for the whole chain) of a documents subject; (None, None) when not one."""
    if not subject.startswith(prefix + "."):
        return None, None
    tokens = subject[len(prefix) + 1:].split(".")
    if tokens[0] == "master" and len(tokens) in (2, 3):
        return tokens[1], tokens[2] if len(tokens) == 3 else None
    if tokens[0] == "movements" and len(tokens) == 2:
        return "movements", tokens[1]
    return None, None


async def run_link(*, store_id: str, store, submit, signal: SealSignal, config, registry: CollectorRegistry,
                   task_status=trio.TASK_STATUS_IGNORED) -> None:
    """The link with its asyncio thread and metrics; `task_status.started(link)`, then runs until cancelled."""
    metrics = LinkMetrics(registry, store)
    async with open_asyncio_thread() as bridge:
        link = NatsLink(store_id=store_id, store=store, submit=submit, signal=signal, config=config,
                        metrics=metrics, bridge=bridge)
        await link.run(task_status=task_status)
