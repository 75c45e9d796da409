"""The single writer: group commit, answers after the commit, and refusing rather than dropping."""
from __future__ import annotations

import threading
from dataclasses import replace

import trio
from prometheus_client import CollectorRegistry

from core_ext import Request, Store
from gateway._app_core import build_core

from ._data import STORE, seed


def sale(i, code="SKU-4", cents=350):
    return Request("sale", {"id": f"s{i}", "lines": [{"code": code, "qty": 1}],
                            "payments": [{"method": "cash", "cents": cents}]}, "lane1", "ecr")


async def test_low_load_one_request_per_commit_high_load_many(make_core, seeded_store):
    registry = CollectorRegistry()
    core = await make_core(seeded_store, registry=registry)
    for i in range(5):
        assert (await core.submit(sale(i))).ok
    assert core.loop.commits == 5
    async with trio.open_nursery() as n:
        for i in range(5, 205):
            n.start_soon(core.submit, sale(i))
    assert core.loop.commits < 5 + 200 / 4
    assert registry.get_sample_value("gateway_core_requests_total", {"kind": "sale", "outcome": "ok"}) == 205
    assert registry.get_sample_value("gateway_core_group_size_requests_count") == core.loop.commits


async def test_the_sync_of_a_group_that_wrote_is_timed_and_one_that_wrote_nothing_is_not(make_core, seeded_store):
    registry = CollectorRegistry()
    core = await make_core(seeded_store, registry=registry)
    for i in range(3):
        assert (await core.submit(sale(i))).ok
    assert (await core.request("ping", {"id": "p1"})).ok
    assert (await core.request("quote", {"id": "q", "lines": [{"code": "SKU-4", "qty": 1}]})).ok
    # Three groups synced pages; the ping's and the quote's dirtied none, so they say nothing of the disk.
    assert registry.get_sample_value("gateway_core_sync_seconds_count") == 3
    assert registry.get_sample_value("gateway_core_group_size_requests_count") == 5
    assert registry.get_sample_value("gateway_core_sync_seconds_sum") > 0


async def test_a_request_is_told_it_is_applied_as_its_group_begins_to_commit(make_core, seeded_store):
    """`Request.applied` runs on the writer's thread once the group holding the request is applied,
    whatever its answer, before the commit is durable (the loop counts it only after)."""
    core = await make_core(seeded_store)
    calls = []

    def told(name):
        return lambda: calls.append((name, threading.current_thread().name, core.loop.commits))

    before = core.loop.commits
    assert (await core.submit(replace(sale(1), applied=told("sold")))).ok
    refused = await core.submit(replace(sale(2, code="NOPE"), applied=told("refused")))
    assert refused.body["err"] == "UNKNOWN_ITEM"
    assert calls == [("sold", "gateway writer", before), ("refused", "gateway writer", before + 1)]
    assert core.loop.commits == before + 2


async def test_answer_comes_after_the_commit_is_visible_to_a_new_reader(core):
    res = await core.submit(sale(1))
    # A reader opened after the answer sees the effect: it was committed before we heard "ok".
    with core.store.read() as tx:
        assert tx.get("ids", "lane1:s1")["seq"] == res.body["seq"]


async def test_disk_pressure_refuses_new_sales_but_still_answers_queries(make_core, seeded_store):
    registry = CollectorRegistry()
    core = await make_core(seeded_store, disk_pressure=lambda: True, registry=registry)
    with seeded_store.read() as tx:
        last = tx.last_seq()
    res = await core.submit(sale(1))
    assert res.body["err"] == "UNAVAILABLE" and "disk" in res.body["msg"]
    quote = await core.request("quote", {"id": "q", "lines": [{"code": "SKU-4", "qty": 1}]})
    assert quote.ok
    with seeded_store.read() as tx:
        assert tx.last_seq() == last
    assert registry.get_sample_value("gateway_core_refusals_total", {"kind": "sale", "code": "UNAVAILABLE"}) == 1


async def test_a_full_map_rolls_the_group_back_and_says_unavailable(make_core, tmp_path):
    store = Store(str(tmp_path / "small"), map_size=1 << 20)
    seed(store)
    core = await make_core(store, disk_pressure=lambda: False)  # let the map itself overflow
    big = Request("receipt", {"id": "big", "sku": "SKU-3", "lot": "L2", "expiry": "2031-01-01", "qty": 5000,
                              "serials": [f"SERIAL-{i:06d}-" + "x" * 200 for i in range(5000)]}, "erp")
    with store.read() as tx:
        last = tx.last_seq()
    res = await core.submit(big)
    assert res.body["err"] == "UNAVAILABLE"
    with store.read() as tx:
        assert tx.last_seq() == last and tx.get("ids", "erp:big") is None
    assert (await core.submit(sale(1))).ok  # and the store still works for what fits
    store.close()


async def test_a_loop_not_running_refuses_at_once(seeded_store):
    core = build_core(seeded_store, STORE)
    res = await core.submit(sale(1))  # not running yet
    assert res.body["err"] == "UNAVAILABLE"


async def test_every_ecr_message_needs_an_id_even_when_not_remembered(core):
    for kind, body in (("quote", {"lines": [{"code": "SKU-4", "qty": 1}]}), ("ping", {"id": 7}),
                       ("member", {"id": "", "member": "M1"}), ("stock", {"id": "x" * 65, "code": "SKU-4"})):
        res = await core.request(kind, body)
        assert res.body["err"] == "BAD_REQUEST" and "id" in res.body["msg"], (kind, res.body)
    assert (await core.request("ping", {"id": "x" * 64})).ok


async def test_a_number_beyond_64_bits_is_a_bad_request_not_a_retry(core):
    res = await core.request("sale", {"id": "big", "lines": [{"code": "SKU-4", "qty": 1}],
                                      "payments": [{"method": "cash", "cents": 2**70}]})
    assert res.body["err"] == "BAD_REQUEST" and "64 bits" in res.body["msg"]
