"""PROMO/1 through the core loop: quote, sale and return price with the rule set in force, a sale keeps
what priced it, returns refund by the spec's formula and move points back. Expected cents are worked
by hand in the comments; the store is a real LMDB with the seeded catalog of `tests/_data.py`
(SKU-1 consumable 19.90, SKU-2 device 49.90, SKU-3 implant 1200.00, SKU-4 consumable 3.50).
"""
from __future__ import annotations

from core_ext._sales import engine_for
from core_ext._verify import verify

from ._data import apply_master


def rules_v7() -> dict:
    return {
        "ceiling": {"default_max_pct_bp": 3000, "by_category": {"implant": 0}},
        "points": {"earn_per_cents": 100, "earn_points": 1, "tier_multiplier_bp": {"gold": 20000}},
        "rules": [
            {"id": "P-7", "version": 2, "kind": "percent_off", "params": {"pct_bp": 1000},
             "target": {"skus": ["SKU-1"]}},
            {"id": "P-9", "version": 1, "kind": "percent_off", "params": {"pct_bp": 5000},
             "target": {"categories": ["implant"]}},
            {"id": "B-1", "version": 3, "kind": "bundle", "clawback_on_return": True,
             "params": {"items": [["SKU-2", 1], ["SKU-4", 1]], "price_cents": 5000}},
        ],
    }


def cash(total: int) -> list[dict]:
    return [{"method": "cash", "cents": total}]


def sale_event(core, seq: int) -> dict:
    with core.store.read() as tx:
        return tx.event(seq)


def balance(core, member: str) -> int:
    with core.store.read() as tx:
        return tx.get("members", member)["points"]


def last_seq(core) -> int:
    with core.store.read() as tx:
        return tx.last_seq()


async def test_quote_prices_with_the_rules_in_force_and_changes_nothing(core):
    apply_master(core.store, "promotions", rules_v7(), version=7)
    before = last_seq(core)
    # SKU-1 2 x 1990 = 3980, P-7 10% = 398 -> 3582. Points as if paid in cash: floor(3582 / 100) = 35,
    # gold x 20000 / 10000 = 70.
    q = await core.request("quote", {"t": "quote", "id": "Q1", "member": "M1", "lines": [{"code": "SKU-1", "qty": 2}]})
    assert q.ok, q.body
    assert q.body["ruleset"] == 7
    assert q.body["lines"][0]["promos"] == [{"id": "P-7", "cents": 398}]
    assert (q.body["gross_cents"], q.body["discount_cents"], q.body["total_cents"]) == (3980, 398, 3582)
    assert q.body["points_earned"] == 70 and q.body["points_balance"] == 1000
    assert last_seq(core) == before and balance(core, "M1") == 1000


async def test_sale_stores_priced_lines_rule_versions_ruleset_and_trace(core):
    apply_master(core.store, "promotions", rules_v7(), version=7)
    # SKU-1 3582 as above; SKU-3 (implant) 50% = 60000, all clipped by the implant ceiling of 0.
    # Total 123582, cash: earned floor(123582 / 100) = 1235, x 2 = 2470; balance 1000 + 2470.
    s = await core.request("sale", {"t": "sale", "id": "S1", "member": "M1", "payments": cash(123582),
                                    "lines": [{"code": "SKU-1", "qty": 2}, {"code": "SKU-3", "qty": 1}]})
    assert s.ok, s.body
    assert s.body["points_earned"] == 2470 and s.body["points_balance"] == 3470 == balance(core, "M1")
    doc = sale_event(core, s.body["seq"])
    assert doc["ruleset"] == 7
    assert [l["promos"] for l in doc["lines"]] == [[["P-7", 2, 398]], []]
    assert [l["net_cents"] for l in doc["lines"]] == [3582, 120000]
    assert doc["trace"] == [{"rule": "P-9", "version": 1, "reason": "ceiling", "line": 1, "cents": 60000}]
    assert doc["points"] == {"earned": 2470, "redeemed": 0, "redeemed_cents": 0}
    # Head office re-prices the sale from what it stored and reaches the same cents.
    with core.store.read() as tx:
        again = engine_for(tx, doc["ruleset"]).price(
            [{"sku": l["sku"], "qty": l["qty"], "unit_cents": l["unit_cents"], "category": l["category"]}
             for l in doc["lines"]],
            member={"id": "M1", "tier": doc["tier"]}, coupons=tuple(doc["coupons"]), store=doc["store"],
            channel=doc["channel"], ts_ms=doc["ts_ms"], **doc["local"])
    assert [[[p["id"], p["version"], p["cents"]] for p in l["promos"]] for l in again["lines"]] == \
        [l["promos"] for l in doc["lines"]]
    assert again["trace"] == doc["trace"]


async def test_every_sale_records_the_rule_set_that_priced_it(core):
    first = await core.request("sale", {"t": "sale", "id": "V0", "payments": cash(1990),
                                        "lines": [{"code": "SKU-1", "qty": 1}]})
    apply_master(core.store, "promotions", rules_v7(), version=7)
    second = await core.request("sale", {"t": "sale", "id": "V7", "payments": cash(1791),
                                         "lines": [{"code": "SKU-1", "qty": 1}]})
    v8 = rules_v7()
    v8["rules"][0] = {**v8["rules"][0], "version": 3, "params": {"pct_bp": 2000}}
    apply_master(core.store, "promotions", v8, version=8)
    third = await core.request("sale", {"t": "sale", "id": "V8", "payments": cash(1592),
                                        "lines": [{"code": "SKU-1", "qty": 1}]})
    # 1990; 10% = 199 -> 1791; 20% = 398 -> 1592.
    assert [r.body.get("ruleset") for r in (first, second, third)] == [0, 7, 8], [r.body for r in (first, second, third)]
    docs = [sale_event(core, r.body["seq"]) for r in (first, second, third)]
    assert [d["ruleset"] for d in docs] == [0, 7, 8]
    assert [d["lines"][0]["promos"] for d in docs] == [[], [["P-7", 2, 199]], [["P-7", 3, 398]]]


async def test_returns_refund_what_was_paid_under_the_old_rules_and_reverse_points(core):
    apply_master(core.store, "promotions", rules_v7(), version=7)
    s = await core.request("sale", {"t": "sale", "id": "S1", "member": "M1", "payments": cash(123582),
                                    "lines": [{"code": "SKU-1", "qty": 2}, {"code": "SKU-3", "qty": 1}]})
    assert s.ok, s.body
    # A rule set that would price SKU-1 differently is in force now: returns never re-price.
    v8 = rules_v7()
    v8["rules"][0] = {**v8["rules"][0], "version": 3, "params": {"pct_bp": 2000}}
    apply_master(core.store, "promotions", v8, version=8)
    # SKU-1 line: n 2, N 3582: A(1) = 1791, then 3582 - 1791 = 1791. Points earned 2470 over 123582
    # paid: reversed floor(2470 * 1791 / 123582) = 35, then floor(2470 * 3582 / 123582) = 71 -> 36;
    # the implant's 120000 settles the rest, 2470 - 71 = 2399.
    got = []
    for rid, sku in (("R1", "SKU-1"), ("R2", "SKU-1"), ("R3", "SKU-3")):
        r = await core.request("return", {"t": "return", "id": rid, "orig": "S1", "lines": [{"sku": sku, "qty": 1}]})
        assert r.ok, r.body
        got.append((r.body["refund_cents"], r.body["lines"][0]["refund_cents"], r.body["points_reversed"],
                    r.body["points_balance"]))
    assert got == [(1791, 1791, 35, 3435), (1791, 1791, 36, 3399), (120000, 120000, 2399, 1000)]
    assert balance(core, "M1") == 1000
    over = await core.request("return", {"t": "return", "id": "R4", "orig": "S1",
                                         "lines": [{"sku": "SKU-1", "qty": 1}]})
    assert over.body["err"] == "RETURN_EXCEEDS_SALE" and balance(core, "M1") == 1000
    assert verify(core.store) == []


async def test_clawback_return_reprices_the_kept_units(core):
    apply_master(core.store, "promotions", rules_v7(), version=7)
    # Bundle SKU-2 + SKU-4 for 5000: 4990 + 350 = 5340, 340 off, LR by net 4990:350 -> 317.72 / 22.28
    # -> 317 + 22, 1 left; remainders 3820 vs 1520 -> SKU-2. Nets 4672 + 328 = 5000.
    s = await core.request("sale", {"t": "sale", "id": "S2", "payments": cash(5000),
                                    "lines": [{"code": "SKU-2", "qty": 1}, {"code": "SKU-4", "qty": 1}]})
    assert s.ok, s.body
    assert [l["net_cents"] for l in s.body["lines"]] == [4672, 328]
    # Return SKU-4: the kept SKU-2 alone makes no set -> 4990; refund 5000 - 4990 - 0 = 10, not 328.
    # Then SKU-2: nothing kept -> 5000 - 0 - 10 = 4990. Together what was paid.
    r1 = await core.request("return", {"t": "return", "id": "R1", "orig": "S2", "lines": [{"sku": "SKU-4", "qty": 1}]})
    r2 = await core.request("return", {"t": "return", "id": "R2", "orig": "S2", "lines": [{"sku": "SKU-2", "qty": 1}]})
    assert (r1.body["refund_cents"], r2.body["refund_cents"]) == (10, 4990), (r1.body, r2.body)
    assert verify(core.store) == []


async def test_points_redeemed_within_balance_and_offline_cap_earn_on_cash_only(core):
    apply_master(core.store, "promotions", rules_v7(), version=7)
    apply_master(core.store, "policy", {"points_value_cents": 1, "points_offline_cap": 500})
    basket = [{"code": "SKU-1", "qty": 2}]   # 3582 as above
    q = await core.request("quote", {"t": "quote", "id": "Q", "member": "M1", "lines": basket})
    assert q.body["points_earned"] == 70  # as if all 3582 were paid in cash
    seq = last_seq(core)
    over_cap = await core.request("sale", {"t": "sale", "id": "S1", "member": "M1", "lines": basket,
                                           "payments": [{"method": "points", "cents": 501},
                                                        {"method": "cash", "cents": 3081}]})
    assert over_cap.body["err"] == "POINTS_INSUFFICIENT"
    over_balance = await core.request("sale", {"t": "sale", "id": "S2", "member": "M2", "lines": basket,
                                               "payments": [{"method": "points", "cents": 1},
                                                            {"method": "cash", "cents": 3581}]})
    assert over_balance.body["err"] == "POINTS_INSUFFICIENT"
    assert last_seq(core) == seq and balance(core, "M1") == 1000 and balance(core, "M2") == 0
    # 500 points + 3082 cash: earned floor(3082 / 100) = 30, x 2 = 60; balance 1000 - 500 + 60.
    ok = await core.request("sale", {"t": "sale", "id": "S3", "member": "M1", "lines": basket,
                                     "payments": [{"method": "points", "cents": 500}, {"method": "cash", "cents": 3082}]})
    assert ok.ok, ok.body
    assert ok.body["points_earned"] == 60 and ok.body["points_balance"] == 560 == balance(core, "M1")
    # Returning one of two units: value A(1) = 1791 of 3582, half; points back floor(500 / 2) = 250 as
    # points (250 cents of the value), 1541 as money; earned floor(60 / 2) = 30 reversed.
    r = await core.request("return", {"t": "return", "id": "R1", "orig": "S3", "lines": [{"sku": "SKU-1", "qty": 1}]})
    assert r.ok, r.body
    assert (r.body["refund_cents"], r.body["lines"][0]["refund_cents"]) == (1541, 1791)
    assert (r.body["points_reversed"], r.body["points_restored"]) == (30, 250)
    assert r.body["points_balance"] == 560 - 30 + 250 == balance(core, "M1")
