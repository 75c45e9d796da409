"""Requests that arrive together share one group, and so one durable commit; the writer waits for
them a few scheduler turns at most, never a timer."""
from __future__ import annotations

import trio
import trio.testing

from core_ext import Request
from gateway._core_loop import GATHER_TURNS


def _receipt(i: int, source: str) -> Request:
    return Request("receipt", {"id": f"{source}-{i}", "sku": "SKU-4", "qty": 1}, source, "erp")


async def _lanes(core, lags: list[int]) -> list[bool]:
    """One request per lane, lane i submitting `lags[i]` scheduler turns after the first."""
    results = []

    async def lane(i: int, lag: int):
        for _ in range(lag):
            await trio.lowlevel.checkpoint()
        results.append((await core.submit(_receipt(i, f"lane{i}"))).ok)

    async with trio.open_nursery() as nursery:
        for i, lag in enumerate(lags):
            nursery.start_soon(lane, i, lag)
    return results


async def test_requests_that_come_a_turn_or_two_apart_share_one_commit(make_core, seeded_store):
    core = await make_core(seeded_store)
    await trio.testing.wait_all_tasks_blocked()  # the writer idle
    before = core.loop.commits
    # Eight terminals on one tick: their frames are read over a few turns of the scheduler.
    assert await _lanes(core, [0, 1, 2, GATHER_TURNS, 0, 1, 2, GATHER_TURNS]) == [True] * 8
    assert core.loop.commits - before == 1


async def test_the_writer_does_not_wait_past_its_turns(make_core, seeded_store):
    core = await make_core(seeded_store)
    await trio.testing.wait_all_tasks_blocked()
    before = core.loop.commits
    # One request well behind the others is left for the next group, not waited for.
    assert await _lanes(core, [0, 0, GATHER_TURNS + 3]) == [True] * 3
    assert core.loop.commits - before == 2


async def test_a_lone_request_is_served_while_other_tasks_never_stop_running(make_core, seeded_store):
    core = await make_core(seeded_store)

    async def busy():
        while True:
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(busy)
        with trio.fail_after(10):
            assert (await core.submit(_receipt(0, "lane1"))).ok
        nursery.cancel_scope.cancel()


async def test_a_cancelled_submitter_queues_nothing(make_core, seeded_store):
    core = await make_core(seeded_store)
    await trio.testing.wait_all_tasks_blocked()
    before = core.loop.commits
    with trio.CancelScope() as scope:
        scope.cancel()
        await core.submit(_receipt(0, "lane1"))
    assert scope.cancelled_caught
    await trio.testing.wait_all_tasks_blocked()
    assert core.loop.commits == before and len(core.loop._queue) == 0


async def test_a_submitter_cancelled_while_it_waits_leaves_its_request_applied_and_others_answered(
        make_core, seeded_store):
    core = await make_core(seeded_store)
    await trio.testing.wait_all_tasks_blocked()
    answers = {}

    async def send(i: int):
        answers[i] = await core.submit(_receipt(i, f"lane{i}"))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, 1)
            nursery.start_soon(send, 2)
            with trio.CancelScope() as gone:
                waiting = trio.Event()

                async def cancelled_submitter():
                    waiting.set()
                    answers[0] = await core.submit(_receipt(0, "lane0"))

                async with trio.open_nursery() as inner:
                    inner.start_soon(cancelled_submitter)
                    await waiting.wait()
                    # One turn: it has queued its request and parked, and the writer, still giving
                    # the others its gather turns, has not answered it.
                    await trio.lowlevel.checkpoint()
                    gone.cancel()
    # It got no answer; the two others did, and its request was applied all the same.
    assert 0 not in answers and answers[1].ok and answers[2].ok
    with seeded_store.read() as tx:
        assert tx.get("ids", "lane0:lane0-0") is not None
    assert len(core.loop._queue) == 0
    # The loop goes on answering.
    with trio.fail_after(5):
        assert (await core.submit(_receipt(3, "lane3"))).ok
