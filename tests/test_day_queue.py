"""The open day's totals take each appended document into a queue, folded once the request's own
transaction has committed into the group's (or when the group commits): a reader inside the group
still sees every document before it, a rolled-back request takes its documents back out whether or
not they were folded yet, and a group that fails after a fold leaves totals that are read again
from the table."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from core_ext import Request, Store, day_report, recompute_day
from core_ext import _day_figures, _days
from core_ext._day_figures import finish
from core_ext._days import DayTotals, _rule_key
from gateway._app_core import build_core

from ._data import NOW, STORE, apply_master, seed
from ._twins import twins


def sale(rid: str, lane: str = "lane1", qty: int = 1) -> Request:
    return Request("sale", {"t": "sale", "id": rid, "lines": [{"sku": "SKU-2", "qty": qty}],
                            "payments": [{"method": "cash", "cents": 4990 * qty}]}, lane, "ecr")


def count(rid: str, lane: str = "lane1", cash: int = 0) -> Request:
    return Request("drawer_count", {"t": "drawer_count", "id": rid, "counted": {"cash": cash}}, lane, "ecr")


def apply(core, requests) -> list[dict]:
    slots = [[r, None, None] for r in requests]
    core._apply_group(slots)
    return [slot[1].body for slot in slots]


@pytest.fixture
def core(tmp_path):
    store = Store(str(tmp_path / "data"))
    seed(store)
    loop = build_core(store, STORE, clock=lambda: NOW, group_budget_s=float("inf"))
    yield loop
    store.close()


def open_figures(store) -> dict:
    with store.read() as tx:
        return day_report(tx)


def test_a_drawer_count_in_the_same_group_expects_the_sales_before_it(core):
    answers = apply(core, [sale("s1"), sale("s2", qty=2), count("c1", cash=100), sale("s3")])
    assert [a["ok"] for a in answers] == [True, True, True, True]
    assert answers[2]["expected"] == {"cash": 3 * 4990}
    report = open_figures(core.store)
    assert report["to_seq"] == answers[3]["seq"]
    with core.store.read() as tx:
        assert report["lanes"] == recompute_day(tx.events(), report)[0]["lanes"]


def test_a_refused_request_takes_its_documents_out_folded_or_not(core):
    # The count folds the queue (s1) mid-group; the refused sale after it must leave no trace.
    conflict = Request("sale", {"t": "sale", "id": "s1", "lines": [{"sku": "SKU-2", "qty": 5}],
                                "payments": [{"method": "cash", "cents": 5 * 4990}]}, "lane1", "ecr")
    short = Request("sale", {"t": "sale", "id": "s9", "lines": [{"sku": "SKU-2", "qty": 1}],
                             "payments": [{"method": "cash", "cents": 1}]}, "lane1", "ecr")
    answers = apply(core, [sale("s1"), count("c1"), conflict, short, sale("s2")])
    assert [a["ok"] for a in answers] == [True, True, False, False, True]
    lane = open_figures(core.store)["lanes"]["lane1"]
    assert (lane["sales"], lane["payments"]["cash"]["taken"]) == (2, 2 * 4990)


def test_totals_folded_for_a_commit_that_fails_are_read_again_from_the_table(core):
    apply(core, [sale("s1")])
    store = core.store
    tx = store.begin(write=True)
    tx.append_event({"type": "sale", "id": "x:1", "source": "lane1", "gross_cents": 7, "discount_cents": 0,
                     "total_cents": 7, "payments": [{"method": "cash", "cents": 7}], "moves": []})
    state = tx.state(DayTotals)
    state.flush(tx)  # folded as the commit does, then the commit fails before it is durable
    assert state.holder["row"]["lanes"]["lane1"]["net_cents"] == 4990 + 7
    tx.abort()
    answers = apply(core, [sale("s2")])
    assert answers[0]["ok"]
    assert open_figures(store)["lanes"]["lane1"]["net_cents"] == 2 * 4990
    assert store.states[DayTotals] is not state, "the stale totals were loaded again"


def test_a_request_committed_into_the_group_is_folded_then_and_the_groups_rollback_reloads_the_totals(core):
    apply(core, [sale("s1")])
    store = core.store
    tx = store.begin(write=True)
    state = tx.state(DayTotals)
    child = tx.child()
    child.append_event({"type": "sale", "id": "x:1", "source": "lane1", "gross_cents": 7, "discount_cents": 0,
                        "total_cents": 7, "payments": [{"method": "cash", "cents": 7}], "moves": []})
    assert state.holder["queued"], "queued while its own transaction may still roll back"
    child.commit()
    assert state.holder["queued"] == [], "folded once it is in the group's transaction"
    assert state.holder["row"]["lanes"]["lane1"]["net_cents"] == 4990 + 7
    # A later request rolled back leaves what was folded before it alone.
    other = tx.child()
    other.append_event({"type": "sale", "id": "x:2", "source": "lane1", "gross_cents": 5, "discount_cents": 0,
                        "total_cents": 5, "payments": [{"method": "cash", "cents": 5}], "moves": []})
    other.abort()
    assert state.row["lanes"]["lane1"]["net_cents"] == 4990 + 7
    tx.abort()  # the group fails: the folded sale was never durable
    answers = apply(core, [sale("s2")])
    assert answers[0]["ok"]
    assert open_figures(store)["lanes"]["lane1"]["net_cents"] == 2 * 4990
    assert store.states[DayTotals] is not state, "the stale totals were loaded again"


@pytest.mark.parametrize("salepath", twins("salepath"))
def test_fold_day_of_each_flavour_equals_the_reference_fold(salepath, core):
    apply(core, [sale("s1"), sale("s2", lane="lane2", qty=3), count("c1"),
                 Request("return", {"t": "return", "id": "r1", "orig": "s1", "lines": [{"sku": "SKU-2", "qty": 1}]},
                         "lane1", "ecr")])
    with core.store.read() as tx:
        docs = list(tx.events())
        report = day_report(tx)
        row = {"first_ms": None, "folded": 0, "lanes": {}, "counts": {}, "promotions": {}, "refusals": {},
               "stock": {}}
        for doc in docs:
            salepath.fold_day(doc, row, set())
        assert row["folded"] == docs[-1]["seq"]
        assert finish(row)["lanes"] == recompute_day(tx.events(), report)[0]["lanes"]
        assert row["stock"]["sold"] == 4


@pytest.mark.parametrize("salepath", twins("salepath"))
def test_fold_day_counts_each_rule_once_a_basket_and_names_the_rules_it_changed(salepath):
    def sale_doc(seq, lane, ruleset, lines):
        return {"type": "sale", "seq": seq, "ts_ms": 1000 + seq, "source": lane, "ruleset": ruleset,
                "gross_cents": 900, "discount_cents": 190, "total_cents": 710,
                "payments": [{"method": "cash", "cents": 700}, {"method": "points", "cents": 10}],
                "points": {"earned": 7, "redeemed": 1}, "lines": lines,
                "moves": [["SKU-1", "A1", -line["qty"], None, []] for line in lines]}

    docs = [sale_doc(1, "lane1", 3, [{"qty": 2, "promos": [["R1", 3, 100], ["R2", 3, 50]]},
                                     {"qty": 1, "promos": [["R1", 3, 40]]}]),
            sale_doc(2, "lane2", 4, [{"qty": 5, "promos": []}, {"qty": 1, "promos": [["R2", 4, 9]]}]),
            {"type": "drawer_count", "seq": 3, "source": "lane1", "counted": {"cash": 1}, "moves": []}]
    row = {"first_ms": None, "folded": 0, "lanes": {}, "counts": {}, "promotions": {}, "refusals": {}, "stock": {}}
    reference = dict(row, lanes={}, counts={}, promotions={}, refusals={}, stock={})
    touched = set()
    for doc in docs:
        salepath.fold_day(doc, row, touched)
        _day_figures.fold(doc, reference)
    reference.update(first_ms=1001, folded=3)
    assert row == reference
    assert touched == {"R1", "R2"}
    assert row["promotions"] == {"R1": {"ruleset": 3, "baskets": 1, "units": 3, "discount_cents": 140},
                                 "R2": {"ruleset": 4, "baskets": 2, "units": 3, "discount_cents": 59}}
    assert row["stock"]["sold"] == 9 and row["lanes"]["lane1"]["taken"] == {"cash": 700, "points": 10}


def test_a_basket_refused_after_its_sale_was_appended_takes_the_sale_back_out(core):
    # The sale's document is queued, then the basket's return row names nothing: the basket is
    # rolled back (its queued sale with it) and recorded as a refusal.
    basket = {"id": "T1", "lines": [{"code": "SKU-2", "qty": 1}, {"code": "NOPE", "qty": -1}], "rows": [2, 3]}
    slice_ = Request("csv_slice", {"file": "f.csv", "hash": "0" * 64, "first": 0, "baskets": 2, "rows": 3,
                                   "docs": [basket, {"id": "T2", "lines": [{"code": "SKU-2", "qty": 2}], "rows": [4]}]},
                     "legacy", "csv")
    answer = apply(core, [slice_, count("c1", lane="legacy")])
    assert answer[0]["ok"] and [r["basket"] for r in answer[0]["refused"]] == ["T1"]
    assert answer[1]["expected"] == {"cash": 2 * 4990}
    report = open_figures(core.store)
    assert report["lanes"]["legacy"]["sales"] == 1
    assert sum(report["refusals"].values()) == 1
    with core.store.read() as tx:
        assert report["lanes"] == recompute_day(tx.events(), report)[0]["lanes"]


def test_each_rules_figures_have_a_key_of_their_own_and_a_commit_writes_only_those_it_used(tmp_path, monkeypatch):
    monkeypatch.setattr(_days, "WRITE_EVERY_EVENTS", 1)  # every commit writes the row
    store = Store(str(tmp_path / "data"))
    seed(store)
    apply_master(store, "promotions", {"rules": [
        {"id": f"R-{sku}", "version": 1, "kind": "percent_off", "params": {"pct_bp": 500}, "target": {"skus": [sku]}}
        for sku in ("SKU-2", "SKU-4")]})
    core = build_core(store, STORE, clock=lambda: NOW, group_budget_s=float("inf"))

    def priced_sale(rid: str, sku: str, qty: int) -> Request:
        lines = [{"sku": sku, "qty": qty}]
        [quote] = apply(core, [Request("quote", {"t": "quote", "id": f"q-{rid}", "lines": lines}, "lane1", "ecr")])
        return Request("sale", {"t": "sale", "id": rid, "lines": lines,
                                "payments": [{"method": "cash", "cents": quote["total_cents"]}]}, "lane1", "ecr")

    answers = apply(core, [priced_sale("s1", "SKU-2", 1), priced_sale("s2", "SKU-4", 2)])
    assert all(a["ok"] for a in answers), answers

    def stored():
        with store.read() as tx:
            return {value["rule"] if key.startswith(b"open\x00") else key: value for key, value in tx.items("days")}

    first = stored()
    assert "promotions" not in first[b"open"]
    assert set(first) >= {b"open", "R-SKU-2", "R-SKU-4"}
    # A probe behind the writer's back: a key the next commit rewrites loses it.
    with store.begin(write=True) as tx:
        tx.put("days", _rule_key("R-SKU-4"), {**first["R-SKU-4"], "probe": True})
    assert apply(core, [priced_sale("s3", "SKU-2", 1)])[0]["ok"]  # uses R-SKU-2 only
    second = stored()
    assert second["R-SKU-4"] == {**first["R-SKU-4"], "probe": True}, "not rewritten"
    assert second["R-SKU-2"]["figures"]["baskets"] == first["R-SKU-2"]["figures"]["baskets"] + 1
    assert "probe" not in second["R-SKU-2"]
    store.close()


def test_an_open_row_that_holds_its_rules_itself_is_read_and_rewritten_with_keys(tmp_path):
    # As a gateway of the previous version left it: the rules' figures inside the open row.
    store = Store(str(tmp_path / "data"))
    seed(store)
    core = build_core(store, STORE, clock=lambda: NOW, group_budget_s=float("inf"))
    apply(core, [sale("s1")])
    with store.begin(write=True) as tx:
        row = tx.get("days", b"open")
        row["promotions"] = {"OLD-1": {"ruleset": 1, "baskets": 4, "units": 4, "discount_cents": 40}}
        tx.put("days", b"open", row)
    store.states.clear()
    assert open_figures(store)["promotions"]["OLD-1"]["baskets"] == 4
    apply(core, [sale("s2")])
    with store.read() as tx:
        assert "promotions" not in tx.get("days", b"open")
        assert tx.get("days", _rule_key("OLD-1")) == {"rule": "OLD-1", "figures": {"ruleset": 1, "baskets": 4,
                                                                                    "units": 4, "discount_cents": 40}}
    assert open_figures(store)["promotions"]["OLD-1"]["baskets"] == 4
    store.close()


def test_a_rule_id_longer_than_any_key_still_has_its_figures_kept(tmp_path):
    store = Store(str(tmp_path / "data"))
    seed(store)
    long_id = "R" * 2000  # ids have no length limit; LMDB keys stop at 511 bytes
    apply_master(store, "promotions", {"rules": [
        {"id": long_id, "version": 1, "kind": "percent_off", "params": {"pct_bp": 1000}, "target": {"skus": ["SKU-4"]}}]})
    core = build_core(store, STORE, clock=lambda: NOW, group_budget_s=float("inf"))
    [answer] = apply(core, [Request("sale", {"t": "sale", "id": "s1", "lines": [{"sku": "SKU-4", "qty": 1}],
                                             "payments": [{"method": "cash", "cents": 315}]}, "lane1", "ecr")])
    assert answer["ok"], answer
    assert open_figures(store)["promotions"][long_id]["discount_cents"] == 35
    store.close()


def stored_open(store) -> dict:
    with store.read() as tx:
        return tx.get("days", b"open")


def writer_row(store) -> dict:
    with store.begin(write=True) as tx:
        row = tx.state(DayTotals).row
        return {key: row[key] for key in ("lanes", "stock", "promotions", "folded")}


def test_the_open_row_is_written_every_so_many_documents_and_every_reader_sees_the_day_so_far(core, monkeypatch):
    monkeypatch.setattr(_days, "WRITE_EVERY_EVENTS", 3)
    store = core.store
    first = apply(core, [sale("s1")])[0]
    # The day was named with its first document: written at once.
    assert stored_open(store)["folded"] == first["seq"]
    answers = apply(core, [sale("s2")]) + apply(core, [sale("s3", qty=2)])
    assert stored_open(store)["folded"] == first["seq"], "two documents since: not written yet"
    report = open_figures(store)
    # The report folds what the stored row lacks from the log: the day so far, exact.
    assert report["to_seq"] == answers[-1]["seq"]
    assert report["lanes"]["lane1"]["sales"] == 3
    with store.read() as tx:
        assert report["lanes"] == recompute_day(tx.events(), report)[0]["lanes"]
        totals = _days.open_totals(tx)
    assert totals["lanes"] == writer_row(store)["lanes"] and totals["folded"] == answers[-1]["seq"]
    last = apply(core, [sale("s4")])[0]
    assert stored_open(store)["folded"] == last["seq"], "three documents since the last write: written"


def test_totals_not_yet_written_are_found_again_after_a_restart(tmp_path, monkeypatch):
    # As after kill -9: the states are gone, the table lags the log, and loading folds the rest.
    monkeypatch.setattr(_days, "WRITE_EVERY_EVENTS", 100)
    path = str(tmp_path / "data")
    store = Store(path)
    seed(store)
    apply_master(store, "promotions", {"rules": [
        {"id": "R-2", "version": 1, "kind": "percent_off", "params": {"pct_bp": 1000}, "target": {"skus": ["SKU-2"]}}]})
    core = build_core(store, STORE, clock=lambda: NOW, group_budget_s=float("inf"))

    def priced(rid: str) -> Request:
        return Request("sale", {"t": "sale", "id": rid, "lines": [{"sku": "SKU-2", "qty": 1}],
                                "payments": [{"method": "cash", "cents": 4491}]}, "lane1", "ecr")

    assert all(a["ok"] for a in apply(core, [priced("s1")]))
    written = stored_open(store)["folded"]
    for rid in ("s2", "s3", "s4"):
        assert apply(core, [priced(rid)])[0]["ok"]
    before = writer_row(store)
    assert before["folded"] > written and before["promotions"]["R-2"]["baskets"] == 4
    store.close()

    store = Store(path)
    assert stored_open(store)["folded"] == written
    assert writer_row(store) == before
    # The rule the replayed documents used is written with the row, when the row is next written.
    monkeypatch.setattr(_days, "WRITE_EVERY_EVENTS", 1)
    core = build_core(store, STORE, clock=lambda: NOW, group_budget_s=float("inf"))
    assert apply(core, [priced("s5")])[0]["ok"]
    with store.read() as tx:
        assert tx.get("days", _rule_key("R-2"))["figures"]["baskets"] == 5
        assert tx.get("days", b"open")["folded"] == tx.last_seq()
    store.close()


# --- a group's sales kept back, then merged --------------------------------------------------

def _ordered(value):
    """`value` with every map as its (key, value) pairs in order: equal only when the order is too."""
    if isinstance(value, dict):
        return [(k, _ordered(v)) for k, v in value.items()]
    return value


@st.composite
def _folded_docs(draw) -> list:
    """Sales (as the compiled sale path's records) and other documents, with figures that are zero
    in some sales and not in others, so that keys first appear at different points of a group."""
    from core_ext._promo_c import Priced, PricedLine
    from core_ext._salepath_c import sale_event
    docs = []
    for seq in range(1, draw(st.integers(1, 14)) + 1):
        if draw(st.integers(0, 4)) == 0:
            kind = draw(st.sampled_from(["refusal", "receipt", "drawer_count"]))
            docs.append({"type": kind, "seq": seq, "ts_ms": 1000 + seq, "source": "lane1", "err": "RECALLED_LOT",
                         "counted": {"cash": 5}, "moves": [["SKU-1", None, 3, None, []]]})
            continue
        lines = []
        for _ in range(draw(st.integers(0, 3))):
            promos = [[draw(st.sampled_from(["R1", "R2", "R3"])), 1, draw(st.sampled_from([0, 0, 5, 40]))]
                      for _ in range(draw(st.integers(0, 2)))]
            lines.append(PricedLine("SKU-1", draw(st.integers(1, 3)), 100, 100, 0, promos))
        gross, discount = draw(st.sampled_from([0, 0, 990])), draw(st.sampled_from([0, 0, 90]))
        payments = [{"method": draw(st.sampled_from(["cash", "card", "points"])),
                     "cents": draw(st.sampled_from([0, 7]))} for _ in range(draw(st.integers(0, 2)))]
        points = (draw(st.sampled_from([0, 0, 3])), draw(st.sampled_from([0, 2])), 0)
        moves = [["SKU-1", None, -draw(st.sampled_from([0, 1, 2])), None, []]]
        ev = sale_event(f"lane:{seq}", draw(st.sampled_from(["lane1", "lane2", None])), "ecr", "S1", 1000 + seq, 1, 0,
                        Priced(draw(st.sampled_from([None, 0, 2, 3])), lines, gross, discount, []), None, None, [],
                        payments, points, moves, None)
        ev.seq = seq
        docs.append(ev)
    return docs


@pytest.mark.skipif("cython" not in [p.id for p in twins("salepath")], reason="the compiled twin is not built")
@settings(max_examples=300, deadline=None)
@given(docs=_folded_docs(), merges=st.sets(st.integers(0, 14)), known=st.booleans())
def test_the_compiled_folder_gives_the_reference_totals_in_the_reference_key_order(docs, merges, known):
    from core_ext import _salepath_c, _salepath_py

    def empty():
        row = {"first_ms": None, "folded": 0, "lanes": {}, "counts": {}, "promotions": {}, "refusals": {}, "stock": {}}
        if known:  # a day that already has figures: the keys are there before the group
            row.update(lanes={"lane1": {"sales": 1, "taken": {"card": 1}}}, promotions={"R2": {"baskets": 1}},
                       stock={"received": 1})
        return row

    folder, row, touched = _salepath_c.DayFolder(), empty(), set()
    reference, reference_touched = empty(), set()
    for i, doc in enumerate(docs):
        folder.fold(doc, row, touched)
        _salepath_py.fold_day(doc if isinstance(doc, dict) else doc.to_doc(), reference, reference_touched)
        if i in merges:  # a reader in the middle of the group
            folder.merge(row, touched)
            assert _ordered(row) == _ordered(reference)
    folder.merge(row, touched)
    assert _ordered(row) == _ordered(reference)
    assert touched == reference_touched
