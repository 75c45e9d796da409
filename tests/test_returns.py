"""Refunds of committed sales: the cumulative formula, clawback re-pricing, and points, in both flavours.

Expected cents are worked by hand in the comments; `test_promo_properties.py` checks the same rules on
random sales and return orders.
"""
from __future__ import annotations

import pytest

from core_ext._returns import ReturnPlanError, plan_return

from .test_promo_scenarios import FLAVOURS, line, rule


@pytest.fixture(params=FLAVOURS)
def promo(request):
    return request.param


def _sale(promo, rules, lines, *, points=None, member=None, redeemed=(0, 0)):
    engine = promo.PromoEngine({"rules": rules, "points": points or {"earn_per_cents": 100, "earn_points": 1}}, 9)
    priced = engine.price(lines, member=member)
    total = priced["total_cents"]
    earned = engine.points_earned(total - redeemed[1], None, member is not None)
    sale = {"lines": [{**l, "category": src["category"]} for l, src in zip(priced["lines"], lines)],
            "member": member and member["id"], "tier": None, "coupons": [], "store": "", "channel": "ecr",
            "ts_ms": 0, "local": {"weekday": 1, "minute": 0}, "ruleset": 9,
            "payments": [{"method": "cash", "cents": total - redeemed[1]}],
            "points": {"earned": earned, "redeemed": redeemed[0], "redeemed_cents": redeemed[1]},
            "refunded_cents": 0, "points_reversed_before": 0, "points_restored_before": 0}
    return engine, sale


def _return(sale, before, take, engine):
    plan = plan_return(sale, before, take, engine)
    sale["refunded_cents"] += plan["refund_cents"]
    sale["points_reversed_before"] += plan["points_reversed"]
    sale["points_restored_before"] += plan["points_restored"]
    for i, k in take.items():
        before[i] = before.get(i, 0) + k
    return plan


def test_return_without_clawback_uses_the_formula(promo):
    # 10% off A 3x1000 (net 2700) and B 1x500 (net 450): returning 1 A refunds A(1) = 900, then
    # B 450, then 2 A: 2700 - 900 = 1800. Points: earned floor(3150 / 100) = 31; reversed after 900:
    # floor(31 * 900 / 3150) = 8; after 1350: floor(31 * 1350 / 3150) = 13 -> 5; then the rest, 18.
    engine, sale = _sale(promo, [rule("P", "percent_off", {"pct_bp": 1000})],
                         [line("A", 3, 1000), line("B", 1, 500)], member={"id": "M", "tier": None})
    before: dict[int, int] = {}
    plans = [_return(sale, before, take, engine) for take in ({0: 1}, {1: 1}, {0: 2})]
    assert [p["refund_cents"] for p in plans] == [900, 450, 1800]
    assert [p["lines"] for p in plans] == [[{"index": 0, "qty": 1, "refund_cents": 900}],
                                           [{"index": 1, "qty": 1, "refund_cents": 450}],
                                           [{"index": 0, "qty": 2, "refund_cents": 1800}]]
    assert [p["points_reversed"] for p in plans] == [8, 5, 18]
    assert sale["refunded_cents"] == 3150 and sale["points_reversed_before"] == sale["points"]["earned"] == 31


def test_return_with_clawback_reprices_kept_units(promo):
    # Bundle A + B for 1500 (A 1000, B 1000): 500 off, LR 250 / 250 -> nets 750 + 750, paid 1500.
    # Return B: the kept A alone no longer makes a set -> 1000; refund 1500 - 1000 - 0 = 500 (not 750).
    # Return A: nothing kept -> 1500 - 0 - 500 = 1000. Total 1500, what was paid.
    # 2 points (200 cents) paid part of it: restored floor(2 * 500 / 1500) = 0 points and
    # floor(200 * 500 / 1500) = 66 cents, money 434; then 2 points, 134 cents, money 866 (+434 = 1300 cash).
    # Earned floor((1500 - 200) / 100) = 13: reversed floor(13 * 500 / 1500) = 4, then 9.
    bundle = rule("B", "bundle", {"items": [["A", 1], ["B", 1]], "price_cents": 1500}, clawback_on_return=True)
    engine, sale = _sale(promo, [bundle], [line("A", 1, 1000), line("B", 1, 1000)],
                         member={"id": "M", "tier": None}, redeemed=(2, 200))
    assert [l["net_cents"] for l in sale["lines"]] == [750, 750]
    before: dict[int, int] = {}
    first = _return(sale, before, {1: 1}, engine)
    second = _return(sale, before, {0: 1}, engine)
    assert (first["refund_cents"], second["refund_cents"]) == (500, 1000)
    assert (first["points_restored"], second["points_restored"]) == (0, 2)
    assert (first["points_restored_cents"], second["points_restored_cents"]) == (66, 134)
    assert (first["money_refund_cents"], second["money_refund_cents"]) == (434, 866)
    assert (first["points_reversed"], second["points_reversed"]) == (4, 9)
    assert first["lines"] == [{"index": 1, "qty": 1, "refund_cents": 500}]


def test_return_with_clawback_never_negative(promo):
    # Threshold: 2000 of goods -> 300 off, clawback. A 1x1500 + B 1x500: LR 225 / 75 -> 1275 + 425.
    # Return B: A alone (1500) misses the threshold -> kept 1500; refund 1700 - 1500 = 200.
    # Then A: 1700 - 0 - 200 = 1500. Sum 1700.
    t = rule("T", "threshold", {"ladder": [[2000, 300]]}, clawback_on_return=True)
    engine, sale = _sale(promo, [t], [line("A", 1, 1500), line("B", 1, 500)])
    before: dict[int, int] = {}
    refunds = [_return(sale, before, take, engine)["refund_cents"] for take in ({1: 1}, {0: 1})]
    assert refunds == [200, 1500]
    # A bigger clawback than the returned goods are worth refunds nothing, never less.
    t2 = rule("T", "threshold", {"ladder": [[2000, 1000]]}, clawback_on_return=True)
    engine, sale = _sale(promo, [t2], [line("A", 1, 1900), line("B", 1, 100)])
    # 1000 off 2000: 950 / 50 -> nets 950 + 50 = 1000 paid; A kept alone re-prices to 1900 -> 0 refund.
    assert plan_return(sale, {}, {1: 1}, engine)["refund_cents"] == 0


def test_return_refuses_what_does_not_fit(promo):
    engine, sale = _sale(promo, [], [line("A", 2, 100)])
    with pytest.raises(ReturnPlanError, match="cannot return 2 units, 1 of 2 are left"):
        plan_return(sale, {0: 1}, {0: 2}, engine)
    with pytest.raises(ReturnPlanError, match="no line 3"):
        plan_return(sale, {}, {3: 1}, engine)
    with pytest.raises(ReturnPlanError, match="nothing to return"):
        plan_return(sale, {}, {}, engine)
