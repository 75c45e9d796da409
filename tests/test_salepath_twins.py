"""The sale path's twins: random baskets (a terminal's, and a POS file's in slices) against a seeded
store give the same answers and the same rows, byte for byte, in both flavours; the compiled
shortcuts agree with the reference they skip; the open alerts kept in memory follow commits and
rollbacks."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from core_ext import Request
from core_ext._request_checks import check_request
from core_ext._errors import Refused

from ._data import GTIN_STRIPS, GTIN_THERMO
from ._twins import twins

FLAVOURS = twins("salepath")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOTH = len(FLAVOURS) > 1
needs_both = pytest.mark.skipif(not BOTH, reason="the compiled twin is not built in a pure-Python run")

CODES = ["SKU-1", "SKU-2", "SKU-3", "SKU-4", GTIN_STRIPS, "4711", "B-100", "NOPE"]
LOTS = [None, None, "A1", "B2", "C3", "L1", "ZZ"]
SERIALS = [None, None, None, "S1", "S2", "S9"]


@st.composite
def _line(draw) -> dict:
    line = {"code": draw(st.sampled_from(CODES)), "qty": draw(st.sampled_from([1, 1, 2, 3, 7, 40]))}
    for name, choices in (("lot", LOTS), ("serial", SERIALS)):
        value = draw(st.sampled_from(choices))
        if value is not None:
            line[name] = value
    return line


@st.composite
def _request(draw, n: int) -> dict:
    kind = draw(st.sampled_from(["sale", "sale", "sale", "quote", "return", "receipt"]))
    rid = f"r{n}"
    if kind == "receipt":
        sku, lot, expiry = draw(st.sampled_from([("SKU-1", "A1", "2027-03-31"), ("SKU-1", "N9", "2026-12-01"),
                                                  ("SKU-2", None, None), ("SKU-4", None, None)]))
        return {"kind": kind, "source": "erp", "body": {"id": rid, "sku": sku, "lot": lot, "expiry": expiry,
                                                         "qty": draw(st.integers(1, 30))}}
    if kind == "return":
        orig = f"r{draw(st.integers(0, max(n - 1, 0)))}"
        return {"kind": kind, "body": {"t": "return", "id": rid, "orig": orig,
                                       "lines": [{"sku": draw(st.sampled_from(["SKU-1", "SKU-2", "SKU-4"])), "qty": 1}]}}
    body = {"t": kind, "id": rid, "lines": draw(st.lists(_line(), min_size=1, max_size=4))}
    member = draw(st.sampled_from([None, "M1", "M2", "M9"]))
    if member:
        body["member"] = member
    for name, choices in (("lane", [None, None, "", "L1"]), ("coupons", [None, None, [], ["SPRING"], "SPRING"])):
        value = draw(st.sampled_from(choices))
        if value is not None:
            body[name] = value
    request = {"kind": kind, "body": body}
    if kind == "sale":
        pay = draw(st.sampled_from(["exact", "exact", "points", "cash"]))
        if pay == "cash":
            body["payments"] = [{"method": "cash", "cents": draw(st.sampled_from([0, 1990, 5000]))}]
        else:
            # Exact: paid at the quoted total, in cash or with up to 500 cents of it in points.
            request["pay"] = pay
    if kind == "sale" and n and draw(st.integers(0, 9)) == 0:
        body["id"] = f"r{n - 1}"  # a repeat, or a conflict with the one before
    return request


@st.composite
def scenarios(draw) -> dict:
    count = draw(st.integers(1, 24))
    requests = [draw(_request(n)) for n in range(count)]
    groups, i = [], 0
    while i < count:
        size = draw(st.integers(1, 6))
        groups.append(requests[i:i + size])
        i += size
    _add_file_slices(draw, groups)
    recall = draw(st.sampled_from([None, {"recall_id": "R-1", "sku": "SKU-1", "lot": "B2", "reason": "label"},
                                   {"recall_id": "R-2", "sku": "SKU-4", "lot": None}]))
    policy = {"negative_stock": draw(st.sampled_from(["allow", "refuse"])),
              "expiry_warn_days": draw(st.sampled_from([30, 60, 400]))}
    return {"policy": policy, "recall": recall, "groups": groups}


def _add_file_slices(draw, groups: list) -> None:
    """A POS file's baskets (some bringing goods back, some with a member or a payment), in slices
    put into the groups in order: a file's baskets go through `record_sale`, not a terminal's sale."""
    baskets = draw(st.lists(st.lists(_line(), min_size=1, max_size=3), max_size=6))
    docs = []
    for i, lines in enumerate(baskets):
        for line in lines:
            if draw(st.integers(0, 5)) == 0:
                line["qty"] = -line["qty"]
        doc = {"t": "sale", "id": f"{'ab' * 8}:T{i}", "rows": list(range(2, 2 + len(lines))), "lines": lines}
        for name, choices in (("member", [None, None, "M1", "M9"]), ("payment", [None, None, "card"])):
            value = draw(st.sampled_from(choices))
            if value is not None:
                doc[name] = value
        docs.append(doc)
    at = group = 0
    while at < len(docs):
        size = draw(st.integers(1, 3))
        group = draw(st.integers(group, len(groups)))  # a slice never goes before the one cut before it
        if group == len(groups):
            groups.append([])
        body = {"file": "day.csv", "hash": "ab" * 32, "baskets": len(docs),
                "rows": sum(len(d["lines"]) for d in docs), "first": at, "docs": docs[at:at + size]}
        groups[group].append({"kind": "csv_slice", "source": "legacy", "channel": "csv", "body": body})
        at += size


class _Worker:
    def __init__(self, env: dict):
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        child_env.update(env, PYTHONPATH=ROOT)
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.salepath_worker"], cwd=ROOT, env=child_env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, scenario: dict) -> dict:
        self.proc.stdin.write(json.dumps(scenario) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the worker died (its error is above)"
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def workers():
    pair = (_Worker({"GATEWAY_REQUIRE_EXTENSIONS": "1"}), _Worker({"GATEWAY_PURE_PYTHON": "1"}))
    yield pair
    for worker in pair:
        worker.close()


@needs_both
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=scenarios())
def test_random_baskets_give_the_same_answers_and_rows_in_both_flavours(workers, scenario):
    compiled, pure = (worker.run(scenario) for worker in workers)
    assert (compiled["flavour"], pure["flavour"]) == ("cython", "python")
    assert compiled["answers"] == pure["answers"]
    assert compiled["tables"] == pure["tables"]


def test_the_scenarios_reach_what_they_are_meant_to_compare(workers):
    # A fixed scenario: sales that succeed, an unallocated sale raising an alert, a refusal, a repeat.
    scenario = {"policy": {"negative_stock": "allow"}, "recall": None, "groups": [
        [{"kind": "sale", "pay": "exact", "body": {"id": "s1", "lines": [{"code": "SKU-1", "qty": 3}]}},
         {"kind": "sale", "pay": "exact", "body": {"id": "s2", "lines": [{"code": "SKU-4", "qty": 120}]}}],
        [{"kind": "sale", "body": {"id": "s3", "lines": [{"code": "NOPE", "qty": 1}], "payments": []}},
         {"kind": "sale", "pay": "exact", "body": {"id": "s1", "lines": [{"code": "SKU-1", "qty": 3}]}}],
    ]}
    result = workers[1].run(json.loads(json.dumps(scenario)))
    flat = [a for group in result["answers"] for a in (group if isinstance(group, list) and group and isinstance(group[0], list) else [group])]
    sales = [body for body, _replayed in (a for a in flat if isinstance(a, list))]
    assert [s["ok"] for s in sales] == [True, True, False, True]
    assert [replayed for _b, replayed in (a for a in flat if isinstance(a, list))] == [False, False, False, True]
    assert result["tables"]["alerts"], "the sale beyond stock raised its unallocated alert"
    if BOTH:
        assert workers[0].run(json.loads(json.dumps(scenario))) == {**result, "flavour": "cython"}


def test_a_member_paying_in_points_with_a_coupon_and_a_lane_is_sold_alike(workers):
    # What the compiled outline hands to the reference (points redeemed) or does itself (a coupon,
    # a lane's scanned basket let go), reached for certain rather than by chance.
    scan = {"kind": "scan", "source": "scanner1", "body": {"id": "sc1", "role": "lane", "lane": "L1",
                                                           "gtin": GTIN_THERMO, "code": GTIN_THERMO}}
    scenario = {"policy": {"negative_stock": "allow"}, "recall": None, "groups": [[scan], [
        {"kind": "sale", "pay": "points", "body": {"id": "s1", "member": "M1", "coupons": ["spring"], "lane": "L1",
                                                   "lines": [{"code": "SKU-2", "qty": 2}]}}]]}
    result = workers[1].run(json.loads(json.dumps(scenario)))
    [[scanned, _]], quoted, [[sold, _replayed]] = result["answers"]
    assert scanned["ok"] and scanned["lines"] == 1, scanned
    assert sold["ok"], sold
    assert result["tables"]["baskets"] == [], "the sale let the lane's basket go"
    assert [p["id"] for p in sold["lines"][0]["promos"]] == ["C-1"]
    assert sold["total_cents"] == quoted["total_cents"] > 500  # so 500 points are redeemed (a point is a cent)
    assert sold["points_balance"] == 1000 - 500 + sold["points_earned"]
    if BOTH:
        assert workers[0].run(json.loads(json.dumps(scenario))) == {**result, "flavour": "cython"}


# --- the compiled shortcuts agree with the reference ------------------------------------------

_TEXT = st.one_of(st.none(), st.integers(-3, 3), st.booleans(), st.text(max_size=70),
                  st.sampled_from(["", "A1", "x\x1dy", "\u202e", "é" * 65, "\x7f"]))


class _Map(dict):
    """A map that is not exactly a dict, as a decoder other than the devices' could give."""


@st.composite
def _bodies(draw) -> dict:
    lines = draw(st.one_of(st.none(), st.just([]), st.text(max_size=3), st.lists(st.one_of(
        st.fixed_dictionaries({}, optional={"code": _TEXT, "sku": _TEXT, "qty": st.one_of(_TEXT, st.integers(-1, 2_000_000)),
                                            "lot": _TEXT, "serial": _TEXT,
                                            "expiry": st.one_of(_TEXT, st.sampled_from(["2027-02-30", "2027-02-03"]))}),
        st.integers()), max_size=3)))
    if lines and isinstance(lines, list) and draw(st.booleans()):
        lines = [_Map(line) if isinstance(line, dict) else line for line in lines]  # a map of another type
    body = {"id": draw(_TEXT), "lines": lines}
    for name in ("coupons", "member", "lane", "payments"):
        if draw(st.booleans()):
            body[name] = draw(st.one_of(_TEXT, st.lists(_TEXT, max_size=3), st.lists(
                st.fixed_dictionaries({}, optional={"method": _TEXT, "cents": _TEXT}), max_size=2)))
    return body


def _accepted(kind: str, body) -> bool:
    try:
        check_request(kind, body)
    except Refused:
        return False
    return True


@pytest.mark.parametrize("salepath", FLAVOURS)
@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(["quote", "sale"]), body=_bodies())
def test_the_request_shape_shortcut_says_yes_exactly_when_the_checks_do(salepath, kind, body):
    assert salepath.basket_well_formed(kind, body) == _accepted(kind, body)


@needs_both
@settings(max_examples=300, deadline=None)
@given(body=_bodies())
def test_the_basket_lines_are_accepted_and_refused_alike(body):
    outcomes = []
    for salepath in (f.values[0] for f in FLAVOURS):
        try:
            outcomes.append(("ok", salepath.basket_lines(body)))
        except Refused as exc:
            outcomes.append((exc.code, exc.message))
    assert outcomes[0] == outcomes[1]


_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.text(max_size=5),
                                 st.binary(max_size=3), st.floats(allow_nan=False)),
                       lambda inner: st.one_of(st.lists(inner, max_size=3),
                                               st.dictionaries(st.one_of(st.text(max_size=3), st.integers(0, 3)),
                                                               inner, max_size=3)), max_leaves=12)


@needs_both
@settings(max_examples=300, deadline=None)
@given(body=st.dictionaries(st.text(max_size=4), _VALUES, max_size=5))
def test_the_body_hash_is_the_same_in_both_flavours(body):
    outcomes = []
    for salepath in (f.values[0] for f in FLAVOURS):
        try:
            outcomes.append(salepath.body_hash(body))
        except Refused as exc:
            outcomes.append(exc.message)
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("salepath", FLAVOURS)
def test_the_body_hash_leaves_out_the_transport_and_key_order(salepath):
    # The compiled digest writes the canonical bytes itself: the same as the reference's for a
    # sale as terminals send it, whatever the order of its keys, with or without its `t`.
    from core_ext import _salepath_py
    body = {"t": "sale", "id": "s1", "lines": [{"qty": 2, "code": "SKU-1", "lot": "L\u00e9"}, {"sku": "SKU-2", "qty": 1}],
            "payments": [{"method": "cash", "cents": 1999}], "member": None, "coupons": ["C1"]}
    same = {k: body[k] for k in reversed(list(body)) if k != "t"}
    assert salepath.body_hash(body) == salepath.body_hash(same) == _salepath_py.body_hash(body)
    assert salepath.body_hash(body) != salepath.body_hash({**body, "payments": [{"method": "cash", "cents": 2000}]})


PROMO_FLAVOURS = twins("promo")


@pytest.mark.parametrize("promo", PROMO_FLAVOURS)
def test_a_priced_line_gives_the_engine_the_event_and_the_answer_their_own_shapes(promo):
    line = promo.PricedLine("SKU-1", 3, 500, 1500, 210, [["P-1", 2, 150], ["P-2", 1, 60]])
    assert line.net_cents == 1290
    assert list(line.to_doc().items()) == [
        ("sku", "SKU-1"), ("qty", 3), ("unit_cents", 500), ("gross_cents", 1500), ("discount_cents", 210),
        ("net_cents", 1290), ("promos", [{"id": "P-1", "version": 2, "cents": 150}, {"id": "P-2", "version": 1, "cents": 60}])]
    quoted = line.answer_doc()
    assert "allocations" not in quoted and quoted["promos"] == [{"id": "P-1", "cents": 150}, {"id": "P-2", "cents": 60}]
    line.lot, line.serial, line.category = "L1", None, "cat-1"
    line.allocations = [{"lot": "L1", "expiry": "2027-01-31", "qty": 3}]
    event = line.event_doc()
    assert list(event) == ["sku", "qty", "unit_cents", "gross_cents", "discount_cents", "net_cents", "promos", "lot",
                           "serial", "category", "allocations"]
    again = promo.PricedLine.of_event(event)
    assert again.event_doc() == event and again.answer_doc() == line.answer_doc()
    assert again.answer_doc()["allocations"] == line.allocations
    priced = promo.Priced(7, [line], 1500, 210, [])
    assert priced.total_cents == 1290
    assert priced.to_doc() == {"ruleset": 7, "lines": [line.to_doc()], "gross_cents": 1500, "discount_cents": 210,
                               "total_cents": 1290, "trace": []}


_EVENT_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**65, 2**65), st.text(max_size=4),
                          st.sampled_from(["\ud800", "é"]), st.binary(max_size=2), st.floats(allow_nan=False))


@pytest.mark.parametrize("salepath", FLAVOURS)
@settings(max_examples=150, deadline=None)
@given(member=_EVENT_VALUES, tier=_EVENT_VALUES, lane=st.one_of(st.none(), st.text(max_size=3)),
       trace=st.lists(st.dictionaries(st.text(max_size=3), _EVENT_VALUES, max_size=3), max_size=3),
       lots=st.lists(st.one_of(st.none(), st.text(max_size=3)), min_size=2, max_size=2),
       cents=st.integers(0, 2**40), ts_ms=st.integers(0, 2**45))
def test_a_sale_event_packs_to_its_document_bytes(salepath, member, tier, lane, trace, lots, cents, ts_ms):
    # The compiled sale path writes the event's bytes from the record; they must be msgpack's of
    # the reference's document, whatever the values (those it cannot write go msgpack's way).
    from core_ext import Move, _salepath_py
    import importlib
    from core_ext._store import _pack
    # The records of the sale path's own flavour (the compiled one takes only its own).
    module = importlib.import_module(salepath.__name__.replace("_salepath_", "_promo_"))
    lines = [module.PricedLine("SKU-1", 2, cents, 2 * cents, 5, [["P-1", 3, 5]], lots[0], None, "cat",
                               [{"lot": lots[0], "expiry": None, "qty": 2}]),
             module.PricedLine("SKU-\u00e9", 1, 7, 7, 0, [], lots[1], "SER", None, [])]
    priced = module.Priced(4, lines, 2 * cents + 7, 5, trace)
    moves = [Move("SKU-1", lots[0], -2, None, ()), Move("SKU-\u00e9", lots[1], -1, "2027-01-31", ("SER",))]
    args = ("lane1:s1", "lane1", "ecr", "S1", ts_ms, 3, 600, priced, member, tier, ["C1"],
            [{"method": "cash", "cents": 2 * cents + 2}], (12, 0, 0), moves, lane)
    if salepath is _salepath_py:
        pytest.skip("the reference builds the document itself: nothing to compare")
    event = salepath.sale_event(*args)
    reference = _salepath_py.sale_event(*args)
    assert event.to_doc() == reference
    event.seq = 41
    outcomes = []
    for pack in (event.pack, lambda: _pack({**reference, "seq": 41})):
        try:
            outcomes.append(pack())
        except (ValueError, OverflowError, TypeError) as exc:  # what msgpack refuses, refused alike
            outcomes.append(type(exc))
    assert outcomes[0] == outcomes[1]


_TRACE_RULES = [  # each kind of trace entry: capped, clipped by the ceiling, lost its group, no saving
    {"id": "CAP", "version": 3, "kind": "percent_off", "params": {"pct_bp": 5000}, "max_discount_cents": 400,
     "target": {"skus": ["A"]}},
    {"id": "E1", "version": 2**40, "kind": "percent_off", "params": {"pct_bp": 1000}, "exclusive_group": "G\u00e9",
     "target": {"skus": ["B"]}},
    {"id": "E2", "version": 1, "kind": "percent_off", "params": {"pct_bp": 2000}, "exclusive_group": "G\u00e9",
     "target": {"skus": ["B"]}},
    {"id": "T", "version": 0, "kind": "qty_tier", "params": {"mode": "all_units", "tiers": [[9, 1000]]},
     "target": {"skus": ["B"]}},
]


@needs_both
def test_a_sale_events_trace_is_written_from_the_engines_entries_as_msgpack_packs_the_maps():
    # The compiled engine keeps its trace as C entries and the event writes them straight; the
    # bytes must be those of the reference's maps, which the compiled record also gives when asked.
    from core_ext import _promo_c, _promo_py, _salepath_c, _salepath_py
    from core_ext._store import _pack
    lines = [{"sku": "A", "qty": 1, "unit_cents": 1000, "category": "c"},
             {"sku": "B", "qty": 2, "unit_cents": 700, "category": "c"}]
    body = {"rules": _TRACE_RULES, "ceiling": {"default_max_pct_bp": 2000}}
    compiled = _promo_c.PromoEngine(body, 5).price_typed(lines)
    reference = _promo_py.PromoEngine(body, 5).price_typed(lines)
    args = ("lane1:s1", "lane1", "ecr", "S1", 1_700_000_000_000, 3, 600)
    rest = (None, None, [], [{"method": "cash", "cents": 1}], (0, 0, 0), [], None)
    event = _salepath_c.sale_event(*args, compiled, *rest)
    event.seq = 41
    written = event.pack()  # before anything asks for the maps: from the entries
    expected = _pack({**_salepath_py.sale_event(*args, reference, *rest), "seq": 41})
    assert written == expected
    assert {t["reason"] for t in reference.trace} == {"capped", "ceiling", "exclusive_group", "qty_tier_not_reached"}
    assert compiled.trace == reference.trace
    assert event.pack() == expected  # and again from the maps, now made


# --- open alerts in memory ---------------------------------------------------------------------

def _alert_keys(store) -> set:
    with store.read() as tx:
        return {key for key, _alert in tx.items("alerts")}


async def test_the_open_alerts_in_memory_follow_commits_and_rollbacks(core):
    from core_ext._select import salepath
    store = core.store
    sold = await core.request("sale", {"id": "S1", "lines": [{"code": "SKU-4", "qty": 130}],
                                       "payments": [{"method": "cash", "cents": 130 * 350}]})
    assert sold.body["ok"], sold.body
    opened = _alert_keys(store)
    assert b"SKU-4\x00unallocated\x00" in opened
    tx = store.begin(write=True)
    assert salepath.open_alerts(tx).keys == opened
    # A nested transaction clearing the alert, then rolled back: memory and table keep it.
    child = tx.child()
    child_state = salepath.open_alerts(child)
    salepath.sync_alerts(child, {}, [b"SKU-4\x00unallocated\x00"], 0)
    assert b"SKU-4\x00unallocated\x00" not in child_state.keys
    assert child.get("alerts", b"SKU-4\x00unallocated\x00") is None
    child.abort()
    assert salepath.open_alerts(tx).keys == opened
    # The same in the outer transaction, aborted whole.
    salepath.sync_alerts(tx, {}, [b"SKU-4\x00unallocated\x00"], 0)
    tx.abort()
    assert _alert_keys(store) == opened
    # A receipt settling the unallocated units clears the alert, in memory and on disk.
    receipt = await core.request("receipt", {"id": "R1", "sku": "SKU-4", "lot": None, "expiry": None, "qty": 40},
                                 source="erp")
    assert receipt.body["ok"], receipt.body
    assert b"SKU-4\x00unallocated\x00" not in _alert_keys(store)
    tx = store.begin(write=True)
    assert salepath.open_alerts(tx).keys == _alert_keys(store)
    tx.abort()
