"""CLOSE/1 scenarios: the calendar (daylight saving included), the timer, days missed while stopped,
drawer counts over POS/1, early closes and reports over UP/1, the reference client's reconciliation,
metrics and `gateway report day`."""
from __future__ import annotations

import json
import sys
from functools import partial
from datetime import datetime, timezone

import pytest
import trio
from prometheus_client import CollectorRegistry

from core_ext import Request, Settings, Store, day_report
from core_ext._days import day_of, day_start_ms, next_day
from core_ext._store import _pack, u64
from gateway._app_core import build_core
from gateway._day_metrics import DayCollector
from gateway._day_timer import run_day_closer

from ._data import NOW, seed
from .test_pos_api import JSON_AUTH, TOKENS, post_json
from .test_erp_client import conn, gateway, key_files  # noqa: F401  (fixture)

BERLIN = Settings(store_id="S001", timezone="Europe/Berlin", day_starts_at="00:00")
HOUR_MS = 3_600_000


def utc_ms(*parts) -> int:
    return int(datetime(*parts, tzinfo=timezone.utc).timestamp() * 1000)


# --- the calendar ----------------------------------------------------------------------------

@pytest.mark.parametrize("day, hours", [("2026-03-29", 23), ("2026-10-25", 25), ("2026-06-01", 24)])
def test_business_days_in_berlin_are_23_25_or_24_hours_long(day, hours):
    start, end = day_start_ms(day, "Europe/Berlin", "00:00"), day_start_ms(next_day(day), "Europe/Berlin", "00:00")
    assert end - start == hours * HOUR_MS
    assert day_of(start, "Europe/Berlin", "00:00") == day and day_of(end - 1, "Europe/Berlin", "00:00") == day


def test_a_day_start_the_spring_gap_skips_falls_just_after_it_and_days_stay_contiguous():
    # 02:30 does not exist on 2026-03-29 in Berlin (02:00 CET -> 03:00 CEST): read with the CET offset.
    assert day_start_ms("2026-03-29", "Europe/Berlin", "02:30") == utc_ms(2026, 3, 29, 1, 30)
    assert day_of(utc_ms(2026, 3, 29, 1, 29), "Europe/Berlin", "02:30") == "2026-03-28"
    # A late start: before 04:30 local time the business day is still yesterday's.
    assert day_of(utc_ms(2026, 11, 23, 20, 0), "Asia/Shanghai", "04:30") == "2026-11-23"  # 04:00 local
    assert day_of(utc_ms(2026, 11, 23, 21, 0), "Asia/Shanghai", "04:30") == "2026-11-24"  # 05:00 local


# --- the timer and days missed ---------------------------------------------------------------

def day_report_of(store):
    with store.read() as tx:
        return day_report(tx)


async def _core(nursery, store, settings, clock):
    loop = build_core(store, settings, clock=clock)
    await nursery.start(loop.run)
    return loop


async def test_the_timer_closes_each_day_as_it_ends_across_both_daylight_saving_changes(tmp_path, autojump_clock):
    store = Store(str(tmp_path / "data"))
    seed(store, stock=False)  # no events yet: the first day is the one the clock is in
    base = utc_ms(2026, 3, 27, 12, 0) / 1000  # Friday noon in Berlin, before spring forward
    # The wall clock moves with trio's MockClock (read from the writer's thread too, so not through trio).
    clock = lambda: base + autojump_clock.current_time()  # noqa: E731
    try:
        async with trio.open_nursery() as nursery:
            loop = await _core(nursery, store, BERLIN, clock)
            sale = await loop.submit(Request("sale", {"id": "s1", "lines": [{"code": "SKU-4", "qty": 1}],
                                                      "payments": [{"method": "cash", "cents": 350}]}, source="lane1"))
            assert sale.ok
            # Started after the sale: no deadline is pending while the sale's group runs in its thread,
            # so the MockClock cannot jump past midnight under it.
            await nursery.start(partial(run_day_closer, loop.submit, clock, max_sleep_s=7 * 86400))
            while day_report_of(store)["day"] != "2026-03-30":  # waits on commits: the clock jumps to the timer's
                await loop.wait_commit()
            nursery.cancel_scope.cancel()
        with store.read() as tx:
            closes = {e["day"]: e for e in tx.events() if e["type"] == "day_close"}
    finally:
        store.close()
    assert list(closes) == ["2026-03-27", "2026-03-28", "2026-03-29"]
    lengths = [(c["closed_ms"] - c["opened_ms"]) // HOUR_MS for c in closes.values()]
    assert lengths[1:] == [24, 23]  # the first day opened at its start, midnight
    assert closes["2026-03-27"]["lanes"]["lane1"]["net_cents"] == 350
    assert closes["2026-03-28"]["lanes"] == {} and closes["2026-03-28"]["from_seq"] == closes["2026-03-27"]["to_seq"] + 1


async def test_days_missed_while_stopped_are_closed_once_each_in_order_before_the_next_sale(tmp_path, nursery):
    store = Store(str(tmp_path / "data"))
    seed(store)
    now = [NOW]
    sale = {"id": "s1", "lines": [{"code": "SKU-2", "qty": 1}], "payments": [{"method": "card", "cents": 4990}]}
    try:
        async with trio.open_nursery() as first:
            loop = await _core(first, store, Settings(store_id="S001", timezone="Asia/Shanghai"), lambda: now[0])
            assert (await loop.submit(Request("sale", sale, source="lane1"))).ok
            first.cancel_scope.cancel()
        now[0] += 3 * 86400  # stopped over three midnights
        async with trio.open_nursery() as second:
            loop = await _core(second, store, Settings(store_id="S001", timezone="Asia/Shanghai"), lambda: now[0])
            res = await loop.submit(Request("sale", {**sale, "id": "s2"}, source="lane1"))
            assert res.ok
            again = await loop.submit(Request("day_close", {}, source="timer"))
            assert again.body["closed"] == [] and again.body["open_day"] == "2026-11-27"
            second.cancel_scope.cancel()
        with store.read() as tx:
            closes = [e for e in tx.events() if e["type"] == "day_close"]
            assert [c["day"] for c in closes] == ["2026-11-24", "2026-11-25", "2026-11-26"]
            assert closes[0]["lanes"]["lane1"]["payments"]["card"]["taken"] == 4990
            assert res.body["seq"] > closes[-1]["to_seq"]  # the sale after the restart is the new day's
            report = day_report(tx)
            assert report["day"] == "2026-11-27" and report["open"] and report["totals"]["sales"] == 1
    finally:
        store.close()


# --- drawer counts, early close, reports, reconciliation -------------------------------------

async def test_drawer_counts_over_pos1_are_idempotent_and_answer_what_the_ledger_expects(upstream, nursery):
    from device_plugins.pos_api import Metrics, make_app
    from gateway._http import serve_asgi
    app = make_app(upstream.submit, TOKENS, Metrics(CollectorRegistry()))
    [url] = await nursery.start(serve_asgi, app, "127.0.0.1:0")
    status, sale = await post_json(url, "/pos/v1/sales", {"id": "S1", "lines": [{"code": "SKU-2", "qty": 2}],
                                                          "payments": [{"method": "cash", "cents": 6000},
                                                                       {"method": "card", "cents": 3980}]})
    assert status == 201, sale
    status, ret = await post_json(url, "/pos/v1/returns", {"id": "R1", "orig": "S1", "lines": [{"sku": "SKU-2", "qty": 1}]})
    assert status == 201 and ret["refunds"] == {"cash": 4990}, ret  # cash paid most
    count = {"id": "C1", "counted": {"cash": 1000, "card": 3980}}
    status, first = await post_json(url, "/pos/v1/drawer-counts", count)
    assert status == 201 and first["day"] == "2026-11-24" and first["expected"] == {"cash": 1010, "card": 3980}
    status, again = await post_json(url, "/pos/v1/drawer-counts", count)
    assert status == 200 and again == first
    status, conflict = await post_json(url, "/pos/v1/drawer-counts", {"id": "C1", "counted": {"cash": 1}})
    assert status == 409 and conflict["err"] == "DUPLICATE_ID_CONFLICT"
    status, bad = await post_json(url, "/pos/v1/drawer-counts", {"id": "C2", "counted": {"cash": -1}})
    assert status == 400 and "counted.cash" in bad["msg"]
    status, bad = await post_json(url, "/pos/v1/returns", {"id": "R2", "orig": "S1", "refund_method": "points",
                                                           "lines": [{"sku": "SKU-2", "qty": 1}]})
    assert status == 400 and "refund_method" in bad["msg"]
    with upstream.store.read() as tx:
        lane = day_report(tx)["lanes"]["lane1"]
    assert lane["payments"]["cash"] == {"taken": 6000, "refunded": 4990, "expected": 1010, "counted": 1000,
                                        "difference": -10}


async def test_the_erp_closes_early_reads_reports_and_its_client_catches_a_tampered_close(
        served, key_files, capsys):  # noqa: F811
    up = served.up
    await up.sale("s1")
    status, _h, body = await served.call("POST", "/upstream/v1/day-close", body={"day": "2026-11-24"})
    assert status == 200 and body["day"] == "2026-11-24"
    close_seq = body["seq"]
    status, _h, again = await served.call("POST", "/upstream/v1/day-close", body={"day": "2026-11-24"})
    assert status == 409 and again["error"] == "ALREADY_CLOSED"
    status, _h, later = await served.call("POST", "/upstream/v1/day-close", body={"day": "2026-11-26"})
    assert status == 400
    await up.sale("s2")  # after an early close: the next day's
    status, _h, closed = await served.call("GET", "/upstream/v1/day/2026-11-24")
    assert status == 200 and not closed["open"] and closed["seq"] == close_seq and closed["totals"]["sales"] == 1
    status, _h, current = await served.call("GET", "/upstream/v1/day/2026-11-25")
    assert status == 200 and current["open"] and current["totals"]["sales"] == 1 and current["from_seq"] == close_seq + 1
    status, _h, _b = await served.call("GET", "/upstream/v1/day/2026-11-20")
    assert status == 404
    await up.seal()
    assert await gateway("erp", "pull", *conn(served), "--store-key", key_files[0], "--verify") == 0
    assert "day 2026-11-24: reconciled" in capsys.readouterr().out

    # A close whose figures do not add up (written before sealing, so every signature is good).
    status, _h, body = await served.call("POST", "/upstream/v1/day-close", body={"day": "2026-11-25"})
    with up.store.begin(write=True) as tx:
        doc = tx.event(body["seq"])
        doc["lanes"]["lane1"]["payments"]["cash"]["taken"] += 100
        tx.put_raw("events", u64(body["seq"]), _pack(doc))
    await up.seal()
    assert await gateway("erp", "pull", *conn(served), "--store-key", key_files[0], "--verify") == 1
    out = capsys.readouterr().out
    assert "day 2026-11-25: DIFFERS lanes.lane1.payments.cash.taken: the close says 5090, the documents give 4990" in out


async def test_metrics_show_discounts_by_kind_and_drawer_differences_by_lane(core):
    from .test_promo_wiring import rules_v7
    from ._data import apply_master
    apply_master(core.store, "promotions", rules_v7(), version=7)
    res = await core.request("sale", {"id": "s1", "lines": [{"code": "SKU-1", "qty": 2}],
                                      "payments": [{"method": "cash", "cents": 3582}]})
    assert res.ok, res.body
    assert (await core.request("drawer_count", {"id": "c1", "counted": {"cash": 3500}})).ok
    registry = CollectorRegistry()
    registry.register(DayCollector(core.store.read))
    assert registry.get_sample_value("gateway_day_promotion_discount_cents", {"kind": "percent_off"}) == 398
    assert registry.get_sample_value("gateway_day_promotion_baskets", {"kind": "percent_off"}) == 1
    assert registry.get_sample_value("gateway_day_drawer_difference_cents", {"lane": "lane1", "method": "cash"}) is None
    assert (await core.request("day_close", {"day": "2026-11-24"}, source="erp", channel="erp")).ok
    assert registry.get_sample_value("gateway_day_drawer_difference_cents", {"lane": "lane1", "method": "cash"}) == -82
    assert registry.get_sample_value("gateway_day_promotion_discount_cents", {"kind": "percent_off"}) is None


async def test_gateway_report_day_reads_beside_the_writer(core, capsys):
    assert (await core.request("sale", {"id": "s1", "lines": [{"code": "SKU-4", "qty": 3}],
                                        "payments": [{"method": "insurance", "cents": 1050}]})).ok
    # Another process, as an operator would run it (LMDB opens an environment once per process).
    async def report(*argv):
        return await trio.run_process([sys.executable, "-m", "gateway", "report", "day", *argv, "--data-dir",
                                       core.store.path], capture_stdout=True, capture_stderr=True, check=False)
    done = await report("--json")
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["open"] and figures["lanes"]["lane1"]["payments"]["insurance"]["expected"] == 1050
    done = await report()
    assert done.returncode == 0 and b"OPEN (figures so far)" in done.stdout
    assert (await report("2020-01-01")).returncode == 1
