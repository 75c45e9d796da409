"""PROMO/1 worked by hand: every rule kind and evaluation rule, in both engine flavours.

Each scenario's expected cents are computed in the comment above it from the spec's rules; the engine
must reach the same numbers. Notation: a line is SKU qty x unit; "LR" is the largest-remainder spread.
"""
from __future__ import annotations

import os

import pytest

from core_ext._returns import ReturnPlanError, refund_share

from ._twins import twins

FLAVOURS = twins("promo")
_promo_py = FLAVOURS[0].values[0]
_promo_c = FLAVOURS[1].values[0] if len(FLAVOURS) > 1 else None


@pytest.fixture(params=FLAVOURS)
def promo(request):
    return request.param


def rule(rid, kind, params, **kw):
    return {"id": rid, "version": kw.pop("version", 1), "kind": kind, "params": params, **kw}


def line(sku, qty, unit, category="c"):
    return {"sku": sku, "qty": qty, "unit_cents": unit, "category": category}


def price(promo, rules, lines, ceiling=None, points=None, **kw):
    body = {"rules": rules}
    if ceiling is not None:
        body["ceiling"] = ceiling
    if points is not None:
        body["points"] = points
    return promo.PromoEngine(body, 5).price(lines, **kw)


def promos(result):
    """Per line: (discount, [(rule id, cents), ...])."""
    return [(l["discount_cents"], [(p["id"], p["cents"]) for p in l["promos"]]) for l in result["lines"]]


def reasons(result):
    return [(t["rule"], t["reason"]) for t in result["trace"]]


def check_totals(result):
    assert sum(l["net_cents"] for l in result["lines"]) == result["total_cents"]
    assert result["gross_cents"] - result["discount_cents"] == result["total_cents"]
    for l in result["lines"]:
        assert l["gross_cents"] == l["qty"] * l["unit_cents"]
        assert l["discount_cents"] == sum(p["cents"] for p in l["promos"])
        assert 0 <= l["net_cents"] == l["gross_cents"] - l["discount_cents"]


# (name, rules, lines, ceiling, expected per-line promos, expected trace (rule, reason))
SCENARIOS = [
    # A 3x1990 = 5970; 10% = 597 (exact). B is not targeted.
    ("percent_off", [rule("P", "percent_off", {"pct_bp": 1000}, target={"skus": ["A"]})],
     [line("A", 3, 1990), line("B", 1, 500)], None,
     [(597, [("P", 597)]), (0, [])], []),

    # 150 per unit: A 2x1000 -> min(300, 2000) = 300; B 1x100 -> min(150, 100) = 100; amount 400.
    # LR by net 2000:100 -> 380.95 / 19.05 -> 380 + 19 = 399, 1 left; remainders 800000 mod 2100 = 2000
    # vs 40000 mod 2100 = 100 -> A. A 381, B 19.
    ("amount_off", [rule("P", "amount_off", {"cents": 150})],
     [line("A", 2, 1000), line("B", 1, 100)], None,
     [(381, [("P", 381)]), (19, [("P", 19)])], []),

    # Fixed 800: A 2x1000 is 400 over; B 1x700 is under, so adds nothing (never raises a price). The
    # 400 is spread over every eligible unit (step 5), B's too: LR 2000:700 -> 296.30 / 103.70 -> 296 +
    # 103, 1 left; remainders 800000 mod 2700 = 800 vs 280000 mod 2700 = 1900 -> B. A 296, B 104.
    ("fixed_price", [rule("P", "fixed_price", {"unit_cents": 800})],
     [line("A", 2, 1000), line("B", 1, 700)], None,
     [(296, [("P", 296)]), (104, [("P", 104)])], []),

    # Fixed price at or below every unit: nothing to take off.
    ("fixed_price_no_saving", [rule("P", "fixed_price", {"unit_cents": 800})],
     [line("A", 1, 800)], None,
     [(0, [])], [("P", "no_saving")]),

    # all_units, tiers 2 -> 5%, 5 -> 10%: units 3 + 2 = 5 -> 10% of 3000 + 1000 = 400: A 300, B 100.
    ("qty_tier_all_units",
     [rule("P", "qty_tier", {"mode": "all_units", "tiers": [[2, 500], [5, 1000]]})],
     [line("A", 3, 1000), line("B", 2, 500)], None,
     [(300, [("P", 300)]), (100, [("P", 100)])], []),

    # incremental, units 1-2 0%, 3-4 10%, 5+ 20%, counted in basket order: unit 3 = A 1000 at 10%,
    # unit 4 = B 500 at 10%, units 5-6 = B 1000 at 20%: (1000*1000 + 500*1000 + 1000*2000) / 10000
    # = 350, spread over every eligible unit: 3000:1500 -> 233.33 / 116.67 -> 233 + 116, 1 left;
    # remainders 1050000 mod 4500 = 1500 vs 525000 mod 4500 = 3000 -> B. A 233, B 117.
    ("qty_tier_incremental",
     [rule("P", "qty_tier", {"mode": "incremental", "tiers": [[1, 0], [3, 1000], [5, 2000]]})],
     [line("A", 3, 1000), line("B", 3, 500)], None,
     [(233, [("P", 233)]), (117, [("P", 117)])], []),

    # A tier needing 4 units, the basket has 3.
    ("qty_tier_not_reached",
     [rule("P", "qty_tier", {"mode": "all_units", "tiers": [[4, 1000]]})],
     [line("A", 3, 1000)], None,
     [(0, [])], [("P", "qty_tier_not_reached")]),

    # Bundle A + 2 B for 2000, at most 2 sets: sets = min(3 // 1, 5 // 2) = 2. Set units: A 2 of 3
    # (net floor(3600 * 2 / 3) = 2400), B 4 of 5 (2000): 4400 - 2 * 2000 = 400 over.
    # LR 2400:2000 -> 218.18 / 181.82 -> 218 + 181, 1 left; remainders 800 vs 3600 -> B. A 218, B 182.
    ("bundle",
     [rule("P", "bundle", {"items": [["A", 1], ["B", 2]], "price_cents": 2000, "max_sets": 2})],
     [line("A", 3, 1200), line("B", 5, 500), line("C", 1, 999)], None,
     [(218, [("P", 218)]), (182, [("P", 182)]), (0, [])], []),

    # Remainder ties go to the earlier line even when the rule names the later line's SKU first:
    # B + A for 1999 on A 1000, B 1000 -> 1 over, LR 0.5 / 0.5 -> line A.
    ("bundle_tie_to_earlier_line",
     [rule("P", "bundle", {"items": [["B", 1], ["A", 1]], "price_cents": 1999})],
     [line("A", 1, 1000), line("B", 1, 1000)], None,
     [(1, [("P", 1)]), (0, [])], []),

    ("bundle_incomplete",
     [rule("P", "bundle", {"items": [["A", 1], ["B", 2]], "price_cents": 2000})],
     [line("A", 3, 1200), line("B", 1, 500)], None,
     [(0, []), (0, [])], [("P", "no_complete_set")]),

    # Buy 2 get 1 free: units 1000, 1000, 600, 400 -> 4 // 3 = 1 application; qualifying: the two
    # dearest (A, A); rewarded: the cheapest (C, 400) -> C free, a 100% discount on its line.
    ("buy_x_get_y_free",
     [rule("P", "buy_x_get_y", {"buy": 2, "get": 1, "pct_bp": 10000})],
     [line("A", 2, 1000), line("B", 1, 600), line("C", 1, 400)], None,
     [(0, []), (0, []), (400, [("P", 400)])], []),

    # Buy 1 get 1 at 50% on two equal units: qualifying takes X (tie -> line order), the reward is
    # the cheapest left, Y: 250.
    ("buy_x_get_y_tie",
     [rule("P", "buy_x_get_y", {"buy": 1, "get": 1, "pct_bp": 5000})],
     [line("X", 1, 500), line("Y", 1, 500)], None,
     [(0, []), (250, [("P", 250)])], []),

    # Buy 1 get 2 at 50% on A 7, B 3, C 1000: qualifying C; rewarded from the cheapest up, B then A
    # (drawn in that order); half_up(10 * 50%) = 5, LR by net A 7 : B 3 -> 3.5 / 1.5, tie -> the
    # earlier line, A. A 4, B 1.
    ("buy_x_get_y_tie_to_earlier_line",
     [rule("P", "buy_x_get_y", {"buy": 1, "get": 2, "pct_bp": 5000})],
     [line("A", 1, 7), line("B", 1, 3), line("C", 1, 1000)], None,
     [(4, [("P", 4)]), (1, [("P", 1)]), (0, [])], []),

    # Buy 1 get 1 free at most once on 5 units of one line: 1 unit rewarded = 300.
    ("buy_x_get_y_max_applications",
     [rule("P", "buy_x_get_y", {"buy": 1, "get": 1, "pct_bp": 10000, "max_applications": 1})],
     [line("A", 5, 300)], None,
     [(300, [("P", 300)])], []),

    # A unit used by one buy-X-get-Y serves no other: Q (on A only, priority 2) takes both units of
    # A (one free: 1000); R (buy 1 get 1 on everything, priority 1) finds only B's single unit left
    # -> not enough units. (Had Q reached B too, the cheapest unit, B, would have been its reward.)
    ("xy_units_used_once",
     [rule("Q", "buy_x_get_y", {"buy": 1, "get": 1, "pct_bp": 10000}, priority=2, target={"skus": ["A"]}),
      rule("R", "buy_x_get_y", {"buy": 1, "get": 1, "pct_bp": 10000}, priority=1)],
     [line("A", 2, 1000), line("B", 1, 100)], None,
     [(1000, [("Q", 1000)]), (0, [])], [("R", "not_enough_units")]),

    # Ladder 3000 -> 200, 5000 -> 500 on 3000 + 1000 = 4000: 200, LR 3000:1000 -> 150 / 50.
    ("threshold_ladder",
     [rule("P", "threshold", {"ladder": [[3000, 200], [5000, 500]]})],
     [line("A", 2, 1500), line("B", 1, 1000)], None,
     [(150, [("P", 150)]), (50, [("P", 50)])], []),

    # Every full 1000 takes 50, at most 3 times: 4000 -> 4 -> 3 -> 150; LR 112.5 / 37.5 -> 112 + 37,
    # 1 left; remainders 2000 and 2000 tie -> the earlier line. A 113, B 37.
    ("threshold_every",
     [rule("P", "threshold", {"every_cents": 1000, "off_cents": 50, "max_times": 3})],
     [line("A", 2, 1500), line("B", 1, 1000)], None,
     [(113, [("P", 113)]), (37, [("P", 37)])], []),

    ("threshold_not_reached",
     [rule("P", "threshold", {"ladder": [[5000, 500]]})],
     [line("A", 2, 1500)], None,
     [(0, [])], [("P", "threshold_not_reached")]),

    # 5% over 6000 = 300 -> 150 / 150.
    ("order_percent_off",
     [rule("P", "order_percent_off", {"pct_bp": 500, "min_cents": 5000})],
     [line("A", 1, 3000), line("B", 1, 3000)], None,
     [(150, [("P", 150)]), (150, [("P", 150)])], []),

    ("order_percent_off_below_min",
     [rule("P", "order_percent_off", {"pct_bp": 500, "min_cents": 5000})],
     [line("A", 1, 4000)], None,
     [(0, [])], [("P", "below_min_cents")]),

    # Compounding: 10% of 1000 = 100, then 20% of the remaining 900 = 180 (not 200).
    ("compounding",
     [rule("P1", "percent_off", {"pct_bp": 1000}, priority=10),
      rule("P2", "percent_off", {"pct_bp": 2000}, priority=5)],
     [line("A", 1, 1000)], None,
     [(280, [("P1", 100), ("P2", 180)])], []),

    # Same priority: id order. "P2" < "P3": P2 10% of 1000 = 100; P3 50 per unit off 900.
    ("order_by_id",
     [rule("P3", "amount_off", {"cents": 50}), rule("P2", "percent_off", {"pct_bp": 1000})],
     [line("A", 1, 1000)], None,
     [(150, [("P2", 100), ("P3", 50)])], []),

    # Not stackable: P1 takes 10% of A (100) and closes A's units; P2's 20% reaches only B (200).
    ("not_stackable",
     [rule("P1", "percent_off", {"pct_bp": 1000}, priority=10, stackable=False, target={"skus": ["A"]}),
      rule("P2", "percent_off", {"pct_bp": 2000}, priority=5)],
     [line("A", 1, 1000), line("B", 1, 1000)], None,
     [(100, [("P1", 100)]), (200, [("P2", 200)])], []),

    # ... and a later rule on the closed units alone is a candidate that cannot apply.
    ("units_closed",
     [rule("P1", "percent_off", {"pct_bp": 1000}, priority=10, stackable=False),
      rule("P2", "percent_off", {"pct_bp": 2000}, priority=5, target={"skus": ["A"]})],
     [line("A", 1, 1000)], None,
     [(100, [("P1", 100)])], [("P2", "units_closed")]),

    # Closed units leave the order layer's eligible net too: the threshold sees only B's 2000.
    ("closed_units_leave_order_layer",
     [rule("P1", "percent_off", {"pct_bp": 1000}, stackable=False, target={"skus": ["A"]}),
      rule("T", "threshold", {"ladder": [[2500, 300]]})],
     [line("A", 1, 1000), line("B", 1, 2000)], None,
     [(100, [("P1", 100)]), (0, [])], [("T", "threshold_not_reached")]),

    # Exclusive group at its highest-priority member's place: E1 (prio 5) 15% = 150 vs E2 (prio 1)
    # 200 off -> E2 wins (net 800); then R (prio 3) 10% of 800 = 80 -> 720. Had the group stood at
    # E2's place, R would have gone first (100), then E2 200 -> 700.
    ("exclusive_best_of_group",
     [rule("E1", "percent_off", {"pct_bp": 1500}, priority=5, exclusive_group="G"),
      rule("E2", "amount_off", {"cents": 200}, priority=1, exclusive_group="G"),
      rule("R", "percent_off", {"pct_bp": 1000}, priority=3)],
     [line("A", 1, 1000)], None,
     [(280, [("E2", 200), ("R", 80)])], [("E1", "exclusive_group")]),

    # Equal savings (20% = 200 vs 200 off): the higher priority wins.
    ("exclusive_tie_priority",
     [rule("E1", "percent_off", {"pct_bp": 2000}, priority=5, exclusive_group="G"),
      rule("E2", "amount_off", {"cents": 200}, priority=1, exclusive_group="G")],
     [line("A", 1, 1000)], None,
     [(200, [("E1", 200)])], [("E2", "exclusive_group")]),

    # Equal savings and priority: the lower id wins.
    ("exclusive_tie_id",
     [rule("E2", "percent_off", {"pct_bp": 2000}, exclusive_group="G"),
      rule("E1", "amount_off", {"cents": 200}, exclusive_group="G")],
     [line("A", 1, 1000)], None,
     [(200, [("E1", 200)])], [("E2", "exclusive_group")]),

    # Cap: 50% of 1000 = 500, capped at 250.
    ("cap",
     [rule("P", "percent_off", {"pct_bp": 5000}, max_discount_cents=250)],
     [line("A", 1, 1000)], None,
     [(250, [("P", 250)])], [("P", "capped")]),

    # Ceiling: implant 0, consumable 50%, default 30%. 50% of each line: implant 5000 all clipped;
    # consumable 500 within its 500; the default line 500 > 300 -> 200 clipped, never moved elsewhere.
    ("ceiling_by_category",
     [rule("P", "percent_off", {"pct_bp": 5000})],
     [line("I", 1, 10000, "implant"), line("K", 1, 1000, "consumable"), line("D", 1, 1000, "other")],
     {"default_max_pct_bp": 3000, "by_category": {"implant": 0, "consumable": 5000}},
     [(0, []), (500, [("P", 500)]), (300, [("P", 300)])], [("P", "ceiling"), ("P", "ceiling")]),

    # Latest applied first: R1 20% = 200, R2 20% of 800 = 160 -> 360 > 300, R2 clipped by 60 to 100.
    ("ceiling_latest_first",
     [rule("R1", "percent_off", {"pct_bp": 2000}, priority=2),
      rule("R2", "percent_off", {"pct_bp": 2000}, priority=1)],
     [line("A", 1, 1000)], {"default_max_pct_bp": 3000},
     [(300, [("R1", 200), ("R2", 100)])], [("R2", "ceiling")]),

    # Rounding: 10% of 333 + 333 + 334 = 100; LR 33.3 / 33.3 / 33.4 -> 33 each, 1 left -> the largest
    # remainder (400 vs 300) is the third line: 33, 33, 34.
    ("rounding_remainder",
     [rule("P", "percent_off", {"pct_bp": 1000})],
     [line("A", 1, 333), line("B", 1, 333), line("C", 1, 334)], None,
     [(33, [("P", 33)]), (33, [("P", 33)]), (34, [("P", 34)])], []),

    # Half up: 10% of 15 = 1.5 -> 2; LR over 5, 5, 5 -> 0.67 each, remainders tie -> the first two.
    ("rounding_half_up_ties",
     [rule("P", "percent_off", {"pct_bp": 1000})],
     [line("A", 1, 5), line("B", 1, 5), line("C", 1, 5)], None,
     [(1, [("P", 1)]), (1, [("P", 1)]), (0, [])], []),

    # 100% off with a ceiling that allows it: every line goes to exactly 0.
    ("percent_100",
     [rule("P", "percent_off", {"pct_bp": 10000})],
     [line("A", 3, 333), line("B", 1, 1)], {"default_max_pct_bp": 10000},
     [(999, [("P", 999)]), (1, [("P", 1)])], []),

    # Exclusions: every item but B.
    ("exclude_skus",
     [rule("P", "percent_off", {"pct_bp": 1000}, target={"exclude_skus": ["B"]})],
     [line("A", 1, 1000), line("B", 1, 1000)], None,
     [(100, [("P", 100)]), (0, [])], []),

    # Category target: only the category "x" line.
    ("category_target",
     [rule("P", "percent_off", {"pct_bp": 1000}, target={"categories": ["x"]})],
     [line("A", 1, 1000, "x"), line("B", 1, 1000, "y")], None,
     [(100, [("P", 100)]), (0, [])], []),

    # Item layer before order layer whatever the priority: P (10%, prio 0) before T (prio 99).
    # P: 100 off 1000 -> 900; T: every 300 takes 10 -> 3 * 10 = 30 -> 870.
    ("layers",
     [rule("T", "threshold", {"every_cents": 300, "off_cents": 10}, priority=99),
      rule("P", "percent_off", {"pct_bp": 1000})],
     [line("A", 1, 1000)], None,
     [(130, [("P", 100), ("T", 30)])], []),
]


@pytest.mark.parametrize("name, rules, lines, ceiling, expected, trace", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_scenario(promo, name, rules, lines, ceiling, expected, trace):
    result = price(promo, rules, lines, ceiling)
    assert promos(result) == expected
    assert reasons(result) == trace
    check_totals(result)
    assert result["ruleset"] == 5
    assert [l["sku"] for l in result["lines"]] == [l["sku"] for l in lines]


def test_trace_details(promo):
    # Capped by 250 and clipped on line 0 by 200: the entries carry the cents and the line.
    result = price(promo, [rule("P", "percent_off", {"pct_bp": 5000}, max_discount_cents=400, version=3)],
                   [line("A", 1, 1000)], {"default_max_pct_bp": 2000})
    assert result["trace"] == [
        {"rule": "P", "version": 3, "reason": "capped", "cents": 100},
        {"rule": "P", "version": 3, "reason": "ceiling", "line": 0, "cents": 200},
    ]
    assert result["lines"][0]["promos"] == [{"id": "P", "version": 3, "cents": 200}]
    lost = price(promo, [rule("E1", "percent_off", {"pct_bp": 1000}, exclusive_group="G"),
                         rule("E2", "percent_off", {"pct_bp": 2000}, exclusive_group="G")], [line("A", 1, 1000)])
    assert lost["trace"] == [{"rule": "E1", "version": 1, "reason": "exclusive_group", "group": "G", "winner": "E2"}]


def test_ceiling_clip_of_an_exclusive_member_counts_in_its_saving(promo):
    # E1 30% = 300 is clipped to the 100 the 10% ceiling allows; E2 80 off fits: E1 still saves more.
    # With a 5% ceiling both save 50: the tie goes to the higher priority, E2 (prio 1) vs E1 (prio 0).
    rules = [rule("E1", "percent_off", {"pct_bp": 3000}, exclusive_group="G"),
             rule("E2", "amount_off", {"cents": 80}, priority=1, exclusive_group="G")]
    result = price(promo, rules, [line("A", 1, 1000)], {"default_max_pct_bp": 1000})
    assert promos(result) == [(100, [("E1", 100)])]
    result = price(promo, rules, [line("A", 1, 1000)], {"default_max_pct_bp": 500})
    assert promos(result) == [(50, [("E2", 50)])]
    assert ("E1", "exclusive_group") in reasons(result)


WHEN = {"from_ms": 1_000, "to_ms": 2_000, "weekdays": [6, 7], "minutes": [[1320, 120]]}


@pytest.mark.parametrize("kw, applies", [
    ({"ts_ms": 1_000, "weekday": 6, "minute": 1320}, True),    # window start is inclusive, 22:00 Saturday
    ({"ts_ms": 1_999, "weekday": 7, "minute": 119}, True),     # 01:59 Sunday: the range wraps midnight
    ({"ts_ms": 2_000, "weekday": 6, "minute": 1320}, False),   # window end is exclusive
    ({"ts_ms": 999, "weekday": 6, "minute": 1320}, False),
    ({"ts_ms": 1_500, "weekday": 5, "minute": 1320}, False),   # Friday
    ({"ts_ms": 1_500, "weekday": 6, "minute": 120}, False),    # 02:00: the range's end is exclusive
    ({"ts_ms": 1_500, "weekday": 6, "minute": 600}, False),
])
def test_when(promo, kw, applies):
    result = price(promo, [rule("P", "percent_off", {"pct_bp": 1000}, when=WHEN)], [line("A", 1, 1000)], **kw)
    assert result["total_cents"] == (900 if applies else 1000)
    assert result["trace"] == []  # a rule out of its window is no candidate


@pytest.mark.parametrize("kw, applies", [
    ({"store": "S1", "channel": "pos", "member": {"id": "M", "tier": "gold"}, "coupons": ["SPRING"]}, True),
    ({"store": "S1", "channel": "pos", "member": {"id": "M", "tier": "gold"}, "coupons": [" spring "]}, True),
    ({"store": "S2", "channel": "pos", "member": {"id": "M", "tier": "gold"}, "coupons": ["SPRING"]}, False),
    ({"store": "S1", "channel": "ecr", "member": {"id": "M", "tier": "gold"}, "coupons": ["SPRING"]}, False),
    ({"store": "S1", "channel": "pos", "member": {"id": "M", "tier": "silver"}, "coupons": ["SPRING"]}, False),
    ({"store": "S1", "channel": "pos", "member": None, "coupons": ["SPRING"]}, False),
    ({"store": "S1", "channel": "pos", "member": {"id": "M", "tier": "gold"}, "coupons": []}, False),
])
def test_where_who_coupon(promo, kw, applies):
    r = rule("P", "percent_off", {"pct_bp": 1000}, where={"stores": ["S1"], "channels": ["pos", "csv"]},
             who={"members_only": True, "tiers": ["gold"]}, coupon="SPRING")
    result = price(promo, [r], [line("A", 1, 1000)], **kw)
    assert result["total_cents"] == (900 if applies else 1000)


def test_members_only_without_tiers(promo):
    r = rule("P", "percent_off", {"pct_bp": 1000}, who={"members_only": True})
    assert price(promo, [r], [line("A", 1, 1000)], member={"id": "M", "tier": None})["total_cents"] == 900
    assert price(promo, [r], [line("A", 1, 1000)])["total_cents"] == 1000


def test_no_promotions(promo):
    engine = promo.PromoEngine(None)
    result = engine.price([line("A", 2, 150)])
    assert result == {"ruleset": 0, "gross_cents": 300, "discount_cents": 0, "total_cents": 300, "trace": [],
                      "lines": [{"sku": "A", "qty": 2, "unit_cents": 150, "gross_cents": 300, "discount_cents": 0,
                                 "net_cents": 300, "promos": []}]}
    assert engine.points_earned(10_000, "gold", True) == 0
    assert engine.price([])["total_cents"] == 0


@pytest.mark.parametrize("cash, tier, member, expected", [
    # floor(floor(cash / 100) * 1 * multiplier / 10000)
    (3582, "gold", True, 70),       # 35 * 20000 / 10000
    (3582, "silver", True, 52),     # 35 * 15000 / 10000 = 52.5 -> 52
    (3582, "bronze", True, 35),     # a tier the table does not name earns at 10000
    (3582, None, True, 35),
    (99, "gold", True, 0),
    (3582, "gold", False, 0),       # no member, no points
])
def test_points(promo, cash, tier, member, expected):
    engine = promo.PromoEngine({"points": {"earn_per_cents": 100, "earn_points": 1,
                                           "tier_multiplier_bp": {"gold": 20000, "silver": 15000}}, "rules": []})
    assert engine.points_earned(cash, tier, member) == expected


@pytest.mark.parametrize("bad, fragment", [
    ({"rules": [rule("P", "percent_off", {"pct_bp": 10001})]}, "rules[0] (id 'P'): params.pct_bp must be"),
    ({"rules": [rule("P", "percent_off", {})]}, "rules[0] (id 'P'): params.pct_bp is missing"),
    ({"rules": [rule("P", "teleport", {})]}, "rules[0] (id 'P'): kind must be one of"),
    ({"rules": [rule("P", "percent_off", {"pct_bp": 1}), rule("P", "percent_off", {"pct_bp": 1})]},
     "rules[1] (id 'P'): id repeats rules[0]"),
    ({"rules": [rule("P", "percent_off", {"pct_bp": 1}, stackable="no")]}, "stackable must be true or false"),
    ({"rules": [rule("P", "percent_off", {"pct_bp": True})]}, "params.pct_bp must be an integer"),
    ({"rules": [rule("P", "qty_tier", {"mode": "all_units", "tiers": [[5, 100], [2, 200]]})]},
     "params.tiers must be in strictly increasing order"),
    ({"rules": [rule("P", "bundle", {"items": [["A", 1], ["A", 2]], "price_cents": 1})]}, "names a SKU twice"),
    ({"rules": [rule("P", "threshold", {"every_cents": 0, "off_cents": 1})]}, "params.every_cents must be"),
    ({"rules": [rule("P", "percent_off", {"pct_bp": 1}, when={"from_ms": 5, "to_ms": 5})]},
     "from_ms must be before to_ms"),
    ({"rules": [rule("P", "percent_off", {"pct_bp": 1}, where={"channels": ["fax"]})]}, "where.channels"),
    ({"rules": [rule("P", "percent_off", {"pct_bp": 1}, exclusive_group="G"),
                rule("Q", "threshold", {"ladder": [[1, 1]]}, exclusive_group="G")]},
     "rules[1] (id 'Q'): exclusive_group 'G' mixes item-layer and order-layer rules"),
    ({"rules": [rule("P", "percent_off", {"pct_bp": 1}, max_discount=5)]}, "rules[0] (id 'P'): max_discount"),
    # A stray non-map scope must not read as "no restriction" (every item, time or customer).
    ({"rules": [rule("P", "percent_off", {"pct_bp": 1}, target=[])]}, "rules[0] (id 'P'): target must be a map"),
    ({"rules": [rule("P", "percent_off", {"pct_bp": 1}, who=False)]}, "rules[0] (id 'P'): who must be a map"),
    ({"rules": [rule("P", "percent_off", {"pct_bp": 1}, when=0)]}, "rules[0] (id 'P'): when must be a map"),
    ({"rules": [rule("P", "percent_off", {"pct_bp": 1}, where="")]}, "rules[0] (id 'P'): where must be a map"),
    ({"ceiling": {"default_max_pct_bp": -1}, "rules": []}, "ceiling.default_max_pct_bp"),
    ({"points": {"earn_per_cents": 0, "earn_points": 1}, "rules": []}, "points.earn_per_cents"),
    ({"rules": "all"}, "rules must be a list"),
    ({"rules": [], "extra": 1}, "unknown key 'extra'"),
    ([], "promotions must be a map"),
])
def test_validation(promo, bad, fragment):
    errors = promo.validate_promotions(bad)
    assert any(fragment in e for e in errors), errors
    with pytest.raises(promo.PromoRuleError) as info:
        promo.PromoEngine(bad, 1)
    assert info.value.errors == errors
    assert isinstance(info.value, ValueError)


def test_valid_body_has_no_errors(promo):
    body = {"ceiling": {"default_max_pct_bp": 3000, "by_category": {"implant": 0}},
            "points": {"earn_per_cents": 100, "earn_points": 1, "tier_multiplier_bp": {"gold": 20000}},
            "rules": [r for _, rules, *_ in SCENARIOS for r in rules if r["id"] == "P"][:1]}
    assert promo.validate_promotions(body) == []


@pytest.mark.parametrize("bad, fragment", [
    ([{"sku": "A", "qty": 0, "unit_cents": 1}], "lines[0].qty"),
    ([{"sku": "A", "qty": 1, "unit_cents": -1}], "lines[0].unit_cents"),
    ([{"sku": "A", "qty": 1, "unit_cents": 1}, {"qty": 1, "unit_cents": 1}], "lines[1].sku"),
    ([{"sku": "A", "qty": 1, "unit_cents": 1, "category": 5}], "lines[0].category"),
    ([{"sku": "A", "qty": 1_000_000, "unit_cents": 10**12}], "exceeds"),
    ("A", "lines must be a list"),
])
def test_bad_basket(promo, bad, fragment):
    with pytest.raises(promo.PromoInputError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        promo.PromoEngine(None).price(bad)


@pytest.mark.parametrize("coupons, fragment", [("SPRING", "coupons must be a list"), ([5], r"coupons\[0\] must be")])
def test_bad_coupons(promo, coupons, fragment):
    engine = promo.PromoEngine({"rules": [rule("P", "percent_off", {"pct_bp": 1000}, coupon="SPRING")]})
    with pytest.raises(promo.PromoInputError, match=fragment):
        engine.price([line("A", 1, 1000)], coupons=coupons)


def test_null_scopes_mean_no_restriction(promo):
    r = rule("P", "percent_off", {"pct_bp": 1000}, target=None, when=None, where=None, who=None, coupon=None)
    assert price(promo, [r], [line("A", 1, 1000)])["total_cents"] == 900


@pytest.mark.skipif(_promo_c is None, reason="pure-Python run")
def test_the_compiled_engine_is_compiled_and_selected():
    import importlib.machinery
    import types

    from core_ext import _select

    assert _promo_c.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    # The per-basket work is C: `price` is no Python function and its helpers are not even visible.
    assert not isinstance(_promo_c.PromoEngine.price, types.FunctionType)
    assert not hasattr(_promo_c, "plan_rule") and not hasattr(_promo_c, "settle")
    if not _select.PURE:
        assert _select.promo is _promo_c


# --- returns ---------------------------------------------------------------------------------

@pytest.mark.parametrize("steps, refunds", [
    # n = 3, N = 1000: A(1) = 333, A(2) = 666, A(3) = 1000.
    ([1, 1, 1], [333, 333, 334]),
    ([2, 1], [666, 334]),
    ([1, 2], [333, 667]),
    ([3], [1000]),
])
def test_refund_share_orders(steps, refunds):
    done, got = 0, []
    for k in steps:
        got.append(refund_share(1000, 3, done, k))
        done += k
    assert got == refunds
    assert sum(got) == 1000


def test_refund_share_refuses_too_many():
    with pytest.raises(ReturnPlanError, match="cannot return 2 of 3"):
        refund_share(1000, 3, 2, 2)


# --- gateway price ---------------------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = ("import argparse, sys; from gateway import _cmd_price as c; p = argparse.ArgumentParser(); "
           "c.add_arguments(p); sys.exit(c.run(p.parse_args()))")

RULES_TOML = """
version = 3
[body.ceiling]
default_max_pct_bp = 3000
[body.ceiling.by_category]
implant = 0
[body.points]
earn_per_cents = 100
earn_points = 1
[body.points.tier_multiplier_bp]
gold = 20000
[[body.rules]]
id = "P-7"
version = 2
kind = "percent_off"
params = { pct_bp = 1000 }
target = { skus = ["SKU-1"] }
when = { weekdays = [2], minutes = [[1080, 1140]] }
[[body.rules]]
id = "P-9"
version = 1
kind = "percent_off"
params = { pct_bp = 5000 }
target = { categories = ["implant"] }
"""

# 2026-11-24 is a Tuesday (2); 18:30 is minute 1110, inside [1080, 1140).
BASKET = {"lines": [{"sku": "SKU-1", "qty": 2, "unit_cents": 1990, "category": "consumable"},
                    {"sku": "IMP-1", "qty": 1, "unit_cents": 50000, "category": "implant"}],
          "member": "M00042", "tier": "gold", "time": "2026-11-24T18:30:00", "timezone": "Asia/Shanghai"}


def run_price(tmp_path, rules_text: str, basket, *extra):
    import json
    import subprocess
    import sys

    rules = tmp_path / "rules.toml"
    rules.write_text(rules_text)
    basket_file = tmp_path / "basket.json"
    basket_file.write_text(basket if isinstance(basket, str) else json.dumps(basket))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = ROOT
    return subprocess.run([sys.executable, "-c", HARNESS, "--rules", str(rules), "--basket", str(basket_file), *extra],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)


def test_price_command_explains(tmp_path):
    # P-7: 10% of 3980 = 398 in its Tuesday 18:00-19:00 window. P-9: 50% of the implant = 25000, all
    # clipped (ceiling 0). Total 3582 + 50000 = 53582; points floor(53582 / 100) * 2 = 1070.
    done = run_price(tmp_path, RULES_TOML, BASKET)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "rule set version 3, member M00042 (gold)" in text
    assert "P-7 (v2): -3.98" in text
    assert "P-9 (v1): clipped by the category's discount ceiling on [1], 250.00 not given" in text
    assert "gross 539.80, discount 3.98, total 535.82" in text
    assert "points earned if paid in cash: 1070" in text


def test_price_command_json_matches_the_engine(tmp_path):
    import json
    import tomllib

    done = run_price(tmp_path, RULES_TOML, {**BASKET, "time": "2026-11-24T19:00:00+08:00"}, "--json")
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    # 19:00 is outside [1080, 1140): P-7 does not apply.
    engine = _promo_py.PromoEngine(tomllib.loads(RULES_TOML)["body"], 3)
    expected = engine.price(BASKET["lines"], member={"id": "M00042", "tier": "gold"}, ts_ms=1_795_518_000_000,
                            weekday=2, minute=1140)
    assert got == {**expected, "points_earned": 1078}  # floor(53980 / 100) = 539, x 2
    assert got["lines"][0]["promos"] == []


def test_price_command_refuses_bad_files(tmp_path):
    done = run_price(tmp_path, RULES_TOML.replace("pct_bp = 1000", "pct_bp = 20000"), BASKET)
    assert done.returncode == 2
    assert "price: rules: rules[0] (id 'P-7'): params.pct_bp must be an integer 0..10000" in done.stderr
    done = run_price(tmp_path, RULES_TOML, '{"lines": [}')
    assert done.returncode == 2
    assert "not valid JSON" in done.stderr and "line 1 column 12" in done.stderr


@pytest.mark.parametrize("basket, fragment", [
    ({"lines": [{"sku": "A", "qty": 0, "unit_cents": 1}]}, "basket: lines[0].qty must be an integer"),
    ({"items": []}, "basket: unknown key 'items'"),
    ({"lines": [], "time": "yesterday"}, "basket.time: 'yesterday' is not an ISO 8601"),
    ({"lines": [], "time": "2026-11-24T10:00:00", "timezone": "Mars/Base"}, "unknown timezone 'Mars/Base'"),
    ({"lines": [], "tier": "gold"}, "basket.tier needs basket.member"),
    ({"lines": [], "coupons": "X"}, "basket.coupons must be a list of strings"),
    ({"lines": [], "channel": "ECR"}, "basket.channel must be one of ecr, pos, csv, got 'ECR'"),
    ([], "basket: must be a map with lines"),
])
def test_price_basket_problems(tmp_path, basket, fragment):
    import json

    from gateway._cmd_price import PriceInputError, price_files

    rules = tmp_path / "r.json"
    rules.write_text(json.dumps({"rules": []}))
    path = tmp_path / "b.json"
    path.write_text(json.dumps(basket))
    with pytest.raises(PriceInputError) as info:
        price_files(str(rules), str(path))
    assert any(fragment in p for p in info.value.problems), info.value.problems


def test_price_missing_file(tmp_path):
    from gateway._cmd_price import PriceInputError, price_files

    with pytest.raises(PriceInputError, match=r"rules file .*nope\.json: No such file"):
        price_files(str(tmp_path / "nope.json"), str(tmp_path / "b.json"))
