"""The single writer under failure: a group that fails outside any handler, and a loop cancelled
with requests still queued. Every caller gets an answer that matches what was committed."""
from __future__ import annotations

import trio
import trio.testing

from core_ext import Request

from .test_core_loop import sale


async def test_a_failure_outside_the_handlers_rolls_the_group_back_and_the_loop_goes_on(make_core, seeded_store):
    calls = []

    def flaky_disk_check():
        calls.append(1)
        if len(calls) == 1:
            raise OSError("statvfs failed")
        return False

    core = await make_core(seeded_store, disk_pressure=flaky_disk_check)
    with seeded_store.read() as tx:
        last = tx.last_seq()
    answers = {}

    async def send(i):
        answers[i] = await core.submit(sale(i))

    # A ping first in the same group: it was answered inside the group before the failure.
    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            n.start_soon(core.request, "ping", {"id": "p"})
            n.start_soon(send, 1)
    assert answers[1].body["err"] == "UNAVAILABLE", answers[1].body
    with seeded_store.read() as tx:
        assert tx.last_seq() == last and tx.get("ids", "lane1:s1") is None
    # The loop survived: the same request now goes through, once.
    with trio.fail_after(5):
        again = await core.submit(sale(1))
    assert again.ok and not again.replayed


async def test_cancelling_the_loop_answers_every_queued_request_and_commits_only_the_acknowledged(
        seeded_store, nursery):
    import threading

    from gateway._app_core import build_core
    from ._data import STORE

    entered, release = threading.Event(), threading.Event()

    def slow_disk_check():
        # Holds the first group inside its write transaction while more requests queue.
        entered.set()
        release.wait(10)
        return False

    loop = build_core(seeded_store, STORE, disk_pressure=slow_disk_check)
    scope = trio.CancelScope()

    async def run_loop(task_status=trio.TASK_STATUS_IGNORED):
        with scope:
            await loop.run(task_status=task_status)

    await nursery.start(run_loop)
    answers = {}

    async def send(i):
        answers[i] = await loop.submit(sale(i))

    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            n.start_soon(send, 0)
            await trio.to_thread.run_sync(entered.wait)
            for i in range(1, 40):
                n.start_soon(send, i)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            release.set()
    assert len(answers) == 40
    assert answers[0].ok  # its group had begun: it finishes and is committed
    assert all(answers[i].body["err"] == "UNAVAILABLE" for i in range(1, 40)), answers
    with seeded_store.read() as tx:
        committed = {i for i in range(40) if tx.get("ids", f"lane1:s{i}") is not None}
    assert committed == {0}
    assert (await loop.submit(sale(99))).body["err"] == "UNAVAILABLE"
