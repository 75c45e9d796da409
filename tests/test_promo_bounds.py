"""PROMO/1 where the small random cases of test_promo_properties do not reach: amounts and quantities
near the engine's bounds (the compiled twin switches from 64-bit to 128-bit products above a basket
gross of 3,037,000,499 cents), many rules on one SKU, long baskets, and malformed input. In every case
the flavours agree to the cent, the trace included, or raise the same exception with the same message.
"""
from __future__ import annotations

import enum

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from core_ext import _promo_py

from .test_promo_properties import CATEGORY_OF, ENGINES, SKUS, bodies, ceiling_of, contexts

MAX_CENTS = _promo_py.MAX_CENTS
MAX_QTY = _promo_py.MAX_QTY
SAFE_GROSS = 3_037_000_499  # floor(sqrt(2**63 - 1)), where the compiled engine's narrow mode ends

SLOW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CENT_KEYS = ("cents", "unit_cents", "price_cents", "every_cents", "off_cents", "min_cents")


def outcome(mod, body, lines, **ctx):
    """The answer, or the exception's class and message."""
    try:
        return mod.PromoEngine(body, 2).price(lines, **ctx)
    except Exception as exc:  # noqa: BLE001 - the point is to compare whatever happens
        return (type(exc), str(exc))


def assert_same(body, lines, **ctx):
    """Both flavours give the same outcome, down to key order and value types (what a sale stores)."""
    results = [outcome(mod, body, lines, **ctx) for mod in ENGINES]
    for other in results[1:]:
        assert other == results[0]
        assert repr(other) == repr(results[0])
    return results[0]


def assert_invariants(body, lines, result):
    assert sum(l["net_cents"] for l in result["lines"]) == result["total_cents"]
    for src, l in zip(lines, result["lines"]):
        assert l["gross_cents"] == src["qty"] * src["unit_cents"]
        assert 0 <= l["net_cents"]
        assert l["discount_cents"] == sum(p["cents"] for p in l["promos"])
        assert l["discount_cents"] * 10000 <= l["gross_cents"] * ceiling_of(body, src["category"])


def scaled(body: dict, factor: int) -> dict:
    """`body` with every amount in cents multiplied by `factor` (steps stay increasing)."""
    out = {**body, "rules": []}
    for r in body["rules"]:
        p = dict(r["params"])
        for key in CENT_KEYS:
            if isinstance(p.get(key), int):
                p[key] *= factor
        if r["kind"] == "threshold" and "ladder" in p:
            p["ladder"] = [[a * factor, b * factor] for a, b in p["ladder"]]
        r = {**r, "params": p}
        if r.get("max_discount_cents") is not None:
            r["max_discount_cents"] *= factor
        out["rules"].append(r)
    return out


@st.composite
def big_baskets(draw):
    """1..6 lines with quantities and prices near the bounds, the basket's gross at most MAX_CENTS."""
    n = draw(st.integers(1, 6))
    lines = []
    room = MAX_CENTS
    for _ in range(n):
        sku = draw(st.sampled_from(SKUS))
        qty = draw(st.sampled_from([1, 2, 3, 999_999, MAX_QTY]) | st.integers(1, MAX_QTY))
        most = room // qty
        unit = draw(st.sampled_from([0, 1, most, most // 2, most // 3, SAFE_GROSS // qty, SAFE_GROSS // qty + 1])
                    | st.integers(0, most))
        unit = min(unit, most)
        room -= qty * unit
        lines.append({"sku": sku, "qty": qty, "unit_cents": unit, "category": CATEGORY_OF[sku]})
    return lines


@SLOW
@given(bodies(), st.sampled_from([1, 1000, 10**6, 10**9, 5 * 10**9]), big_baskets(), contexts)
def test_amounts_near_the_bounds_agree(body, factor, lines, ctx):
    body = scaled(body, factor)
    assert _promo_py.validate_promotions(body) == []
    result = assert_same(body, lines, **ctx)
    assert isinstance(result, dict), result
    assert_invariants(body, lines, result)


@pytest.mark.parametrize("gross", [SAFE_GROSS - 1, SAFE_GROSS, SAFE_GROSS + 1, MAX_CENTS])
def test_either_side_of_the_narrow_bound(gross):
    # Two lines sharing a 1/3 discount: the spread multiplies the amount by a line's net, which
    # overflows 64 bits past the bound; a buy-X-get-Y compares nets per unit by cross-multiplying.
    lines = [{"sku": "S0", "qty": 3, "unit_cents": gross // 7, "category": "c0"},
             {"sku": "S1", "qty": 1, "unit_cents": gross - 3 * (gross // 7), "category": "c0"}]
    body = {"rules": [
        {"id": "B", "version": 1, "kind": "buy_x_get_y", "params": {"buy": 1, "get": 1, "pct_bp": 3333}},
        {"id": "P", "version": 1, "kind": "percent_off", "params": {"pct_bp": 3333}},
        {"id": "T", "version": 1, "kind": "threshold", "params": {"every_cents": 7, "off_cents": 3}},
    ]}
    result = assert_same(body, lines)
    assert result["gross_cents"] == gross
    assert_invariants(body, lines, result)
    # S1 is dearer per unit, so it qualifies and two S0 units are rewarded; P and T reach both lines.
    assert [[p["id"] for p in l["promos"]] for l in result["lines"]] == [["B", "P", "T"], ["P", "T"]]


@st.composite
def crowded(draw):
    """Up to 150 rules, every one on SKU S0 (or its category), against baskets of S0 lines."""
    body = draw(bodies())
    n = draw(st.integers(20, 150))
    template = body["rules"] or [{"id": "X", "version": 1, "kind": "percent_off", "params": {"pct_bp": 100}}]
    rules = []
    for i in range(n):
        r = dict(template[i % len(template)])
        r["id"] = f"R{i:03d}"
        if r["kind"] == "bundle":
            r["params"] = {**r["params"], "items": [["S0", 1 + i % 3]]}
        r["target"] = {"skus": ["S0"]} if i % 3 else {"categories": ["c0"]}
        r["priority"] = draw(st.integers(-2, 2))
        if r.get("exclusive_group") is not None:
            r["exclusive_group"] = r["exclusive_group"][0] + str(i % 4)
        rules.append(r)
    return {**body, "rules": rules}


@SLOW
@given(crowded(), st.lists(st.tuples(st.integers(1, 40), st.integers(0, 5000)), min_size=1, max_size=8), contexts)
def test_many_rules_on_one_sku_agree(body, sizes, ctx):
    assert _promo_py.validate_promotions(body) == []
    lines = [{"sku": "S0", "qty": q, "unit_cents": u, "category": "c0"} for q, u in sizes]
    result = assert_same(body, lines, **ctx)
    assert isinstance(result, dict), result
    assert_invariants(body, lines, result)


long_baskets = st.lists(
    st.builds(lambda sku, qty, unit: {"sku": sku, "qty": qty, "unit_cents": unit, "category": CATEGORY_OF[sku]},
              st.sampled_from(SKUS), st.integers(1, 30), st.integers(0, 4000)),
    min_size=13, max_size=120)


@SLOW
@given(bodies(), long_baskets, contexts)
def test_long_baskets_agree(body, lines, ctx):
    # More than a dozen lines and segments: the compiled engine's merge sorts and spreads past their
    # insertion-sort cut-over.
    result = assert_same(body, lines, **ctx)
    assert isinstance(result, dict), result
    assert_invariants(body, lines, result)


class Qty(enum.IntEnum):
    TWO = 2


class LineDict(dict):
    pass


class Sku(str):
    pass


GOOD = {"sku": "S0", "qty": 2, "unit_cents": 100, "category": "c0"}

odd_values = st.sampled_from([None, True, False, 0, -1, 1, 2, 1.0, 2.5, 10**6, 10**6 + 1, 10**14, 10**14 + 1, 2**63,
                              2**64, -(2**63) - 1, "", "S0", Sku("S0"), Sku(""), Qty.TWO, [], {}, b"S0"])


@st.composite
def odd_lines(draw):
    """Lines that are mostly fine, some field odd, some lines not plain dicts."""
    out = []
    for _ in range(draw(st.integers(0, 4))):
        line = dict(GOOD)
        for key in draw(st.lists(st.sampled_from(["sku", "qty", "unit_cents", "category"]), max_size=2)):
            if draw(st.booleans()):
                line[key] = draw(odd_values)
            else:
                line.pop(key, None)
        kind = draw(st.integers(0, 9))
        out.append(LineDict(line) if kind == 0 else ("S0", 1) if kind == 1 else line)
    return tuple(out) if draw(st.booleans()) else out


odd_coupons = st.sampled_from([(), [], ("C1",), ["c2 "], {"C1"}, frozenset(), "C1", None, 3, ("C1", 3), [Sku("C1")],
                               (b"C1",)])


@settings(max_examples=300, deadline=None)
@given(bodies(), odd_lines(), odd_coupons)
# An int subclass as a quantity: both engines answer it as a plain int.
@example({"rules": [], "points": {"earn_per_cents": 1, "earn_points": 0}},
         [{"sku": "S0", "qty": 2, "unit_cents": 100, "category": "c0"},
          {"sku": "S0", "qty": Qty.TWO, "unit_cents": 100, "category": "c0"}], ())
# A str subclass as a SKU: both engines answer it as a plain str.
@example({"rules": [], "points": {"earn_per_cents": 1, "earn_points": 0}},
         [{"sku": Sku("S0"), "qty": 2, "unit_cents": 100, "category": "c0"}], ())
def test_malformed_baskets_fail_alike(body, lines, coupons):
    assert_same(body, lines, coupons=coupons)


def test_a_str_subclass_sku_is_answered_as_a_plain_str():
    lines = [{"sku": Sku("S0"), "qty": 2, "unit_cents": 100, "category": "c0"}]
    for mod in ENGINES:
        assert type(mod.PromoEngine({"rules": []}, 2).price(lines)["lines"][0]["sku"]) is str


def test_bad_lines_container_and_gross_messages():
    body = {"rules": []}
    for lines in ({"sku": "S0"}, "S0", None, 3):
        assert assert_same(body, lines) == (_promo_py.PromoInputError, "lines must be a list")
    over = [{"sku": "S0", "qty": MAX_QTY, "unit_cents": MAX_CENTS}, {"sku": "S1", "qty": 0, "unit_cents": 1}]
    # Every line is checked before the gross: the second line's qty is named, not the gross.
    assert assert_same(body, over) == (_promo_py.PromoInputError, "lines[1].qty must be an integer 1..1000000")
    assert assert_same(body, over[:1]) == (_promo_py.PromoInputError,
                                           f"the basket's gross exceeds {MAX_CENTS} cents")
    many = [{"sku": "S0", "qty": MAX_QTY, "unit_cents": 0}] * 1001
    assert assert_same(body, many) == (_promo_py.PromoInputError, "the basket holds more than 1000000000 units")


def scoped(key: str, value) -> dict:
    return {"rules": [{"id": "P", "version": 1, "kind": "percent_off", "params": {"pct_bp": 1000}, **{key: value}}]}


@pytest.mark.parametrize("body, ctx", [
    (scoped("where", {"stores": ["S001"]}), {"store": ["S001"]}),
    (scoped("where", {"channels": ["pos"]}), {"channel": {"pos": 1}}),
    (scoped("who", {"tiers": ["gold"]}), {"member": {"id": "M", "tier": ["gold"]}}),
    # The same odd values where no candidate looks at them: nothing is raised.
    ({"rules": []}, {"store": ["S001"], "channel": {}, "member": {"id": "M", "tier": []}}),
    (scoped("who", {"tiers": ["gold"]}), {"store": ["S001"], "channel": {}}),
])
def test_unhashable_context_fails_only_when_a_candidate_needs_it(body, ctx):
    assert_same(body, [dict(GOOD)], **ctx)


@pytest.mark.parametrize("ts_ms, weekday, minute", [
    (2**70, 3, 600), (-(2**70), 3, 600), (1, 2**65, 600), (1, 3, 2**65), (1, 3, -(2**65)), (0, True, 0),
])
def test_huge_times_compare_as_integers(ts_ms, weekday, minute):
    body = scoped("when", {"from_ms": 1, "to_ms": 2**62, "weekdays": [1, 3], "minutes": [[1320, 120]]})
    assert_same(body, [dict(GOOD)], ts_ms=ts_ms, weekday=weekday, minute=minute)
