"""Sealing committed ledger events into signed, chained batches.

`seal_pending` runs inside the single writer (the `seal` handler), so a batch and the chain head that
names it are committed in the same LMDB transaction as nothing else: after a crash either both are
there or neither is, and the next seal continues the chain from what is on disk.

`run_sealer` is the timer: it decides when a seal is due and submits the request; it never writes.
"""
from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import trio

import msgpack

from core_ext import Request, StoreError, docbytes, ledger, lot_key, u64

from ._envelope import ZERO_DIGEST, encode_envelope, seal_packed
from ._sources import SEALER

log = logging.getLogger("gateway.upstream")

# Meta keys of the upstream's state (the "meta" table).
HEAD = "upstream.head"                    # {"seq", "digest", "last_event", "created_ms"} of the last batch
ACKED = "upstream.acked"                  # highest seq the ERP acknowledged
FIRST_AVAILABLE = "upstream.first_available"  # lowest batch seq still stored (pruning moves it)
STREAM_TRUSTED = "upstream.nats.trusted"  # with [nats] trust_stream: the stream holds batches through this seq

# Event keys that only the gateway itself needs: the envelope names the store already.
INTERNAL_KEYS = docbytes.INTERNAL_KEYS

# A batch body is put together from packed pieces: MessagePack's own array header joins them.
_array_header = msgpack.Packer(use_bin_type=True).pack_array_header


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
    # With client certificates: the subject CN the ERP's must carry ("" : any the CA signed).
    tls_client_name: str = ""
    # A document or movement list larger than this is refused with 413 before it is read whole.
    max_body_bytes: int = 32 << 20
    # One seal request seals at most this many events (about 2.5 µs each: some 10 ms of the writer's
    # time), so a big backlog never stalls sales for long; it is sealed over many requests.
    seal_max_events: int = 4000
    # One seal request reads at most this many events it has not read before (their stock moves,
    # about 1.5 µs each): after a restart over a big backlog, the first requests only read.
    scan_max_events: int = 6000
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


# The upstream document of a stored event, and the cutting of it from the stored bytes, are
# core_ext's (`docbytes`: compiled, with its pure-Python twin as the reference).
to_doc = docbytes.to_doc
DocPacker = docbytes.DocPacker
# (sku, lot) -> int as a dict holds them; compiled, a table in C (the sums' work is a third of sealing).
StockSums = docbytes.StockSums


# ---------------------------------------------------------------------------------------------
# The balances as of the sealed head, remembered between seals
#
# A batch's `on_hand_after` is the balance as of its last event: the balances as of the head plus
# the moves of the batches sealed since, in order. Kept from one seal to the next, each event is
# read once, when it is sealed. Kept in memory only, for the head whose digest it names: after a
# restart (or a seal rolled back) it is made again, from nothing when nothing is sealed yet (the
# ledger is its events replayed from an empty store), else from the current balances less the
# moves of the events after the head (read over a few seal requests when they are many).

@dataclass(slots=True)
class _AtHead:
    head_digest: bytes | None
    balances: StockSums   # (sku, lot) -> on hand as of the head's last event; absent: 0


@dataclass(slots=True)
class _Tail:
    """The net moves per (sku, lot) of the events after the head (whose digest is `head_digest`)
    through `through`, read so far to make `_AtHead`; `through_raw` is the stored bytes of event
    `through`, so events rolled back and written again are not trusted."""

    head_digest: bytes
    through: int
    through_raw: bytes | None
    deltas: StockSums


# Their keys in the store's in-memory cache (cleared when a group rolls back).
_AT_HEAD = "upstream.at_head"
_TAIL = "upstream.tail"


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


def _tail(tx, head: Head, last_seq: int, max_events: int) -> _Tail | None:
    """The moves after the head through `last_seq`, reading at most `max_events` events not read
    before; None when more remain to read (the next seal request goes on from there)."""
    tail = tx.store.cache.get(_TAIL)
    if (tail is None or tail.head_digest != head.digest or tail.through > last_seq
            or (tail.through > head.last_event and tx.get_raw("events", u64(tail.through)) != tail.through_raw)):
        tail = _Tail(head.digest, head.last_event, None, StockSums())
        tx.store.cache[_TAIL] = tail
    upto = min(last_seq, tail.through + max_events)
    raws = _events_raw(tx, tail.through + 1, upto)
    docbytes.add_moves(raws, tail.deltas)
    if raws:
        tail.through, tail.through_raw = upto, raws[-1]
    return tail if tail.through == last_seq else None


def _at_head(tx, head: Head, last_seq: int, max_events: int) -> _AtHead | None:
    """The balances as of the head; None while the events after it are still being read."""
    state = tx.store.cache.get(_AT_HEAD)
    if state is not None and state.head_digest == head.digest:
        return state
    if head.last_event == 0:
        state = _AtHead(head.digest, StockSums())
    else:
        tail = _tail(tx, head, last_seq, max_events)
        if tail is None:
            return None
        qty, moved = _balance_reader(tx), tail.deltas
        keys = set(moved)
        keys.update(ledger.lot_keys(tx))
        state = _AtHead(head.digest, StockSums((key, qty(*key) - moved.get(key, 0)) for key in keys))
        tx.store.cache.pop(_TAIL, None)
    tx.store.cache[_AT_HEAD] = state
    return state


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


def _body(tx, first: int, last: int, balances: StockSums, alerts: bytes) -> tuple[bytes, int]:
    """(packed body, document count) of the events first..=last; `balances` (as of the event
    before `first`) takes their moves.

    Each event's document is cut from its stored bytes: the bytes are those of
    `packb({"docs": [...], "stock": [...], "alerts": [...]})`, without the events' dicts in memory."""
    net = StockSums()
    packed = docbytes.documents(_events_raw(tx, first, last), net)
    return (b"".join((b"\x83\xa4docs", _array_header(len(packed)), *packed, b"\xa5stock",
                      docbytes.stock_rows(net, balances), b"\xa6alerts", alerts)), len(packed))


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

    One call seals at most `settings.seal_max_events` events. When the balances as of the head are
    not in memory (after a restart over a sealed head), it first reads at most
    `settings.scan_max_events` events after the head that it has not read before (over a big
    backlog, the first calls only read, and seal nothing): each writer turn stays short."""
    head = read_head(tx)
    max_events, _max_age = limits(tx, settings)
    last_seq = tx.last_seq()
    ranges = plan_ranges(head, last_seq, max_events, flush=flush, cap_events=settings.seal_max_events)
    if not ranges:
        return []
    state = _at_head(tx, head, last_seq, settings.scan_max_events)
    if state is None:
        return []
    # Changed below as batches are sealed: untrusted until the new head is known.
    state.head_digest = None
    alerts = _packed_alerts(tx)
    sealed = []
    for first, last in ranges:
        body, count = _body(tx, first, last, state.balances, alerts)
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
    state.head_digest = head.digest
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


class BacklogReader:
    """`read_backlog` for a timer that asks after every commit: the time of the oldest event not
    sealed is read once per head, not decoded again on each call (events never change once
    committed, and only a seal moves the head)."""

    def __init__(self, store, settings: Settings):
        self.store = store
        self.settings = settings
        self._oldest: tuple[int, int | None] | None = None  # (seq, ts_ms) of the oldest unsealed event

    def __call__(self) -> Backlog:
        with self.store.read() as tx:
            head = read_head(tx)
            waiting = tx.last_seq() - head.last_event
            ts = self._oldest_ts(tx, head.last_event + 1) if waiting > 0 else None
            max_events, max_age = limits(tx, self.settings)
        return Backlog(waiting, ts, max_events, max_age)

    def _oldest_ts(self, tx, seq: int) -> int | None:
        if self._oldest is None or self._oldest[0] != seq:
            event = tx.event(seq)
            ts = event.get("ts_ms") if event else None
            self._oldest = (seq, ts if isinstance(ts, int) else None)
        return self._oldest[1]


def read_backlog(store, settings: Settings) -> Backlog:
    return BacklogReader(store, settings)()


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
        # Woken by a commit together with the tasks answering its requests: they go first.
        await trio.lowlevel.cancel_shielded_checkpoint()
        if trio.current_time() >= next_prune:
            force = bool(pressure and pressure())
            answer = await submit(Request("prune", {"force": force}, source=SEALER))
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
            answer = await submit(Request("seal", {"flush": not full}, source=SEALER))
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
