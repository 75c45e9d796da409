"""Sealing committed ledger events into signed, chained batches.

`seal_pending` runs inside the single writer (the `seal` handler), so a batch and the chain head that
names it are committed in the same LMDB transaction as nothing else: after a crash either both are
there or neither is, and the next seal continues the chain from what is on disk.

`run_sealer` is the timer: it decides when a seal is due and submits the request; it never writes.
"""
from __future__ import annotations

import functools
import itertools
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import trio

import msgpack

from core_ext import Request, StoreError, ledger, lot_key, u64

from ._envelope import ZERO_DIGEST, encode_envelope, seal_packed

log = logging.getLogger("gateway.upstream")

# Meta keys of the upstream's state (the "meta" table).
HEAD = "upstream.head"                    # {"seq", "digest", "last_event", "created_ms"} of the last batch
ACKED = "upstream.acked"                  # highest seq the ERP acknowledged
FIRST_AVAILABLE = "upstream.first_available"  # lowest batch seq still stored (pruning moves it)
STREAM_TRUSTED = "upstream.nats.trusted"  # with [nats] trust_stream: the stream holds batches through this seq

# Event keys that only the gateway itself needs: the envelope names the store already.
INTERNAL_KEYS = frozenset({"store"})

# The store's own packing and unpacking of events (core_ext._store), so bytes match bytes.
_packb = msgpack.Packer(use_bin_type=True).pack
_unpack = functools.partial(msgpack.unpackb, raw=False, strict_map_key=False)


@dataclass(frozen=True, slots=True)
class Settings:
    """The upstream's knobs: the configuration's [upstream] section plus a few internal limits."""

    listen: str = "127.0.0.1:8700"
    token: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    batch_max_events: int = 500
    batch_max_age_s: float = 5.0
    retention_acked_s: float = 604800
    push_url: str = ""
    push_token: str = ""
    # A document or movement list larger than this is refused with 413 before it is read whole.
    max_body_bytes: int = 32 << 20
    # One seal request seals at most this many events (about 10 µs each: some 10 ms of the writer's
    # time), so a big backlog never stalls sales for long; it is sealed over many requests.
    seal_max_events: int = 1000
    # One seal request reads at most this many events it has not read before (their stock moves,
    # about 2.5 µs each): after a restart over a big backlog, the first requests only read.
    scan_max_events: int = 4000
    # One prune request deletes at most this many batches, for the same reason.
    prune_max_batches: int = 5000
    # A page of GET /batches stops once it holds this many bytes of envelopes (at least one).
    page_max_bytes: int = 8 << 20
    prune_interval_s: float = 60.0
    push_backoff_s: float = 0.5
    push_backoff_max_s: float = 60.0

    @classmethod
    def from_config(cls, config) -> "Settings":
        """From a Settings, a mapping, or any object with the [upstream] keys as attributes."""
        if isinstance(config, cls):
            return config
        if config is None:
            return cls()
        names = cls.__slots__
        if isinstance(config, dict):
            unknown = sorted(set(config) - set(names))
            if unknown:
                raise ValueError(f"unknown upstream settings: {', '.join(unknown)}")
            return cls(**config)
        return cls(**{n: getattr(config, n) for n in names if hasattr(config, n)})


@dataclass(frozen=True, slots=True)
class Head:
    seq: int
    digest: bytes
    last_event: int
    created_ms: int


def read_head(tx) -> Head:
    row = tx.meta(HEAD)
    if row is None:
        return Head(0, ZERO_DIGEST, 0, 0)
    return Head(row["seq"], row["digest"], row["last_event"], row["created_ms"])


def limits(tx, settings: Settings) -> tuple[int, float]:
    """(batch_max_events, batch_max_age_s): the store policy's when it sets them, else the config's."""
    # The policy document as stored (what `master.policy` merges over its defaults): a reader's
    # `master.policy` would decode the whole catalog first, and the sealer timer reads this often.
    policy = tx.meta("policy") or {}
    max_events = policy.get("batch_max_events") or settings.batch_max_events
    max_age = policy.get("batch_max_age_s") or settings.batch_max_age_s
    return max(1, int(max_events)), float(max_age)


def to_doc(event: dict) -> dict:
    """The upstream document of a ledger event: seq, type, id, ts_ms first, then its fields."""
    doc = {"seq": event["seq"], "type": event.get("type"), "id": event.get("id"), "ts_ms": event.get("ts_ms")}
    for key, value in event.items():
        if key not in doc and key not in INTERNAL_KEYS and not key.startswith("_"):
            doc[key] = value
    return doc


# ---------------------------------------------------------------------------------------------
# Documents straight from the stored bytes
#
# An event is stored as the MessagePack of its dict, `seq` last (append_event adds it), packed by
# the same packer as the batches. Its document moves `seq`, `type`, `id`, `ts_ms` to the front and
# drops internal keys: only the first few entries change, so the rest (lines, payments, moves: most
# of the bytes) is copied as stored instead of rebuilt and packed again. Any event whose leading
# entries or trailing seq are not exactly where packing them says falls back to packing
# `to_doc(event)`. For what the store wrote both give the same bytes; bytes another packer wrote in
# the copied part go out as stored (the same values).

_HEAD_KEYS = ("seq", "type", "id", "ts_ms")
_SEQ_KEY = _packb("seq")
_MAX_SHAPES = 1024


def _special(key) -> bool:
    return key in _HEAD_KEYS or key in INTERNAL_KEYS or key.startswith("_")


def _map_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x80 | n,))
    if n < 1 << 16:
        return b"\xde" + n.to_bytes(2, "big")
    return b"\xdf" + n.to_bytes(4, "big")


@dataclass(frozen=True, slots=True)
class _Shape:
    """How to cut the stored bytes of events with these keys (in this order)."""

    keys: tuple          # (packed key, key) of the leading entries to pack one by one: up to the last special key
    order: tuple         # the document's entries after seq: an index into those, or the bytes of an absent one
    header: bytes        # the stored map's header
    doc_header: bytes    # the document's map header


def _shape_of(keys: tuple) -> _Shape | None:
    if not keys or keys[-1] != "seq" or not all(type(k) is str for k in keys):
        return None
    body = keys[:-1]
    cut = max((i + 1 for i, k in enumerate(body) if _special(k)), default=0)
    lead = body[:cut]
    # type, id, ts_ms (None when the event has none), then the leading entries kept, in order.
    order = tuple(lead.index(k) if k in lead else _packb(k) + _packb(None) for k in _HEAD_KEYS[1:])
    order += tuple(i for i, k in enumerate(lead) if not _special(k))
    size = len(_HEAD_KEYS) + len(order) - 3 + len(body) - cut
    return _Shape(tuple((_packb(k), k) for k in lead), order, _map_header(len(keys)), _map_header(size))


class DocPacker:
    """Packs the upstream document of a stored event, reusing the stored bytes where it can."""

    def __init__(self) -> None:
        self._shapes: dict = {}

    def shape(self, keys: tuple) -> _Shape | None:
        try:
            return self._shapes[keys]
        except KeyError:
            if len(self._shapes) >= _MAX_SHAPES:
                self._shapes.clear()
            shape = self._shapes[keys] = _shape_of(keys)
            return shape

    def pack(self, raw: bytes, event: dict) -> bytes:
        """The MessagePack of `to_doc(event)`, `raw` being the stored bytes `event` was decoded from."""
        shape = self.shape(tuple(event))
        if shape is not None:
            seq_entry = _SEQ_KEY + _packb(event["seq"])
            pieces = [packed + _packb(event[key]) for packed, key in shape.keys]
            start = len(shape.header)
            prefix = b"".join(pieces)
            stop = start + len(prefix)
            end = len(raw) - len(seq_entry)
            # The cut points are right only if the leading entries and the trailing seq are exactly
            # where packing them says; anything else (another packer's bytes) takes the slow way.
            if (stop <= end and raw.startswith(shape.header) and raw.endswith(seq_entry)
                    and raw[start:stop] == prefix):
                return b"".join((shape.doc_header, seq_entry,
                                 *[pieces[i] if type(i) is int else i for i in shape.order], raw[stop:end]))
        return _packb(to_doc(event))


# ---------------------------------------------------------------------------------------------
# What is committed after the sealed head, remembered between seals

@dataclass(slots=True)
class _Tail:
    """The net moves per (sku, lot) of the events `start + 1 ..= through`, for the chain head whose
    digest is `head_digest` (`start` is at or after the head's last event: the events between are
    sealed next and need no remembering). `on_hand_after` of a batch is the current balance minus
    the moves after it: with this kept from one seal to the next, an event sealed in the request
    that first sees it is decoded once, and any other once more, not once per seal.

    Kept in memory only: checked against the store before each use (the head's digest, and the
    bytes of event `through`, so events rolled back and written again are not trusted)."""

    head_digest: bytes | None
    start: int
    through: int
    through_raw: bytes | None
    deltas: dict


_TAIL = "upstream.tail"   # its key in the store's in-memory cache (cleared when a group rolls back)


def _events_raw(tx, first: int, last: int) -> list[bytes]:
    """The stored bytes of the events first..=last, in order."""
    if last < first:
        return []
    with tx.txn.cursor(db=tx.db["events"]) as cur:
        if cur.set_range(u64(first)) and cur.key() == u64(first):
            # The log has no gaps (each event is the last seq + 1): take the count, then check the
            # last key, rather than decode every key on the way.
            raws = list(itertools.islice(cur.iternext(keys=False, values=True), last - first + 1))
            if len(raws) == last - first + 1 and cur.key() == u64(last):
                return raws
    raise StoreError(f"the event log does not hold every event from {first} to {last}")


def _add_moves(deltas: dict, event: dict) -> None:
    for sku, lot, delta, _expiry, _serials in event.get("moves") or ():
        key = (sku, lot)
        deltas[key] = deltas.get(key, 0) + delta


def _tail(tx, head: Head, end: int, last_seq: int, max_events: int) -> _Tail | None:
    """The moves after `end` (the last event this request seals) through `last_seq`, reading at
    most `max_events` events not read before; None when more remain to read (the next seal request
    goes on from there). What it holds before `end` is taken out while sealing."""
    tail = tx.store.cache.get(_TAIL)
    if (tail is None or tail.head_digest != head.digest or tail.through > last_seq
            or (tail.through > tail.start and tx.get_raw("events", u64(tail.through)) != tail.through_raw)
            or tail.start > end or tail.through <= end):
        # Nothing to trust, or nothing that helps (all it counted is sealed now): start after `end`.
        tail = _Tail(head.digest, end, end, None, {})
        tx.store.cache[_TAIL] = tail
    upto = min(last_seq, tail.through + max_events)
    raws = _events_raw(tx, tail.through + 1, upto)
    deltas, unpack = tail.deltas, _unpack
    for raw in raws:
        for sku, lot, delta, _expiry, _serials in unpack(raw).get("moves") or ():
            deltas[sku, lot] = deltas.get((sku, lot), 0) + delta
    if raws:
        tail.through, tail.through_raw = upto, raws[-1]
    return tail if tail.through == last_seq else None


# ---------------------------------------------------------------------------------------------
# Bodies

def _balance_reader(tx):
    """qty(sku, lot), the current balance: the writer's in-memory ledger balances, or (in a read
    transaction) the `lots` table."""
    if tx.write:
        return ledger.balances(tx).qty

    def qty(sku, lot) -> int:
        row = tx.get("lots", lot_key(sku, lot))
        return row["qty"] if row else 0
    return qty


def _packed_alerts(tx) -> bytes:
    """The open alerts as one packed list, from their stored bytes (the same packer's)."""
    with tx.txn.cursor(db=tx.db["alerts"]) as cur:
        raws = list(cur.iternext(keys=False, values=True))
    return _array_header(len(raws)) + b"".join(raws)


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def _documents(raws: list, docs: DocPacker, packed: list, net: dict, counted: dict | None) -> None:
    """Decode each event once: its document packed onto `packed`, its moves added to `net` (and to
    `counted` when given: the moves the tail holds)."""
    pack, add, unpack = docs.pack, packed.append, _unpack
    for raw in raws:
        event = unpack(raw)
        for sku, lot, delta, _expiry, _serials in event.get("moves") or ():
            net[sku, lot] = net.get((sku, lot), 0) + delta
            if counted is not None:
                counted[sku, lot] = counted.get((sku, lot), 0) + delta
        add(pack(raw, event))


def _bodies(tx, ranges: list, tail: _Tail, qty, docs: DocPacker, alerts: bytes) -> list[tuple[bytes, int]]:
    """(packed body, document count) of each range, in order; the ranges' moves are taken out of
    `tail`, which then starts after the last range.

    One event decoded at a time, its document kept packed: the bytes are those of
    `packb({"docs": [...], "stock": [...], "alerts": [...]})`, without the events' dicts in memory.
    `on_hand_after` is computed from the last range back: the tail holds the moves after the last,
    and each range's moves are added for the one before it."""
    pieces, counted = [], {}
    for first, last in ranges:
        raws = _events_raw(tx, first, last)
        cut = max(0, min(len(raws), tail.start - first + 1))   # those up to `start` are not in the tail
        packed, net = [], {}
        _documents(raws[:cut], docs, packed, net, None)
        _documents(raws[cut:], docs, packed, net, counted)
        pieces.append((packed, net))
    deltas = tail.deltas
    for key, delta in counted.items():
        left = deltas.get(key, 0) - delta
        if left:
            deltas[key] = left
        else:
            deltas.pop(key, None)
    tail.start = ranges[-1][1]
    later: dict = {}   # moves of the ranges after the current one
    bodies = []
    for packed, net in reversed(pieces):
        stock = [[sku, lot, delta, qty(sku, lot) - deltas.get((sku, lot), 0) - later.get((sku, lot), 0)]
                 for (sku, lot), delta in net.items()]
        for key, delta in net.items():
            later[key] = later.get(key, 0) + delta
        bodies.append((b"".join((b"\x83\xa4docs", _array_header(len(packed)), *packed, b"\xa5stock",
                                 _packb(stock), b"\xa6alerts", alerts)), len(packed)))
    bodies.reverse()
    return bodies


def plan_ranges(head: Head, last_event: int, max_events: int, *, flush: bool, cap_events: int) -> list:
    """The event ranges to seal now: full batches, and the partial tail too when `flush`."""
    ranges = []
    first = head.last_event + 1
    budget = max(cap_events, max_events)
    while first <= last_event and budget >= max_events:
        last = min(first + max_events - 1, last_event)
        if last - first + 1 < max_events and not flush:
            break
        ranges.append((first, last))
        budget -= last - first + 1
        first = last + 1
    return ranges


def seal_pending(tx, *, store_id: str, private_key, now_ms: int, settings: Settings, flush: bool) -> list[Head]:
    """Seal what is waiting into batches in `tx`; returns the heads of the new batches (maybe none).

    One call seals at most `settings.seal_max_events` events, and first reads at most
    `settings.scan_max_events` events after those that it has not read before (after a restart over
    a big backlog, the first calls only read, and seal nothing): each writer turn stays short."""
    head = read_head(tx)
    max_events, _max_age = limits(tx, settings)
    last_seq = tx.last_seq()
    ranges = plan_ranges(head, last_seq, max_events, flush=flush, cap_events=settings.seal_max_events)
    if not ranges:
        return []
    tail = _tail(tx, head, ranges[-1][1], last_seq, settings.scan_max_events)
    if tail is None:
        return []
    # Changed below as batches are sealed: untrusted until the new head is known.
    tail.head_digest = None
    bodies = _bodies(tx, ranges, tail, _balance_reader(tx), DocPacker(), _packed_alerts(tx))
    sealed = []
    for (first, last), (body, count) in zip(ranges, bodies):
        env, new_digest = seal_packed(store=store_id, seq=head.seq + 1, prev=head.digest, created_ms=now_ms,
                                      first_event=first, last_event=last, packed_body=body, count=count,
                                      private_key=private_key)
        head = Head(head.seq + 1, new_digest, last, now_ms)
        tx.put_raw("batches", u64(head.seq), encode_envelope(env))
        sealed.append(head)
    tx.set_meta(HEAD, {"seq": head.seq, "digest": head.digest, "last_event": head.last_event,
                       "created_ms": head.created_ms})
    if tx.meta(FIRST_AVAILABLE) is None:
        tx.set_meta(FIRST_AVAILABLE, 1)
    tail.head_digest = head.digest
    return sealed


class SealSignal:
    """Wakes whoever waits for news of the chain (long polls, the push client) after a commit.

    `notify` runs on the event loop (the core loop's after-commit callbacks do), so a plain
    trio.Event swapped on each notification is enough.
    """

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    def waiter(self) -> trio.Event:
        """The event the next notification sets: take it before reading the store, then wait on it,
        and a notification between the read and the wait is not missed."""
        return self._event

    async def wait(self) -> None:
        """Return at the next notification."""
        await self._event.wait()


@dataclass(frozen=True, slots=True)
class Backlog:
    """What the sealer timer needs to know, read from the store."""

    events: int              # committed events not yet sealed
    oldest_ts_ms: int | None  # when the oldest of them was committed
    max_events: int
    max_age_s: float


def read_backlog(store, settings: Settings) -> Backlog:
    with store.read() as tx:
        head = read_head(tx)
        last = tx.last_seq()
        waiting = last - head.last_event
        oldest = tx.event(head.last_event + 1) if waiting > 0 else None
        max_events, max_age = limits(tx, settings)
    ts = oldest.get("ts_ms") if oldest else None
    return Backlog(waiting, ts if isinstance(ts, int) else None, max_events, max_age)


def _wall_ms() -> int:
    return int(time.time() * 1000)


async def run_sealer(submit, read_backlog: Callable[[], Backlog], wait_commit, *, metrics=None,
                     now_ms: Callable[[], int] = _wall_ms, prune_interval_s: float = 60.0,
                     pressure: Callable[[], bool] | None = None,
                     task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Submit `seal` when batch_max_events are waiting or the oldest has waited batch_max_age_s.

    Also submits `prune` every `prune_interval_s`, forced past the retention while `pressure()`
    (the disk is nearly full; acknowledged batches only, as always). `read_backlog()` reads the
    store; `wait_commit()` returns after the next durable commit, which is when the backlog can grow.
    """
    task_status.started()
    next_prune = trio.current_time()
    while True:
        if trio.current_time() >= next_prune:
            force = bool(pressure and pressure())
            answer = await submit(Request("prune", {"force": force}, source="sealer"))
            if not answer.ok:
                log.warning("pruning refused: %s", answer.body.get("msg"))
            next_prune = trio.current_time() + prune_interval_s
        backlog = read_backlog()
        full = backlog.events >= backlog.max_events
        wait_s = None
        if backlog.events and not full:
            age_s = max(0.0, (now_ms() - (backlog.oldest_ts_ms or now_ms())) / 1000)
            wait_s = backlog.max_age_s - age_s
        if full or (wait_s is not None and wait_s <= 0):
            answer = await submit(Request("seal", {"flush": not full}, source="sealer"))
            if not answer.ok:
                # Only a full disk or shutdown refuses a seal; try again after the next commit or a while.
                log.warning("sealing refused: %s", answer.body.get("msg"))
                with trio.move_on_after(1.0):
                    await wait_commit()
            elif metrics is not None:
                metrics.sealed(answer.body.get("sealed", 0))
            continue
        until = next_prune - trio.current_time()
        if wait_s is not None:
            until = min(until, wait_s)
        with trio.move_on_after(max(0.0, until)):
            await wait_commit()


async def run_master_activation(submit, read_next_due: Callable[[], int | None], signal: SealSignal, *,
                                now_ms: Callable[[], int] = _wall_ms,
                                task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Submit `master_activate` when a document sent ahead of its `effective_ms` becomes due.

    `read_next_due()` reads the store for the earliest waiting `effective_ms`; `signal` wakes this
    task when a new document is stored, since it may be due sooner than the one it sleeps for.
    """
    task_status.started()
    while True:
        waiter = signal.waiter()
        due = read_next_due()
        if due is not None and due <= now_ms():
            answer = await submit(Request("master_activate", {}, source="erp", channel="erp"))
            if not answer.ok:
                log.warning("activating master data refused: %s", answer.body.get("msg"))
                await trio.sleep(1.0)
            continue
        with trio.move_on_after(math.inf if due is None else (due - now_ms()) / 1000):
            await waiter.wait()
