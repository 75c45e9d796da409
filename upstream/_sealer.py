"""Sealing committed ledger events into signed, chained batches.

`seal_pending` runs inside the single writer (the `seal` handler), so a batch and the chain head that
names it are committed in the same LMDB transaction as nothing else: after a crash either both are
there or neither is, and the next seal continues the chain from what is on disk.

`run_sealer` is the timer: it decides when a seal is due and submits the request; it never writes.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import trio

from core_ext import Request, lot_key, u64

from ._envelope import ZERO_DIGEST, digest, encode_envelope, seal_envelope

log = logging.getLogger("gateway.upstream")

# Meta keys of the upstream's state (the "meta" table).
HEAD = "upstream.head"                    # {"seq", "digest", "last_event", "created_ms"} of the last batch
ACKED = "upstream.acked"                  # highest seq the ERP acknowledged
FIRST_AVAILABLE = "upstream.first_available"  # lowest batch seq still stored (pruning moves it)
STREAM_TRUSTED = "upstream.nats.trusted"  # with [nats] trust_stream: the stream holds batches through this seq

# Event keys that only the gateway itself needs: the envelope names the store already.
INTERNAL_KEYS = frozenset({"store"})


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
    # One seal request seals at most this many events, so a big backlog never stalls sales for long.
    seal_max_events: int = 20000
    # One prune request deletes at most this many batches, for the same reason.
    prune_max_batches: int = 5000
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
    from core_ext import master
    policy = master.policy(tx)
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


def _net_deltas(events) -> dict:
    """{(sku, lot): net delta} over `events`, in first-touched order."""
    net = {}
    for event in events:
        for sku, lot, delta, _expiry, _serials in event.get("moves") or ():
            net[(sku, lot)] = net.get((sku, lot), 0) + delta
    return net


def build_bodies(tx, ranges: list[tuple[int, int]]) -> list[dict]:
    """The bodies of consecutive event ranges [(first, last), ...], for one seal.

    `on_hand_after` is the balance as of each range's last event: the current balance minus every
    move after it. Walking the ranges from the last back, the later ranges' deltas are added up
    once, so a catch-up of many batches reads each event once.
    """
    events = [list(tx.events(first, last)) for first, last in ranges]
    nets = [_net_deltas(evs) for evs in events]
    after = _net_deltas(tx.events(ranges[-1][1] + 1))   # committed after the last range
    alerts = [alert for _key, alert in tx.items("alerts")]
    stocks = [None] * len(ranges)
    for i in range(len(ranges) - 1, -1, -1):
        rows = []
        for (sku, lot), delta in nets[i].items():
            row = tx.get("lots", lot_key(sku, lot))
            current = row["qty"] if row else 0
            rows.append([sku, lot, delta, current - after.get((sku, lot), 0)])
        stocks[i] = rows
        for key, delta in nets[i].items():
            after[key] = after.get(key, 0) + delta
    return [{"docs": [to_doc(e) for e in evs], "stock": stock, "alerts": alerts}
            for evs, stock in zip(events, stocks)]


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
    """Seal what is waiting into batches in `tx`; returns the heads of the new batches (maybe none)."""
    head = read_head(tx)
    max_events, _max_age = limits(tx, settings)
    ranges = plan_ranges(head, tx.last_seq(), max_events, flush=flush, cap_events=settings.seal_max_events)
    if not ranges:
        return []
    sealed = []
    for (first, last), body in zip(ranges, build_bodies(tx, ranges)):
        env = seal_envelope(store=store_id, seq=head.seq + 1, prev=head.digest, created_ms=now_ms,
                            first_event=first, last_event=last, body=body, private_key=private_key)
        head = Head(env["seq"], digest(env), last, now_ms)
        tx.put_raw("batches", u64(head.seq), encode_envelope(env))
        sealed.append(head)
    tx.set_meta(HEAD, {"seq": head.seq, "digest": head.digest, "last_event": head.last_event,
                       "created_ms": head.created_ms})
    if tx.meta(FIRST_AVAILABLE) is None:
        tx.set_meta(FIRST_AVAILABLE, 1)
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
