"""PROMO/1 on random rule sets and baskets: the two flavours agree to the cent and the invariants hold.

Invariants: sum(net) == total; no line below zero; no line's discount past its ceiling; a line's
discount is the sum of its promos; partial returns in any order refund exactly what was paid and
settle exactly the points earned and redeemed.
"""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from core_ext import _promo_py
from core_ext._returns import plan_return, refund_share

from .test_promo_scenarios import FLAVOURS

ENGINES = [p.values[0] for p in FLAVOURS]
SKUS = ["S0", "S1", "S2", "S3", "S4"]
CATEGORIES = ["c0", "c1", "implant"]
CATEGORY_OF = {"S0": "c0", "S1": "c0", "S2": "c1", "S3": "c1", "S4": "implant"}

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

bp = st.integers(0, 10000)
cents = st.integers(0, 5000)


@st.composite
def params_for(draw, kind: str) -> dict:
    if kind in ("percent_off", "order_percent_off"):
        p = {"pct_bp": draw(bp)}
        if kind == "order_percent_off" and draw(st.booleans()):
            p["min_cents"] = draw(cents)
        return p
    if kind == "amount_off":
        return {"cents": draw(cents)}
    if kind == "fixed_price":
        return {"unit_cents": draw(cents)}
    if kind == "qty_tier":
        mins = sorted(draw(st.sets(st.integers(1, 8), min_size=1, max_size=3)))
        return {"mode": draw(st.sampled_from(["all_units", "incremental"])),
                "tiers": [[m, draw(bp)] for m in mins]}
    if kind == "bundle":
        skus = draw(st.lists(st.sampled_from(SKUS), min_size=1, max_size=3, unique=True))
        p = {"items": [[s, draw(st.integers(1, 3))] for s in skus], "price_cents": draw(st.integers(0, 8000))}
        if draw(st.booleans()):
            p["max_sets"] = draw(st.integers(1, 3))
        return p
    if kind == "buy_x_get_y":
        p = {"buy": draw(st.integers(1, 3)), "get": draw(st.integers(1, 2)), "pct_bp": draw(bp)}
        if draw(st.booleans()):
            p["max_applications"] = draw(st.integers(1, 3))
        return p
    # threshold
    if draw(st.booleans()):
        mins = sorted(draw(st.sets(st.integers(0, 20000), min_size=1, max_size=3)))
        return {"ladder": [[m, draw(cents)] for m in mins]}
    p = {"every_cents": draw(st.integers(1, 5000)), "off_cents": draw(cents)}
    if draw(st.booleans()):
        p["max_times"] = draw(st.integers(1, 4))
    return p


@st.composite
def rules(draw, rid: str) -> dict:
    kind = draw(st.sampled_from(_promo_py.ITEM_KINDS + _promo_py.ORDER_KINDS))
    r = {"id": rid, "version": draw(st.integers(0, 3)), "kind": kind, "params": draw(params_for(kind)),
         "priority": draw(st.integers(-2, 2)), "stackable": draw(st.booleans())}
    target = {}
    if draw(st.integers(0, 2)) == 0:
        target["skus"] = draw(st.lists(st.sampled_from(SKUS), max_size=2, unique=True))
    if draw(st.integers(0, 2)) == 0:
        target["categories"] = draw(st.lists(st.sampled_from(CATEGORIES), max_size=2, unique=True))
    if draw(st.integers(0, 3)) == 0:
        target["exclude_skus"] = draw(st.lists(st.sampled_from(SKUS), max_size=1))
    if target:
        r["target"] = target
    if draw(st.integers(0, 2)) == 0:
        # Groups never mix layers (validation refuses that): item groups and order groups apart.
        layer = "i" if kind in _promo_py.ITEM_KINDS else "o"
        r["exclusive_group"] = layer + draw(st.sampled_from("AB"))
    if draw(st.integers(0, 3)) == 0:
        r["max_discount_cents"] = draw(st.integers(0, 3000))
    if draw(st.integers(0, 4)) == 0:
        r["coupon"] = draw(st.sampled_from(["C1", "c2"]))
    if draw(st.integers(0, 4)) == 0:
        r["who"] = {"members_only": True}
    if draw(st.integers(0, 3)) == 0:
        r["clawback_on_return"] = True
    return r


@st.composite
def bodies(draw) -> dict:
    n = draw(st.integers(0, 8))
    body = {"rules": [draw(rules(f"R{i:02d}")) for i in range(n)],
            "points": {"earn_per_cents": draw(st.integers(1, 300)), "earn_points": draw(st.integers(0, 3)),
                       "tier_multiplier_bp": {"gold": 20000}}}
    if draw(st.booleans()):
        body["ceiling"] = {"default_max_pct_bp": draw(bp),
                           "by_category": {"implant": draw(st.sampled_from([0, 1000, 10000]))}}
    return body


baskets = st.lists(
    st.builds(lambda sku, qty, unit: {"sku": sku, "qty": qty, "unit_cents": unit, "category": CATEGORY_OF[sku]},
              st.sampled_from(SKUS), st.integers(1, 6), st.integers(0, 4000)),
    min_size=0, max_size=6)

contexts = st.fixed_dictionaries({
    "member": st.sampled_from([None, {"id": "M1", "tier": "gold"}, {"id": "M2", "tier": None}]),
    "coupons": st.sampled_from([(), ("C1",), ("C1", "C2")]),
})


def ceiling_of(body: dict, category: str) -> int:
    c = body.get("ceiling") or {}
    return (c.get("by_category") or {}).get(category, c.get("default_max_pct_bp", 10000))


@SETTINGS
@given(bodies(), baskets, contexts)
def test_flavours_agree_and_invariants_hold(body, lines, ctx):
    assert _promo_py.validate_promotions(body) == []
    results = [mod.PromoEngine(body, 3).price(lines, **ctx) for mod in ENGINES]
    for other in results[1:]:
        assert other == results[0]
    result = results[0]
    known = {r["id"]: r["version"] for r in body["rules"]}
    assert result["ruleset"] == 3
    assert sum(l["net_cents"] for l in result["lines"]) == result["total_cents"]
    assert result["gross_cents"] - result["discount_cents"] == result["total_cents"]
    for src, l in zip(lines, result["lines"]):
        assert l["gross_cents"] == src["qty"] * src["unit_cents"]
        assert l["net_cents"] >= 0
        assert l["discount_cents"] == sum(p["cents"] for p in l["promos"])
        assert l["discount_cents"] * 10000 <= l["gross_cents"] * ceiling_of(body, src["category"])
        for p in l["promos"]:
            assert p["cents"] > 0 and known[p["id"]] == p["version"]
    for t in result["trace"]:
        assert known[t["rule"]] == t["version"] and isinstance(t["reason"], str)


@SETTINGS
@given(bodies(), baskets, contexts)
def test_pricing_is_deterministic(body, lines, ctx):
    engine = ENGINES[-1].PromoEngine(body, 1)
    assert engine.price(lines, **ctx) == engine.price([dict(l) for l in lines], **ctx)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**9), st.lists(st.integers(1, 5), min_size=1, max_size=8))
def test_refund_share_adds_up_in_any_order(net, steps):
    n = sum(steps)
    done = total = 0
    for k in steps:
        part = refund_share(net, n, done, k)
        assert part >= 0
        total += part
        done += k
    assert total == net


@st.composite
def return_orders(draw, lines):
    """A random order of partial returns that takes back every unit of every line."""
    left = {i: l["qty"] for i, l in enumerate(lines)}
    orders = []
    while any(left.values()):
        take = {}
        for i in draw(st.lists(st.sampled_from([i for i, q in left.items() if q]), min_size=1, unique=True)):
            take[i] = draw(st.integers(1, left[i]))
            left[i] -= take[i]
        orders.append(take)
    return orders


@SETTINGS
@given(bodies(), baskets.filter(bool), st.data())
def test_returns_in_any_order_refund_what_was_paid(body, lines, data):
    mod = data.draw(st.sampled_from(ENGINES))
    engine = mod.PromoEngine(body, 4)
    member = data.draw(st.sampled_from([None, {"id": "M1", "tier": "gold"}]))
    priced = engine.price(lines, member=member)
    total = priced["total_cents"]
    redeemed = data.draw(st.integers(0, 5)) if member else 0
    redeemed_cents = min(total, redeemed * 10)
    redeemed = redeemed_cents // 10
    earned = engine.points_earned(total - redeemed_cents, member and member["tier"], member is not None)
    sale = {"lines": [{**l, "category": s["category"]} for l, s in zip(priced["lines"], lines)],
            "member": member and member["id"], "tier": member and member["tier"], "coupons": [], "store": "",
            "channel": "ecr", "ts_ms": 0, "local": {"weekday": 1, "minute": 0}, "ruleset": 4,
            "points": {"earned": earned, "redeemed": redeemed, "redeemed_cents": redeemed_cents},
            "refunded_cents": 0, "points_reversed_before": 0, "points_restored_before": 0}
    before: dict[int, int] = {}
    money = restored_cents = 0
    per_line = [0] * len(lines)
    for take in data.draw(return_orders(lines)):
        plan = plan_return(sale, before, take, engine)
        assert plan["refund_cents"] >= 0 and plan["money_refund_cents"] >= 0
        assert sum(p["refund_cents"] for p in plan["lines"]) == plan["refund_cents"]
        assert sorted(p["index"] for p in plan["lines"]) == sorted(take)
        sale["refunded_cents"] += plan["refund_cents"]
        sale["points_reversed_before"] += plan["points_reversed"]
        sale["points_restored_before"] += plan["points_restored"]
        money += plan["money_refund_cents"]
        restored_cents += plan["points_restored_cents"]
        for p in plan["lines"]:
            per_line[p["index"]] += p["refund_cents"]
        for i, k in take.items():
            before[i] = before.get(i, 0) + k
    assert sale["refunded_cents"] == total
    if not any(p["id"] in engine.clawback_ids for l in sale["lines"] for p in l["promos"]):
        # Without a clawback every line, not only the basket, gives back exactly its net.
        assert per_line == [l["net_cents"] for l in sale["lines"]]
    assert sale["points_reversed_before"] == earned
    assert sale["points_restored_before"] == redeemed
    assert restored_cents == redeemed_cents and money == total - redeemed_cents


# Outside input: whatever the ERP's document decodes to, validation answers with a list of errors and
# loading raises only PromoRuleError.
json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 20000) | st.text(max_size=6)
    | st.sampled_from(["percent_off", "bundle", "threshold", "qty_tier", "buy_x_get_y", "ladder", "items"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["rules", "ceiling", "points", "id", "version", "kind", "params", "pct_bp", "tiers",
                         "mode", "items", "ladder", "target", "skus", "when", "minutes", "who", "x"]),
        inner, max_size=5),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(json_like)
def test_validation_never_crashes(doc):
    for mod in ENGINES:
        errors = mod.validate_promotions(doc)
        assert isinstance(errors, list) and all(isinstance(e, str) for e in errors)
        if doc is None:
            continue  # the engine reads None as "no promotions"
        try:
            mod.PromoEngine(doc, 1)
        except mod.PromoRuleError as exc:
            assert exc.errors == errors and errors
        else:
            assert errors == []


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["kind", "params", "id", "version", "target", "when", "where", "who",
                                        "coupon", "priority", "stackable", "exclusive_group"]),
                       json_like, max_size=8))
def test_rule_validation_never_crashes(r):
    errors = _promo_py.validate_promotions({"rules": [r]})
    assert isinstance(errors, list)
    assert all(e.startswith("rules[0]") for e in errors)


class _Qty(int):
    """An int of another type: the compiled engine leaves such a basket to the reference's check."""


@SETTINGS
@given(bodies(), baskets, contexts, st.booleans())
def test_the_compiled_engine_prices_resolved_lines_as_the_maps_they_stand_for(body, lines, ctx, odd):
    # The compiled sale path hands the engine its resolved lines (`ResolvedLine`) rather than maps.
    from core_ext._records import Item
    for mod in ENGINES:
        if mod is _promo_py:
            continue  # the reference prices maps (`_salepath_py.engine_lines`)
        resolved = [mod.ResolvedLine(i, line["sku"], Item(line["sku"], "", line["category"], line["unit_cents"], False,
                                                          False, True, 0, 0),
                                     _Qty(line["qty"]) if odd else line["qty"], None, None, None)
                    for i, line in enumerate(lines)]
        engine = mod.PromoEngine(body, 3)
        assert engine.price_typed(resolved, **ctx).to_doc() == engine.price(lines, **ctx)
