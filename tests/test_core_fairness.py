"""The writer is fair: one request per source in turn, and a group stops at its time budget."""
from __future__ import annotations

import math

import trio
import trio.testing
from prometheus_client import CollectorRegistry

from core_ext import Request
from gateway._fair_queue import FairQueue
from upstream._sources import SEALER


def test_sources_take_turns_and_keep_their_own_order():
    q = FairQueue()
    for i in range(4):
        q.put("csv", f"csv{i}")
    q.put("lane1", "lane0")
    q.put("lane2", "other0")
    q.put("lane1", "lane1")
    assert q.take(5) == ["csv0", "lane0", "other0", "csv1", "lane1"]
    assert q.take(10) == ["csv2", "csv3"]
    assert len(q) == 0


def test_slots_put_back_go_first_in_their_order():
    q = FairQueue()
    for i in range(3):
        q.put("a", f"a{i}")
    q.put("b", "b0")
    taken = q.take(4)
    assert taken == ["a0", "b0", "a1", "a2"]
    q.put("c", "c0")
    q.put_back(taken[1:], lambda slot: slot[0])
    assert q.take(10) == ["b0", "a1", "c0", "a2"]


def test_housekeeping_waits_while_devices_requests_wait_then_goes_first():
    q = FairQueue(frozenset({"sealer"}), background_wait_s=0.05)
    q.put("sealer", "seal0", 10.0)
    q.put("lane1", "a0", 10.0)
    q.put("lane2", "b0", 10.0)
    assert q.take(10, 10.001) == ["a0", "b0"]  # the burst, the seal's earlier turn notwithstanding
    q.put("lane1", "a1", 10.02)
    q.put("sealer", "seal1", 10.02)
    assert q.take(10, 10.02) == ["a1"]
    q.put("lane1", "a2", 10.05)
    # Waited its longest: it goes, at the head of the turns it kept, with the devices' requests.
    assert q.take(10, 10.05) == ["seal0", "a2"]
    assert q.take(10, 10.05) == ["seal1"]  # nothing else waits: at once
    assert len(q) == 0


def test_housekeeping_does_not_wait_behind_a_files_slices_but_still_behind_a_till():
    q = FairQueue(frozenset({"sealer"}), background_wait_s=0.05)
    q.put("legacy", "slice0", 1.0, bulk=True)
    q.put("sealer", "seal0", 1.0)
    assert q.take(10, 1.0) == ["slice0", "seal0"]  # one group and one commit, not a group each
    q.put("legacy", "slice1", 1.0, bulk=True)
    q.put("sealer", "seal1", 1.0)
    q.put("lane1", "a0", 1.0)
    assert q.take(10, 1.0) == ["slice1", "a0"]  # a till's sale waits: the seal waits for it
    assert q.take(10, 1.0) == ["seal1"]


def test_housekeeping_whose_turn_comes_after_the_devices_still_waits_for_them():
    q = FairQueue(frozenset({"sealer"}), background_wait_s=0.05)
    q.put("lane1", "a0", 1.0)
    q.put("sealer", "seal0", 1.0)
    assert q.take(10, 1.0) == ["a0"]
    assert q.take(10, 1.0) == ["seal0"]


def test_housekeeping_put_back_goes_in_the_next_group_and_drain_takes_everything():
    q = FairQueue(frozenset({"sealer"}), background_wait_s=0.05)
    q.put("sealer", "seal0", 1.0)
    taken = q.take(10, 1.0)
    q.put("lane1", "a0", 1.0)
    q.put_back(taken, lambda slot: "sealer")  # the group was cut before it
    assert q.take(10, 1.0) == ["seal0", "a0"]
    q.put("sealer", "seal1", 2.0)
    q.put("lane1", "a1", 2.0)
    assert sorted(q.drain()) == ["a1", "seal1"]


def _receipt(i: int, source: str) -> Request:
    return Request("receipt", {"id": f"{source}-{i}", "sku": "SKU-4", "qty": 1}, source, "erp")


async def test_a_flooding_source_does_not_hold_another_behind_it(make_core, seeded_store):
    core = await make_core(seeded_store, group_budget_s=math.inf, max_group=8)
    answers = {}

    async def send(request):
        answers[request.body["id"]] = (await core.submit(request)).body["seq"]

    async with trio.open_nursery() as nursery:
        for i in range(300):
            nursery.start_soon(send, _receipt(i, "bulk"))
        await trio.testing.wait_all_tasks_blocked()
        # Queued behind some 290 requests of the bulk source: served in the next group all the same.
        nursery.start_soon(send, _receipt(0, "lane1"))
    before = sum(1 for k, seq in answers.items() if k.startswith("bulk") and seq < answers["lane1-0"])
    assert before <= 2 * 8


async def test_a_group_stops_at_its_time_budget_and_the_rest_follow(make_core, seeded_store):
    registry = CollectorRegistry()
    # A budget of zero: every group serves its first request only.
    core = await make_core(seeded_store, registry=registry, group_budget_s=0.0)
    results = []

    async def send(i):
        results.append((await core.submit(_receipt(i, f"lane{i % 3}"))).ok)

    async with trio.open_nursery() as nursery:
        for i in range(12):
            nursery.start_soon(send, i)
    assert results == [True] * 12
    assert core.loop.commits == 12
    # Twelve requests waiting together, served one group each: every group but the last was cut.
    assert registry.get_sample_value("gateway_core_groups_cut_total") == 11
    assert registry.get_sample_value("gateway_core_queue_depth_requests") == 0


async def test_a_source_waits_behind_its_own_share_and_never_holds_the_others(seeded_store, nursery):
    import threading

    from gateway._app_core import build_core
    from ._data import STORE

    entered, release = threading.Event(), threading.Event()

    def slow_disk_check():
        # Holds the first group inside its write transaction while more requests come.
        entered.set()
        release.wait(10)
        return False

    loop = build_core(seeded_store, STORE, disk_pressure=slow_disk_check, per_source_limit=3, queue_limit=100)
    await nursery.start(loop.run)
    answers = []

    async def send(request):
        answers.append((await loop.submit(request)).ok)

    with trio.fail_after(20):
        async with trio.open_nursery() as n:
            for i in range(40):
                n.start_soon(send, _receipt(i, "bulk"))
            await trio.to_thread.run_sync(entered.wait)
            n.start_soon(send, _receipt(0, "lane1"))
            await trio.testing.wait_all_tasks_blocked()
            queued = loop._queue.take(1000)
            # The bulk source holds no more than its share (3, queued or in the group being written;
            # the other 37 wait at `submit`), and the lane got its place all the same.
            sources = [slot[0].source for slot in queued]
            assert sources.count("bulk") <= 3 and sources.count("lane1") == 1
            loop._queue.put_back(queued, lambda slot: slot[0].source)
            release.set()
    assert answers == [True] * 41


async def test_thousands_waiting_on_one_source_are_served_in_turn(make_core, seeded_store):
    core = await make_core(seeded_store)
    results = []

    async def send(i):
        results.append((await core.submit(_receipt(i, "bulk"))).ok)

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for i in range(3000):
                nursery.start_soon(send, i)
    assert results == [True] * 3000


async def test_a_seal_due_with_a_burst_of_sales_is_applied_after_the_burst_is_answered(make_core, seeded_store,
                                                                                       mock_clock):
    # trio's clock stands still (the mock's rate is 0): however slowly this machine runs the
    # tasks, the housekeeping has not waited its longest when the group is formed.
    core = await make_core(seeded_store, group_budget_s=math.inf)
    seqs, commits = {}, core.loop.commits

    async def send(request):
        seqs[request.body["id"]] = (await core.submit(request)).body["seq"]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send, _receipt(0, SEALER))  # first in line
        for lane in ("lane1", "lane2", "lane3"):
            nursery.start_soon(send, _receipt(0, lane))
    assert seqs[f"{SEALER}-0"] > max(seqs[f"lane{i}-0"] for i in (1, 2, 3))
    assert core.loop.commits == commits + 2  # the burst's group, then the housekeeping's
