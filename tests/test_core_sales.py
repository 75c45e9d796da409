"""Sales, returns and queries through the real core loop over a real LMDB store."""
from __future__ import annotations

import trio

from core_ext import Request, u64
from core_ext._verify import verify

from ._data import GTIN_STRIPS, apply_master


def cash(total):
    return [{"method": "cash", "cents": total}]


async def sale(core, sid, lines, total, **extra):
    return await core.request("sale", {"t": "sale", "id": sid, "lines": lines, "payments": cash(total), **extra})


def lot_qty(store, sku, lot):
    with store.read() as tx:
        row = tx.get("lots", f"{sku}\x00{lot or ''}".encode())
    return row["qty"] if row else 0


async def test_sale_takes_fefo_lots_and_stores_the_choice(core):
    res = await sale(core, "L1-1", [{"code": "SKU-1", "qty": 7}], 7 * 1990)
    assert res.ok, res.body
    line = res.body["lines"][0]
    assert line["allocations"] == [{"lot": "B2", "expiry": "2026-12-31", "qty": 5},
                                   {"lot": "A1", "expiry": "2027-03-31", "qty": 2}]
    assert lot_qty(core.store, "SKU-1", "B2") == 0 and lot_qty(core.store, "SKU-1", "A1") == 8
    with core.store.read() as tx:
        event = tx.event(res.body["seq"])
    assert event["type"] == "sale" and event["id"] == "lane1:L1-1"
    assert event["moves"] == [["SKU-1", "B2", -5, "2026-12-31", []], ["SKU-1", "A1", -2, "2027-03-31", []]]
    assert verify(core.store) == []


async def test_gtin_code_resolves_and_totals_add_up(core):
    res = await core.request("quote", {"t": "quote", "id": "Q1", "lines": [{"code": GTIN_STRIPS, "qty": 2},
                                                                           {"code": "4711", "qty": 1}]})
    assert res.ok, res.body
    assert [l["sku"] for l in res.body["lines"]] == ["SKU-1", "SKU-2"]
    assert res.body["total_cents"] == 2 * 1990 + 4990 == sum(l["net_cents"] for l in res.body["lines"])
    assert lot_qty(core.store, "SKU-1", "B2") == 5  # a quote changes nothing


async def test_repeat_is_replayed_and_a_different_body_conflicts(core):
    first = await sale(core, "L1-2", [{"code": "SKU-2", "qty": 1}], 4990)
    again = await sale(core, "L1-2", [{"code": "SKU-2", "qty": 1}], 4990)
    assert again.replayed and again.body == first.body
    assert lot_qty(core.store, "SKU-2", None) == 49
    other = await sale(core, "L1-2", [{"code": "SKU-2", "qty": 2}], 2 * 4990)
    assert other.body["err"] == "DUPLICATE_ID_CONFLICT"
    assert lot_qty(core.store, "SKU-2", None) == 49
    # The same id from another terminal is another request.
    elsewhere = await core.request("sale", {"id": "L1-2", "lines": [{"code": "SKU-2", "qty": 1}], "payments": cash(4990)},
                           source="lane2")
    assert elsewhere.ok and not elsewhere.replayed
    assert lot_qty(core.store, "SKU-2", None) == 48


async def test_recalled_lot_is_refused_recorded_and_changes_nothing(core):
    apply_master(core.store, "recalls", {"recalls": [{"recall_id": "R-1", "sku": "SKU-1", "lot": "A1",
                                                      "reason": "sterility"}]}, version=1)
    with core.store.read() as tx:
        last = tx.last_seq()
    res = await sale(core, "L1-3", [{"code": "SKU-1", "qty": 1, "lot": "A1"}], 1990)
    assert res.body["err"] == "RECALLED_LOT"
    assert lot_qty(core.store, "SKU-1", "A1") == 10
    with core.store.read() as tx:
        events = list(tx.events(last + 1))
        assert tx.get("ids", "lane1:L1-3") is None
    assert [e["type"] for e in events] == ["refusal"]
    assert events[0]["recall_id"] == "R-1" and events[0]["moves"] == []
    # FEFO never picks the recalled lot either: B2 (5) then C3, skipping A1.
    ok = await sale(core, "L1-4", [{"code": "SKU-1", "qty": 6}], 6 * 1990)
    assert [a["lot"] for a in ok.body["lines"][0]["allocations"]] == ["B2", "C3"]


async def test_expired_lot_is_refused(core, clock):
    clock.t += 40 * 86400  # past B2's 2026-12-31
    res = await sale(core, "L1-5", [{"code": "SKU-1", "qty": 1, "lot": "B2"}], 1990)
    assert res.body["err"] == "EXPIRED_LOT"
    assert lot_qty(core.store, "SKU-1", "B2") == 5


async def test_negative_stock_allow_goes_unallocated_then_receipt_reconciles(core):
    res = await sale(core, "L1-6", [{"code": "SKU-3", "qty": 5}], 5 * 120000)
    assert res.ok, res.body
    assert res.body["lines"][0]["allocations"][-1] == {"lot": None, "expiry": None, "qty": 2}
    assert lot_qty(core.store, "SKU-3", None) == -2
    with core.store.read() as tx:
        assert tx.get("alerts", b"SKU-3\x00unallocated\x00")["qty"] == -2
    rec = await core.request("receipt", {"id": "R1", "sku": "SKU-3", "lot": "L9", "expiry": "2031-01-01", "qty": 3},
                             source="erp")
    assert rec.ok, rec.body
    assert lot_qty(core.store, "SKU-3", None) == 0 and lot_qty(core.store, "SKU-3", "L9") == 1
    with core.store.read() as tx:
        assert tx.get("alerts", b"SKU-3\x00unallocated\x00") is None
    assert verify(core.store) == []


async def test_negative_stock_refuse(core):
    apply_master(core.store, "policy", {"negative_stock": "refuse"})
    res = await sale(core, "L1-7", [{"code": "SKU-1", "qty": 36}], 36 * 1990)
    assert res.body["err"] == "INSUFFICIENT_STOCK"
    assert lot_qty(core.store, "SKU-1", "C3") == 20
    ok = await sale(core, "L1-8", [{"code": "SKU-1", "qty": 35}], 35 * 1990)
    assert ok.ok


async def test_bad_requests_name_the_problem(core):
    cases = [
        ({"id": "B1", "lines": []}, "BAD_REQUEST", "lines"),
        ({"id": "B2", "lines": [{"code": "SKU-1", "qty": 0}], "payments": cash(0)}, "BAD_REQUEST", "qty"),
        ({"id": "B3", "lines": [{"code": "NOPE", "qty": 1}], "payments": cash(1)}, "UNKNOWN_ITEM", "NOPE"),
        ({"id": "B4", "lines": [{"code": "SKU-2", "qty": 1}], "payments": cash(1)}, "PAYMENT_MISMATCH", "4990"),
        ({"id": "x" * 65, "lines": [{"code": "SKU-2", "qty": 1}], "payments": cash(4990)}, "BAD_REQUEST", "id"),
    ]
    for body, code, word in cases:
        res = await core.request("sale", body)
        assert res.body["ok"] is False and res.body["err"] == code, res.body
        assert word in res.body["msg"]
    assert lot_qty(core.store, "SKU-2", None) == 50


async def test_a_bad_request_in_a_group_does_not_spoil_the_others(core):
    results = {}

    async def send(i):
        lines = [{"code": "SKU-4" if i % 3 else "NOPE", "qty": 1}]
        results[i] = await sale(core, f"G-{i}", lines, 350)

    async with trio.open_nursery() as n:
        for i in range(60):
            n.start_soon(send, i)
    good = [i for i in results if i % 3]
    assert all(results[i].ok for i in good)
    assert all(results[i].body["err"] == "UNKNOWN_ITEM" for i in results if not i % 3)
    assert lot_qty(core.store, "SKU-4", None) == 100 - len(good)
    assert core.loop.commits < 60  # they were grouped
    assert verify(core.store) == []


async def test_points_redeem_earn_and_offline_cap(core):
    apply_master(core.store, "policy", {"points_value_cents": 1, "points_offline_cap": 500})
    over = await core.request("sale", {"id": "P1", "member": "M1", "lines": [{"code": "SKU-2", "qty": 1}],
                                       "payments": [{"method": "points", "cents": 600}, {"method": "cash", "cents": 4390}]})
    assert over.body["err"] == "POINTS_INSUFFICIENT"
    ok = await core.request("sale", {"id": "P2", "member": "M1", "lines": [{"code": "SKU-2", "qty": 1}],
                                     "payments": [{"method": "points", "cents": 500}, {"method": "cash", "cents": 4490}]})
    assert ok.ok, ok.body
    assert ok.body["points_balance"] == 1000 - 500 + ok.body["points_earned"]
    member = await core.request("member", {"id": "m", "member": "M1"})
    assert member.body["points_balance"] == ok.body["points_balance"]


async def test_return_refunds_restocks_and_refuses_excess(core):
    s = await sale(core, "S-1", [{"code": "SKU-1", "qty": 3, "lot": "A1"}], 3 * 1990)
    assert s.ok, s.body
    r1 = await core.request("return", {"id": "R-1", "orig": "S-1", "lines": [{"sku": "SKU-1", "qty": 2}]})
    assert r1.ok, r1.body
    assert r1.body["refund_cents"] == 2 * 1990 and r1.body["lines"][0]["lot"] == "A1"
    assert lot_qty(core.store, "SKU-1", "A1") == 9
    too_many = await core.request("return", {"id": "R-2", "orig": "S-1", "lines": [{"sku": "SKU-1", "qty": 2}]})
    assert too_many.body["err"] == "RETURN_EXCEEDS_SALE"
    r3 = await core.request("return", {"id": "R-3", "orig": "S-1", "lines": [{"sku": "SKU-1", "qty": 1}]})
    assert r3.body["refund_cents"] == 1990
    unknown = await core.request("return", {"id": "R-4", "orig": "NOPE", "lines": [{"sku": "SKU-1", "qty": 1}]})
    assert unknown.body["err"] == "UNKNOWN_SALE"
    assert verify(core.store) == []


async def test_stock_member_ping(core):
    stock = await core.request("stock", {"id": "s", "code": "SKU-1"})
    assert stock.body["on_hand"] == 35
    assert {l["lot"]: l["qty"] for l in stock.body["lots"]} == {"A1": 10, "B2": 5, "C3": 20}
    ping = await core.request("ping", {"id": "p"})
    assert ping.ok and ping.body["time_ms"] > 0
    missing = await core.request("member", {"id": "m", "member": "NOBODY"})
    assert missing.body["err"] == "UNKNOWN_ITEM"


async def test_unknown_kind_is_refused(core):
    res = await core.submit(Request("teleport", {"id": "x"}, source="lane1"))
    assert res.body["err"] == "BAD_REQUEST"


async def test_a_scanned_gs1_code_names_its_lot(core):
    code = f"]d201{GTIN_STRIPS}17280131" + "10C3"
    res = await sale(core, "L1-gs1", [{"code": code, "qty": 2}], 2 * 1990)
    assert res.ok, res.body
    assert res.body["lines"][0]["lot"] == "C3"
    assert res.body["lines"][0]["allocations"] == [{"lot": "C3", "expiry": "2028-01-31", "qty": 2}]
    bad = await sale(core, "L1-gs1b", [{"code": f"]d201{GTIN_STRIPS[:-1]}0" + "10C3", "qty": 1}], 1990)
    assert bad.body["err"] == "UNKNOWN_ITEM"  # a wrong check digit is never guessed at


async def test_return_of_a_sale_paid_partly_in_points_gives_points_back_not_money(core):
    s = await core.request("sale", {"id": "PP1", "member": "M1", "lines": [{"code": "SKU-2", "qty": 2}],
                                    "payments": [{"method": "points", "cents": 990}, {"method": "cash", "cents": 8990}]})
    assert s.ok, s.body
    after_sale = s.body["points_balance"]
    r = await core.request("return", {"id": "PR1", "orig": "PP1", "lines": [{"sku": "SKU-2", "qty": 2}]})
    assert r.ok, r.body
    assert r.body["refund_cents"] == 8990                       # the money paid, back as money
    assert r.body["points_restored"] == 990                     # the points paid, back as points
    assert r.body["points_reversed"] == s.body["points_earned"]  # what the sale earned is taken back
    assert r.body["points_balance"] == after_sale + 990 - s.body["points_earned"] == 1000
    assert sum(l["refund_cents"] for l in r.body["lines"]) == 2 * 4990  # the value of the goods returned


async def test_an_absurd_quantity_is_a_bad_request_not_an_internal_error(core):
    res = await core.request("quote", {"id": "Q", "lines": [{"code": "SKU-4", "qty": 10**6}] * 2000})
    assert res.body["err"] == "BAD_REQUEST", res.body


async def test_a_serial_names_its_lot_and_leaves_the_ledger(core):
    await core.request("receipt", {"id": "r-l2", "sku": "SKU-3", "lot": "L2", "expiry": "2029-01-01", "qty": 2,
                                   "serials": ["S8", "S9"]}, source="erp")
    # FEFO alone would take L2 (2029 before 2030), but S2 sits in L1.
    res = await sale(core, "SER-2", [{"code": "SKU-3", "qty": 1, "serial": "S2"}], 120000)
    assert res.body["lines"][0]["allocations"] == [{"lot": "L1", "expiry": "2030-01-01", "qty": 1}]
    with core.store.read() as tx:
        assert tx.get("lots", b"SKU-3\x00L1")["serials"] == ["S1", "S3"]


async def test_return_lines_of_two_lots_each_get_their_own_refund(core):
    # One sale line FEFO-split over B2 (5) and A1 (2); a 10 % rule makes the cents uneven.
    apply_master(core.store, "promotions", {"ceiling": {"default_max_pct_bp": 10000, "by_category": {}},
                                            "points": {"earn_per_cents": 100, "earn_points": 1, "tier_multiplier_bp": {}},
                                            "rules": [{"id": "P1", "version": 1, "name": "ten off", "kind": "percent_off",
                                                       "params": {"pct_bp": 1000}, "target": {"skus": ["SKU-1"]},
                                                       "priority": 1}]}, version=3)
    q = await core.request("quote", {"id": "q", "lines": [{"code": "SKU-1", "qty": 7}]})
    s = await sale(core, "TL-1", [{"code": "SKU-1", "qty": 7}], q.body["total_cents"])
    assert s.ok, s.body
    paid = s.body["lines"][0]["net_cents"]
    r = await core.request("return", {"id": "TR-1", "orig": "TL-1", "lines": [{"sku": "SKU-1", "qty": 2, "lot": "A1"},
                                                                             {"sku": "SKU-1", "qty": 3, "lot": "B2"}]})
    assert r.ok, r.body
    parts = [l["refund_cents"] for l in r.body["lines"]]
    assert all(p > 0 for p in parts) and sum(parts) == r.body["refund_cents"]
    r2 = await core.request("return", {"id": "TR-2", "orig": "TL-1", "lines": [{"sku": "SKU-1", "qty": 2, "lot": "B2"}]})
    assert r.body["refund_cents"] + r2.body["refund_cents"] == paid  # every unit back: exactly what was paid
    with core.store.read() as tx:
        assert tx.get("lots", b"SKU-1\x00B2")["qty"] == 5 and tx.get("lots", b"SKU-1\x00A1")["qty"] == 10
    again = await core.request("return", {"id": "TR-3", "orig": "TL-1", "lines": [{"sku": "SKU-1", "qty": 1, "lot": "A1"}]})
    assert again.body["err"] == "RETURN_EXCEEDS_SALE"


async def test_a_rule_set_missing_from_the_store_refuses_rather_than_prices_without_it(core):
    apply_master(core.store, "promotions", {"rules": []}, version=9)
    with core.store.begin(write=True) as tx:
        tx.delete("master_docs", b"promotions\x00" + u64(9))  # in force, but its body is gone
    res = await core.request("quote", {"id": "q9", "lines": [{"code": "SKU-4", "qty": 1}]})
    assert res.body["err"] == "UNAVAILABLE" and "rule set 9" in res.body["msg"]
