"""While the writer's thread applies a group, the event loop holds off: py-lmdb lets go of the
interpreter lock around every get and put, and an event loop running Python beside the writer took
the lock at each of them. It serves devices again once the group is applied, while the commit writes
and syncs, and at the latest after `HOLD_OFF_S`."""
from __future__ import annotations

import threading

import trio
from prometheus_client import CollectorRegistry

from core_ext import Request
from gateway import _core_loop

# How long a handler looks for the event loop running beside it (where it must not see it).
LOOK_S = 0.2
# How long the group's state looks for it after the commit (where it must: it stops looking then).
AFTER_COMMIT_LOOK_S = 10.0


class _AfterCommit:
    """A writer's state (the `Tx.state` protocol) whose `forget`, called once the group's LMDB
    commit is done, looks for the event loop running."""

    ticked: threading.Event
    seen: list

    @classmethod
    def load(cls, tx):
        return cls()

    def mark(self) -> int:
        return 0

    def rollback(self, mark: int) -> None:
        pass

    def forget(self) -> None:
        self.ticked.clear()
        self.seen.append(self.ticked.wait(AFTER_COMMIT_LOOK_S))


async def _probe_while_the_event_loop_ticks(make_core, store, look_s: float, *,
                                            after_commit: bool = False) -> tuple[bool, float]:
    """Whether a handler that waits up to `look_s` for a busy event-loop task saw it run (or, with
    `after_commit`, whether the group's state saw it once the commit was done), and how many
    hold-offs ended before their group was applied."""
    ticked = threading.Event()
    seen = []
    _AfterCommit.ticked, _AfterCommit.seen = ticked, seen

    def probe(tx, request, ctx):
        if after_commit:
            tx.state(_AfterCommit)
            return {}
        ticked.clear()
        seen.append(ticked.wait(look_s))
        return {}

    registry = CollectorRegistry()
    core = await make_core(store, extra_handlers={"probe": probe}, registry=registry)

    async def ticker():
        while True:
            ticked.set()
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        assert (await core.submit(Request("probe", {"id": "p1"}, "lane1", "ecr"))).ok
        nursery.cancel_scope.cancel()
    return seen == [True], registry.get_sample_value("gateway_core_hold_offs_ended_total")


async def test_the_event_loop_does_not_run_while_a_group_is_applied(make_core, seeded_store, monkeypatch):
    monkeypatch.setattr(_core_loop, "HOLD_OFF_S", 30.0)
    assert await _probe_while_the_event_loop_ticks(make_core, seeded_store, LOOK_S) == (False, 0)


async def test_a_group_longer_than_the_hold_off_lets_the_event_loop_go_on(make_core, seeded_store, monkeypatch):
    monkeypatch.setattr(_core_loop, "HOLD_OFF_S", 0.01)
    assert await _probe_while_the_event_loop_ticks(make_core, seeded_store, 30.0) == (True, 1)


async def test_the_event_loop_runs_again_once_the_group_is_committing(make_core, seeded_store, monkeypatch):
    monkeypatch.setattr(_core_loop, "HOLD_OFF_S", 30.0)
    try:
        assert await _probe_while_the_event_loop_ticks(make_core, seeded_store, 0.0, after_commit=True) == (True, 0)
    finally:
        seeded_store.states.pop(_AfterCommit, None)


def test_a_commit_says_it_is_flushed_before_lmdb_commits(seeded_store):
    seen = []

    def flushed():
        with seeded_store.read() as reader:
            seen.append(reader.get("meta", "probe"))

    tx = seeded_store.begin(write=True)
    tx.put("meta", "probe", 1)
    tx.commit(flushed)
    with seeded_store.read() as reader:
        seen.append(reader.get("meta", "probe"))
    assert seen == [None, 1]


class _AnsweredAfterTheNextIsQueued(_AfterCommit):
    """The same kind of state, whose `forget` (after the group's LMDB commit, before the group is
    answered) waits until the next request is queued."""

    queued: threading.Event

    def forget(self) -> None:
        self.queued.wait(AFTER_COMMIT_LOOK_S)


async def test_a_groups_callers_hear_their_answers_before_the_next_group_holds_the_event_loop_off(
        make_core, seeded_store, monkeypatch):
    # The second request is queued while the first one's group commits, so the writer takes it up as
    # soon as the first is answered; its handler looks for the first caller running again.
    monkeypatch.setattr(_core_loop, "HOLD_OFF_S", 30.0)
    token = trio.lowlevel.current_trio_token()
    first_applied = trio.Event()
    queued, answered, seen = threading.Event(), threading.Event(), []
    _AnsweredAfterTheNextIsQueued.queued = queued

    def first(tx, request, ctx):
        tx.state(_AnsweredAfterTheNextIsQueued)
        token.run_sync_soon(first_applied.set)  # runs once the event loop is let go, during the commit
        return {}

    def second(tx, request, ctx):
        seen.append(answered.wait(AFTER_COMMIT_LOOK_S))
        return {}

    core = await make_core(seeded_store, extra_handlers={"first": first, "second": second})

    async def first_caller():
        assert (await core.submit(Request("first", {"id": "f1"}, "lane1", "ecr"))).ok
        answered.set()

    async def second_caller():
        await first_applied.wait()
        queued.set()  # and queued in this same step, before the first group can be answered
        assert (await core.submit(Request("second", {"id": "s1"}, "lane2", "ecr"))).ok

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(first_caller)
            nursery.start_soon(second_caller)
    finally:
        seeded_store.states.pop(_AnsweredAfterTheNextIsQueued, None)
    assert seen == [True]
