"""The single writer: every request that changes the store passes through here.

Requests from every source wait in one channel. The loop takes all that are waiting (group commit),
runs each handler in its own nested transaction inside one write transaction, commits once (durable:
the environment syncs on commit), and only then answers each request. Under low load a group is one
request and the latency is one commit; under high load many requests share one fsync.

The whole group runs in a worker thread: a write transaction must begin and commit on one thread,
and while the disk syncs the event loop keeps reading devices, so the next group gathers meanwhile.
While the group is applied the event loop holds off (`_run_group`).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import lmdb
import trio

from core_ext import Request, Response, Refused, Store, errors
from core_ext._handlers import ECR_KINDS
from core_ext._ids import body_hash, first_answer, id_record
from core_ext._records import answer_ok, answer_refused, refusal_logged
from core_ext._request_checks import request_refusal

from upstream import HOUSEKEEPING_SOURCES

from ._day_timer import TIMER_SOURCE
from ._fair_queue import FairQueue

log = logging.getLogger("gateway.core")

# Kinds that take in new business; refused with UNAVAILABLE while the disk is nearly full, so
# that nothing already accepted (unacknowledged batches above all) is ever dropped to make room.
GUARDED_KINDS = frozenset({"sale", "return", "scan", "receipt", "csv_slice", "movements", "master", "count_close"})
# Scheduler turns the writer gives, when a request wakes it from idle, to the tasks reading the
# requests that came with it: a frame takes one turn from its bytes read to the queue (the reader,
# then the responder), and tasks woken together run in no set order within a turn.
GATHER_TURNS = 3
# Scheduler turns given, before a group taken straight after the last one, to the callers that one
# woke: two, as trio runs tasks woken together in either order, so a caller woken with the writer
# may run after it in the first turn.
ANSWER_TURNS = 2
# Longest the event loop holds off while the writer's thread applies a group (see `_run_group`):
# past the group budget, so it ends only the wait on a group whose one request outlasts the budget
# (a huge quote, the pure flavour's master data) or on a writer held up (another process holding the
# store's write lock); the loop then serves devices beside it, as every group had before.
HOLD_OFF_S = 0.05
# Requests checked at a time (`CoreLoop._check`: shape, id, body digest) before they are applied:
# one pass of the same code over several requests keeps it in the processor's caches, where a
# sale's check and hash between two handlers cost several times as much (`docs/performance.md`); a
# few at a time, so a group cut short by its budget has checked little that it does not apply.
CHECK_AHEAD = 32
# The gateway's own housekeeping (sealing and pruning, the day's close and the alerts' refresh, the
# upstream links' acknowledgements, the documents the NATS link takes in): no till waits on it, so its requests go after the devices'
# (`FairQueue`), waiting at most BACKGROUND_WAIT_S (five group budgets) while devices keep sending.
BACKGROUND_SOURCES = HOUSEKEEPING_SOURCES | {TIMER_SOURCE}
BACKGROUND_WAIT_S = 0.05
# Channels whose requests no till waits on: a legacy POS file's slices. Housekeeping does not wait
# behind them (`FairQueue`): a seal due while a file is applied joins a slice's group.
BULK_CHANNELS = frozenset({"csv"})


@dataclass(frozen=True, slots=True)
class Handler:
    fn: Callable
    # Remember the request id after a commit; a repeat gets the first response again.
    idempotent: bool = False
    # The request must carry an ECR/1 id (a string of 1 to 64 characters), remembered or not.
    requires_id: bool = False
    # The handler refuses only before it writes: it runs in the group's own transaction, with no
    # nested one to begin and commit (`Tx.child(shared=True)`); failing after a write (which its
    # transaction's abort refuses) rolls the group back whole.
    decides_first: bool = False


@dataclass(slots=True)
class Context:
    """What a handler may know beyond its transaction and request."""

    now_ms: int
    settings: object
    _after_commit: list = field(default_factory=list)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` on the event loop once this group is durable."""
        self._after_commit.append(callback)


class _Room:
    """Places in the writer's queue: at most `limit` in all and `per_source` for one source, each
    held from `submit` until the request is answered. Trio's semaphores hand them out first come
    first served and wake one waiter per place freed, so a source flooding the gateway waits behind
    its own share, and thousands of waiters cost nothing while they wait."""

    def __init__(self, limit: int, per_source: int):
        self._all = trio.Semaphore(limit)
        self._per_source = per_source
        self._sources: dict[str, trio.Semaphore] = {}

    async def take(self, source: str) -> None:
        mine = self._sources.get(source)
        if mine is None:
            mine = self._sources[source] = trio.Semaphore(self._per_source)
        # A place free (nearly always) is taken without giving turns away, so a request reaches the
        # queue in the step that submits it; a semaphore with a place free has no waiters to pass.
        await trio.lowlevel.checkpoint_if_cancelled()
        await _acquire(mine)  # a source's own share first: its flood never holds places of the others
        try:
            await _acquire(self._all)
        except BaseException:
            mine.release()
            raise

    def give_back(self, source: str) -> None:
        self._all.release()
        self._sources[source].release()

    def close(self) -> None:
        """Let every waiter through (the loop has stopped: each is refused at once)."""
        waiting = sum(s.statistics().tasks_waiting for s in (self._all, *self._sources.values()))
        for semaphore in (self._all, *self._sources.values()):
            for _ in range(waiting):
                semaphore.release()


async def _acquire(semaphore: trio.Semaphore) -> None:
    """A place of `semaphore`: at once if one is free, else in its first-come first-served line."""
    try:
        semaphore.acquire_nowait()
    except trio.WouldBlock:
        await semaphore.acquire()


def _wake(slot: list) -> None:
    """Wake the caller waiting on `slot`, if it still waits (`CoreLoop.submit`)."""
    task, slot[2] = slot[2], None
    if task is not None:
        trio.lowlevel.reschedule(task)


def _source_of(slot) -> str:
    return slot[0].source


def refusal(request: Request, code: str, message: str, details=None) -> dict:
    return answer_refused(request.body.get("id") if isinstance(request.body, dict) else None, code, message, details)


def _repeated(tx, request: Request, key: str, first: dict, digest: bytes) -> Response:
    """The answer to a request whose id was committed before: the first answer again, or a conflict
    when the body differs."""
    if first["h"] != digest:
        return Response(refusal(request, errors.DUPLICATE_ID_CONFLICT,
                                f"id {request.body.get('id')!r} was already committed with a different body"))
    answer = first_answer(tx, key, request.body.get("id"), first)
    return Response(answer, replayed=answer.get("ok", False))


def _record_refusal(tx, request: Request, ctx: Context, key: str | None, exc: Refused) -> None:
    """A refusal worth keeping (a recalled lot offered, say) goes into the log, outside the request's
    rolled-back transaction."""
    tx.append_event(refusal_logged(exc.record, request_id=key or f"{request.source}:{request.body.get('id')}",
                                   source=request.source, code=exc.code, message=exc.message,
                                   seq=tx.last_seq() + 1, now_ms=ctx.now_ms))


def _with_requests_applied(applied: Callable[[], None] | None, served: list) -> Callable[[], None] | None:
    """`applied`, and then the `applied` of each served request that has one (`Request.applied`)."""
    hooks = [slot[0].applied for slot in served if slot[0].applied is not None]
    if not hooks:
        return applied

    def all_applied() -> None:
        if applied is not None:
            applied()
        for hook in hooks:
            try:
                hook()
            except Exception:
                log.exception("a request's applied hook failed")
    return all_applied


class CoreLoop:
    """The single writer. Requests wait by source and are taken one per source in turn; a group
    stops taking more once its handlers have used `group_budget_s`, so no source holds the writer
    for long and every device's next request waits at most about one group."""

    def __init__(self, store: Store, handlers: dict, *, settings=None, clock: Callable[[], float] = time.time,
                 max_group: int = 512, queue_limit: int = 10_000, per_source_limit: int = 256,
                 group_budget_s: float = 0.010, metrics=None, disk_pressure: Callable[[], bool] | None = None,
                 before_group: Callable | None = None):
        self.store = store
        self.handlers = {k: (h if isinstance(h, Handler) else Handler(h)) for k, h in handlers.items()}
        self.settings = settings
        self.clock = clock
        self.max_group = max_group
        self.metrics = metrics
        self.disk_pressure = disk_pressure or store.nearly_full
        self.group_budget_s = group_budget_s
        # `before_group(tx, ctx)` runs first in every group's transaction (the business day's turn,
        # so that each document falls into the day of its ledger time).
        self.before_group = before_group
        # Bounded: when the disk cannot keep up, devices wait at `submit` instead of memory growing;
        # a source that fills its own share waits without holding up the others.
        self._queue = FairQueue(BACKGROUND_SOURCES, BACKGROUND_WAIT_S)
        self._room = _Room(queue_limit, per_source_limit)
        self._work = trio.Event()    # set when a slot is queued
        self._commit_event = trio.Event()
        self.running = False
        self.commits = 0

    async def submit(self, request: Request) -> Response:
        """Hand `request` to the writer; returns once its effects (if any) are durable."""
        if not self.running:
            return Response(refusal(request, errors.UNAVAILABLE, "the gateway is not accepting requests now"))
        await self._room.take(request.source)
        if not self.running:
            return Response(refusal(request, errors.UNAVAILABLE, "the gateway is not accepting requests now"))
        # The slot's third place holds the caller's task until it is answered (`_wake`): the caller
        # parks in the step that queues it and is rescheduled straight, with no `trio.Event` made
        # per request (about a microsecond of the event loop's time a request).
        slot = [request, None, trio.lowlevel.current_task()]
        self._queue.put(request.source, slot, trio.current_time(), bulk=request.channel in BULK_CHANNELS)
        if self.metrics:
            self.metrics.queue_depth.inc()
        self._work.set()

        def gone(_) -> trio.lowlevel.Abort:
            slot[2] = None  # cancelled while waiting: the request is still applied, its answer dropped
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(gone)
        return slot[1]

    async def _next_group(self) -> tuple[list, bool]:
        """The next group, and whether it was already waiting when the last one was answered (its
        callers have had no turn yet)."""
        await trio.lowlevel.checkpoint_if_cancelled()  # a cancelled loop starts no new group
        if len(self._queue):
            return self._queue.take(self.max_group, trio.current_time()), True
        while not len(self._queue):
            self._work = trio.Event()
            await self._work.wait()
        await self._gather()
        return self._queue.take(self.max_group, trio.current_time()), False

    async def _gather(self) -> None:
        """Woken from idle by a request: give the tasks reading the requests that came with it a
        few scheduler turns (each turn also takes in whatever I/O has arrived) before the group is
        formed, so terminals that sent on the same tick share its commit rather than all but the
        first waiting for a second one. A request alone pays those turns, never a timer."""
        for _ in range(GATHER_TURNS):
            await trio.lowlevel.checkpoint()

    async def _answer_turns(self) -> None:
        """Before a group taken straight after the last one: scheduler turns for the callers that
        group woke, so they write their answers before this one holds the event loop off while it
        is applied. The group is formed first, so nothing submitted meanwhile joins it."""
        for _ in range(ANSWER_TURNS):
            await trio.lowlevel.checkpoint()

    async def wait_commit(self) -> None:
        """Return after the next durable commit."""
        await self._commit_event.wait()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self.running = True
        task_status.started()
        pending = []
        try:
            while True:
                pending, straight_on = await self._next_group()
                # Shielded: once a group has started, its answers must match what was committed.
                with trio.CancelScope(shield=True):
                    if straight_on:
                        await self._answer_turns()
                    started = time.perf_counter()
                    callbacks, served = await self._run_group(pending)
                    self._answer_group(pending, served, started)
                    pending = []
                    self._after_commit(callbacks)
        finally:
            self.running = False
            self._refuse_unserved(pending)

    async def _run_group(self, pending: list) -> tuple[list, int]:
        """Apply `pending` on the writer's thread; returns `_apply_group`'s result once committed.

        The event loop holds off (blocked without the interpreter lock) until the group is applied,
        and serves devices again while its commit writes and syncs. py-lmdb lets go of the lock
        around every get and put: with the event loop busy beside it, the writer waited for the
        lock at each of its dozen LMDB calls a sale (about 0.15 ms each, against under 1 µs
        alone), where holding off costs the devices at most the group's budget."""
        applied = threading.Event()
        finished = trio.Event()
        token = trio.lowlevel.current_trio_token()
        outcomes = []

        def work():
            try:
                return self._apply_group(pending, applied.set)
            finally:
                applied.set()

        def deliver(outcome) -> None:
            outcomes.append(outcome)
            token.run_sync_soon(finished.set)

        trio.lowlevel.start_thread_soon(work, deliver, name="gateway writer")
        if not applied.wait(HOLD_OFF_S) and self.metrics:
            self.metrics.hold_offs_ended.inc()
        await finished.wait()
        return outcomes[0].unwrap()

    def _answer_group(self, pending: list, served: int, started: float) -> None:
        """Wake the callers of a group's served requests, committed (or rolled back whole and
        answered so); the rest, which the group had no time for, go back to the heads of their
        queues."""
        if served < len(pending):
            self._queue.put_back(pending[served:], _source_of)
            self._work.set()
            if self.metrics:
                self.metrics.groups_cut.inc()
            del pending[served:]
        if self.metrics:
            self.metrics.queue_depth.dec(len(pending))
        for slot in pending:
            self._room.give_back(slot[0].source)
        # The callers first, so nothing after this point can leave a committed request unanswered.
        for slot in pending:
            _wake(slot)
        if self.metrics:
            self.metrics.observe_group(len(pending), time.perf_counter() - started)

    def _after_commit(self, callbacks: list) -> None:
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("after-commit callback failed")
        self.commits += 1
        self._commit_event.set()
        self._commit_event = trio.Event()

    def _refuse_unserved(self, pending: list) -> None:
        """Whatever is still queued was never applied: say so rather than leave callers hanging. A
        slot of an unfinished group may hold an answer from its rolled-back transaction: that answer
        was never committed, so it is replaced."""
        for slot in [*pending, *self._queue.drain()]:
            if slot[2] is not None:
                slot[1] = Response(refusal(slot[0], errors.UNAVAILABLE, "the gateway is shutting down"))
                _wake(slot)
        self._room.close()  # wake submitters waiting for room: they see the loop stopped

    # Runs in a worker thread: everything from begin to commit of one write transaction.
    def _apply_group(self, slots: list, applied: Callable[[], None] | None = None) -> tuple[list, int]:
        """Apply `slots` in order until the group's time budget is spent; returns the after-commit
        callbacks and how many slots were served (answered); the rest were not touched. `applied`,
        then each served request's own (`Request.applied`), is called once the group is applied,
        just before its commit writes and syncs."""
        ctx = Context(now_ms=int(self.clock() * 1000), settings=self.settings)
        try:
            tx = self.store.begin(write=True)
        except lmdb.Error as exc:
            for slot in slots:
                slot[1] = Response(refusal(slot[0], errors.UNAVAILABLE, f"the store cannot be written: {exc}"))
            return [], len(slots)
        try:
            if self.before_group is not None:
                self.before_group(tx, ctx)
            served = self._apply_slots(tx, slots, ctx)
            syncing = self._commit(tx, _with_requests_applied(applied, slots[:served]))
        except Exception as exc:
            # MapFullError and friends, or a failure outside any one handler (the disk check, the
            # metrics): the group is rolled back whole, so nothing is half-applied, and the loop
            # goes on serving the next group.
            tx.abort()
            # Objects built from what the group wrote (a rule set's engine) were never committed.
            self.store.cache.clear()
            if isinstance(exc, lmdb.Error):
                log.error("group of %d rolled back: %s", len(slots), exc)
            else:
                log.exception("group of %d rolled back", len(slots))
            for slot in slots:
                slot[1] = Response(refusal(slot[0], errors.UNAVAILABLE,
                                          "the store cannot take more now; nothing was applied, retry later"))
            return [], len(slots)
        except BaseException:
            tx.abort()
            self.store.cache.clear()
            raise
        if syncing is not None and self.metrics:
            self.metrics.sync_seconds.observe(time.perf_counter() - syncing)
        return ctx._after_commit, served

    def _apply_slots(self, tx, slots: list, ctx: Context) -> int:
        """Answer `slots` in order into the group's transaction `tx`, each checked a few ahead
        (`CHECK_AHEAD`), until the group's time budget is spent; returns how many were served."""
        deadline = time.perf_counter() + self.group_budget_s
        pressure = None
        checked: list = []
        for index, slot in enumerate(slots):
            if index and time.perf_counter() > deadline:
                return index
            if index == len(checked):
                checked += [self._check(ahead[0]) for ahead in slots[index:index + CHECK_AHEAD]]
            request = slot[0]
            if request.kind in GUARDED_KINDS:
                if pressure is None:
                    pressure = self.disk_pressure()
                if pressure:
                    slot[1] = Response(refusal(request, errors.UNAVAILABLE,
                                              "the disk is nearly full; nothing was applied, retry later"))
                    self._count(request, slot[1])
                    continue
            slot[1] = self._apply_one(tx, request, ctx, checked[index])
            self._count(request, slot[1])
        return len(slots)

    @staticmethod
    def _commit(tx, applied: Callable[[], None] | None) -> float | None:
        """Commit the group's transaction, calling `applied` just before LMDB writes and syncs it;
        returns when that began if the group wrote anything (a group that dirtied no page syncs
        nothing, and says nothing of the disk)."""
        began = None

        def flushed() -> None:
            nonlocal began
            began = time.perf_counter()
            if applied is not None:
                applied()

        tx.commit(flushed)
        return began if tx.wrote else None

    def _check(self, request: Request) -> Response | tuple:
        """What a request's body alone decides, outside any transaction: its refusal as a
        `Response`, or `(handler, key, digest)`: its handler, and for an idempotent one the key its
        id is remembered under and its body's digest."""
        handler = self.handlers.get(request.kind)
        body = request.body
        if handler is None or not isinstance(body, dict):
            return Response(refusal(request, errors.BAD_REQUEST, f"unknown request type {request.kind!r}"))
        if request.kind in ECR_KINDS and (refused := request_refusal(request.kind, body)) is not None:
            return Response(refused)  # the same limits for every way in (ecr-serial.md, Limits)
        rid = body.get("id")
        if (handler.idempotent or handler.requires_id) and (not isinstance(rid, str) or not 1 <= len(rid) <= 64):
            return Response(refusal(request, errors.BAD_REQUEST, "id must be a string of 1 to 64 characters"))
        key = digest = None
        if handler.idempotent:
            key = f"{request.source}:{rid}"
            try:
                digest = body_hash(body)
            except Refused as exc:
                return Response(refusal(request, exc.code, exc.message))
        return handler, key, digest

    def _apply_one(self, tx, request: Request, ctx: Context, checked: Response | tuple) -> Response:
        """One request, `checked` first (`_check`): answered again if its id was committed before
        (in an earlier group or earlier in this one), else run; its effects stay only if it succeeds."""
        if type(checked) is Response:
            return checked
        handler, key, digest = checked
        if key is not None:
            first = tx.get("ids", key)
            if first is not None:
                return _repeated(tx, request, key, first, digest)
        return self._run_handler(tx, handler, request, ctx, key, digest)

    def _run_handler(self, tx, handler: Handler, request: Request, ctx: Context, key: str | None,
                     digest: bytes | None) -> Response:
        """Run the handler in a nested transaction (or, if it decides before it writes, the group's
        own: `Handler.decides_first`); with `key`, remember its answer under it."""
        child = tx.child(shared=handler.decides_first)
        callbacks_before = len(ctx._after_commit)
        try:
            answer = answer_ok(request.body.get("id"), handler.fn(child, request, ctx))
            if key is not None:
                child.put("ids", key, id_record(request.kind, digest, answer))
            child.commit()
            return Response(answer)
        except Refused as exc:
            child.abort()
            del ctx._after_commit[callbacks_before:]
            if exc.record is not None:
                _record_refusal(tx, request, ctx, key, exc)
            return Response(refusal(request, exc.code, exc.message, exc.details))
        except lmdb.BadValsizeError as exc:
            # A key or value this request brought is beyond what LMDB stores: its fault alone.
            child.abort()
            del ctx._after_commit[callbacks_before:]
            return Response(refusal(request, errors.BAD_REQUEST, f"a field is too long to be stored ({exc})"))
        except lmdb.Error:
            if not child.shared:  # a shared one holds nothing of its own: the group's rollback undoes it
                child.abort()
            raise  # the store's trouble, not this request's: the whole group rolls back
        except Exception as exc:
            child.abort()
            del ctx._after_commit[callbacks_before:]
            log.exception("handler %r failed on %r", request.kind, request.body.get("id"))
            return Response(refusal(request, errors.UNAVAILABLE, f"internal error ({type(exc).__name__}); nothing was applied"))

    def _count(self, request: Request, response: Response) -> None:
        if self.metrics:
            self.metrics.count(request, response)
