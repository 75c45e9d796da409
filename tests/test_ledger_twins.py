"""The ledger's arithmetic: FEFO order, move application and replay, identical in both flavours."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from ._twins import twins

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
        row = tx.get("lots", b"S\x00L")
        assert row == {"qty": 2, "expiry": "2030-01-01", "serials": ["a", "c"]}
        assert tx.get("skus", "S") == 4
        led.apply_moves(tx, [["S", "L", -2, None, ["a", "c"]], ["S", None, -2, None, []]])
        assert tx.get("lots", b"S\x00L") is None  # empty rows are dropped
        assert tx.get("skus", "S") is None


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
