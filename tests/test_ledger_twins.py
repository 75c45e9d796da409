"""The ledger's arithmetic: FEFO order, move application and replay, identical in both flavours."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from core_ext import Store, split_lot_key
from core_ext._alerts import alert_key

from ._twins import twins
from ._data import stored_on_hand

FLAVOURS = twins("ledger")
_ledger_py = FLAVOURS[0].values[0]
_ledger_c = FLAVOURS[1].values[0] if len(FLAVOURS) > 1 else None


@pytest.fixture(params=FLAVOURS)
def led(request):
    return request.param


LOTS = [
    ("A1", "2027-03-31", 10, False),
    ("B2", "2026-12-31", 5, False),
    ("C3", "2028-01-31", 20, False),
    ("OLD", "2026-11-01", 7, False),   # expired before today
    ("BAD", "2026-12-01", 9, True),    # recalled
    ("NOEXP", None, 4, False),         # no expiry: last
    ("EMPTY", "2026-12-02", 0, False),
]
TODAY = "2026-11-24"


def test_fefo_takes_first_expiring_and_skips_recalled_expired_empty(led):
    allocations, short = led.fefo_allocate(LOTS, 8, TODAY)
    assert allocations == [("B2", "2026-12-31", 5), ("A1", "2027-03-31", 3)]
    assert short == 0


def test_fefo_lot_without_expiry_comes_last_and_shortfall_is_reported(led):
    allocations, short = led.fefo_allocate(LOTS, 45, TODAY)
    assert [a[0] for a in allocations] == ["B2", "A1", "C3", "NOEXP"]
    assert sum(a[2] for a in allocations) == 39
    assert short == 6


def test_fefo_lot_expiring_today_is_still_sellable(led):
    allocations, _ = led.fefo_allocate([("T", TODAY, 2, False)], 1, TODAY)
    assert allocations == [("T", TODAY, 1)]


def test_apply_moves_keeps_lot_and_sku_balances_and_serials(led, store):
    with store.begin(write=True) as tx:
        led.apply_moves(tx, [["S", "L", 3, "2030-01-01", ["a", "b", "c"]], ["S", None, 2, None, []]])
        led.apply_moves(tx, [["S", "L", -1, "2030-01-01", ["b"]]])
        assert tx.get("lots", b"S\x00L") is None  # written when the group commits, once
        assert led.lot_qty(tx, "S", "L") == 2 and led.on_hand(tx, "S") == 4
    with store.begin(write=True) as tx:
        assert tx.get("lots", b"S\x00L") == {"qty": 2, "expiry": "2030-01-01", "serials": ["a", "c"]}
        assert stored_on_hand(tx, "S") == 4
        led.apply_moves(tx, [["S", "L", -2, None, ["a", "c"]], ["S", None, -2, None, []]])
    with store.read() as tx:
        assert tx.get("lots", b"S\x00L") is None  # empty rows are dropped
        assert stored_on_hand(tx, "S") is None


def _lots_table(store) -> list:
    with store.read() as tx:
        return list(tx.txn.cursor(db=tx.db["lots"]))


@pytest.mark.skipif(_ledger_c is None, reason="the compiled flavour is not built")
def test_both_flavours_write_the_same_rows_byte_for_byte(tmp_path):
    # Several lots of one SKU in a group (written in key order), none, a lot and a SKU in other
    # scripts, and rows emptied (deleted): the `lots` table must be the same bytes after each group.
    groups = [
        [["SKU-\u00e9", "L\u00e9", 3, "2030-01-01", ["s1", "s2", "s3"]], ["SKU-\u00e9", None, 2, None, []],
         ["SKU-\u00e9", "A", 1, None, []], ["S", "L2", 4, None, []], ["S", "L10", 5, "2029-02-01", []],
         ["\u4e2d", "\u6279", 7, None, []]],
        [["SKU-\u00e9", "L\u00e9", -3, None, ["s1", "s2", "s3"]], ["S", "L2", -1, None, []],
         ["\u4e2d", "\u6279", -7, None, []], ["S", "L0", 1, None, []]],
    ]
    tables = []
    for flavour in (_ledger_py, _ledger_c):
        store = Store(str(tmp_path / flavour.FLAVOUR))
        seen = []
        for moves in groups:
            with store.begin(write=True) as tx:
                flavour.apply_moves(tx, moves)
            seen.append(_lots_table(store))
        tables.append(seen)
        store.close()
    assert tables[0] == tables[1]
    assert (b"\xe4\xb8\xad", b"\x07") in tables[0][0] and not any(k.startswith(b"\xe4\xb8\xad") for k, _ in tables[0][1])


moves_strategy = st.lists(
    st.tuples(st.sampled_from(["S1", "S2", "S3"]), st.sampled_from([None, "L1", "L2"]),
              st.integers(-50, 50), st.sampled_from([None, "2027-01-01"]), st.just([])),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(events=st.lists(moves_strategy, max_size=10))
def test_flavours_replay_identically(events):
    docs = [{"moves": [list(m) for m in moves]} for moves in events]
    expected = _ledger_py.replay(docs)
    if _ledger_c is not None:
        assert _ledger_c.replay(docs) == expected
    totals = {}
    for moves in events:
        for sku, lot, delta, _e, _s in moves:
            totals[(sku, lot)] = totals.get((sku, lot), 0) + delta
    assert expected[0] == {k: v for k, v in totals.items() if v}


@settings(max_examples=150, deadline=None)
@given(lots=st.lists(st.tuples(st.text("ABC", min_size=1, max_size=3),
                               st.one_of(st.none(), st.dates().map(lambda d: d.isoformat())),
                               st.integers(-5, 30), st.booleans()), max_size=8, unique_by=lambda x: x[0]),
       qty=st.integers(1, 100))
def test_fefo_flavours_agree_and_never_overdraw(lots, qty):
    result = _ledger_py.fefo_allocate(lots, qty, TODAY)
    if _ledger_c is not None:
        assert _ledger_c.fefo_allocate(lots, qty, TODAY) == result
    allocations, short = result
    by_lot = {lot: (exp, on_hand, recalled) for lot, exp, on_hand, recalled in lots}
    assert sum(a[2] for a in allocations) + short == qty
    for lot, expiry, take in allocations:
        exp, on_hand, recalled = by_lot[lot]
        assert 0 < take <= on_hand and not recalled and (exp is None or exp >= TODAY)
    expiries = [(a[1] is None, a[1] or "") for a in allocations]
    assert expiries == sorted(expiries)


# --- the store-walking twins: same LMDB contents in, same answers and the same tables out ----------

SKUS = ["S1", "S2", "S3"]
store_moves = st.lists(
    st.tuples(st.sampled_from(SKUS), st.sampled_from([None, "L1", "L2", "L3"]),
              st.one_of(st.integers(-20, 20), st.sampled_from([-(2**40), 2**40])),
              st.sampled_from([None, "2026-11-20", "2026-12-10", "2027-06-01"]),
              st.lists(st.sampled_from(["s1", "s2", "s3"]), max_size=2, unique=True)),
    max_size=25,
)
recall_sets = st.dictionaries(st.sampled_from([None, "L1", "L2", "L3"]),
                              st.builds(lambda i, r: {"recall_id": f"R{i}", **({"reason": r} if r else {})},
                                        st.integers(1, 9), st.sampled_from(["", "sterility"])), max_size=2)


def _tables(store):
    # The bytes as stored: the compiled ledger writes its rows itself, as msgpack would pack them.
    with store.read() as tx:
        return {table: [(bytes(k), bytes(v)) for k, v in tx.txn.cursor(db=store.db[table])] for table in ("lots", "meta")}


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(store_moves, min_size=1, max_size=4), recalls=recall_sets,
       lots=st.one_of(st.none(), st.sets(st.sampled_from([None, "L1", "L2", "L3", "NEVER"]))),
       warn_days=st.integers(-10, 400))
def test_store_twins_agree_on_real_lmdb(tmp_path_factory, batches, recalls, lots, warn_days):
    if _ledger_c is None:
        pytest.skip("the compiled twin is not built (pure-Python run)")
    root = tmp_path_factory.mktemp("twins")
    stores = [Store(str(root / "py")), Store(str(root / "c"))]
    try:
        for moves in batches:
            touched = []
            for flavour, store in zip((_ledger_py, _ledger_c), stores):
                with store.begin(write=True) as tx:
                    touched.append(flavour.apply_moves(tx, [[*m[:4], list(m[4])] for m in moves]))
            assert touched[0] == touched[1] == list(dict.fromkeys(m[0] for m in moves))
        assert _tables(stores[0]) == _tables(stores[1])
        for sku in SKUS:
            answers = []
            for flavour, store in zip((_ledger_py, _ledger_c), stores):
                # The balances are the writer's: read in a write transaction.
                with store.begin(write=True) as tx:
                    answers.append((flavour.lots_of(tx, sku, recalls),
                                    flavour.lot_alerts(tx, sku, lots, TODAY, warn_days, recalls)))
            assert answers[0] == answers[1]
            view, alerts = answers[0]
            with stores[0].read() as tx:
                held = {split_lot_key(k)[1]: row for k, row in tx.items("lots", prefix=sku.encode() + b"\x00")}
            assert view == [(lot, row.get("expiry"), row["qty"], lot in recalls or None in recalls)
                            for lot, row in held.items() if lot is not None]
            for key, alert in alerts.items():
                assert key == alert_key(sku, alert["kind"], alert["lot"])
                assert alert["qty"] == held[alert["lot"]]["qty"] > 0
                assert lots is None or alert["lot"] in lots
    finally:
        for store in stores:
            store.close()


def test_lot_alerts_expiring_and_recalled(led, store):
    with store.begin(write=True) as tx:
        led.apply_moves(tx, [["S", "SOON", 4, "2026-12-01", []], ["S", "LATER", 2, "2027-12-01", []],
                             ["S", "GONE", 1, "2026-11-30", []], ["S", "GONE", -1, None, []], ["S", None, 3, None, []]])
        recalls = {"LATER": {"recall_id": "R7", "reason": "label"}}
        want = led.lot_alerts(tx, "S", None, TODAY, 30, recalls)
        assert want == {
            alert_key("S", "expiring", "SOON"): {"kind": "expiring", "sku": "S", "lot": "SOON", "expiry": "2026-12-01",
                                                 "days_left": 7, "qty": 4},
            alert_key("S", "recalled", "LATER"): {"kind": "recalled", "sku": "S", "lot": "LATER", "qty": 2,
                                                  "recall_id": "R7", "reason": "label"},
        }
        # Naming lots limits the evaluation to them; a recall of every lot covers the unlotted balance too.
        assert led.lot_alerts(tx, "S", {"LATER"}, TODAY, 30, {}) == {}
        every = led.lot_alerts(tx, "S", [None], TODAY, 30, {None: {"recall_id": "R8"}})
        assert every == {alert_key("S", "recalled", None): {"kind": "recalled", "sku": "S", "lot": None, "qty": 3,
                                                            "recall_id": "R8", "reason": ""}}
        assert led.lots_of(tx, "S", {None: {}}) == [("LATER", "2027-12-01", 2, True), ("SOON", "2026-12-01", 4, True)]
