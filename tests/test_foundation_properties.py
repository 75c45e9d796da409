"""Property: serial-tracked stock under any sequence of sales, receipts and counts, in both policies.
Balances equal the replay, no unit is held by two lots, and a serial leaves a lot at most once."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from core_ext import Store

from ._data import apply_master, seed
from .test_ledger_properties import check_consistent, run_ops

SERIALS = [f"S{i}" for i in range(1, 9)]
LOTS = ["L1", "L2", "L3"]

op = st.one_of(
    st.builds(lambda serial, lot: ("sale", {"lines": [{"code": "SKU-3", "qty": 1, "serial": serial,
                                                       **({"lot": lot} if lot else {})}]}),
              st.sampled_from(SERIALS), st.sampled_from(LOTS + [None, None, None])),
    st.builds(lambda qty: ("sale", {"lines": [{"code": "SKU-3", "qty": qty}]}), st.integers(1, 3)),
    st.builds(lambda lot, serials: ("receipt", {"sku": "SKU-3", "lot": lot, "expiry": "2031-01-01",
                                                "qty": max(len(serials), 1), "serials": serials}),
              st.sampled_from(LOTS), st.lists(st.sampled_from(SERIALS), max_size=3, unique=True)),
    st.builds(lambda lot, qty: ("count", {"sku": "SKU-3", "lot": lot, "qty": qty}),
              st.sampled_from(LOTS), st.integers(0, 3)),
)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    allow = Store(str(tmp_path_factory.mktemp("allow")))
    refuse = Store(str(tmp_path_factory.mktemp("refuse")))
    seed(allow)
    seed(refuse)
    apply_master(refuse, "policy", {"negative_stock": "refuse"})
    yield allow, refuse
    allow.close()
    refuse.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, max_size=20))
def test_serials_stay_single_units(stores, ops):
    allow, refuse = stores
    for store, strict in ((allow, False), (refuse, True)):
        tx = store.begin(write=True)
        try:
            first = tx.last_seq() + 1
            run_ops(tx, ops)
            check_consistent(tx, never_negative=strict)
            holders = {}
            for key, row in tx.items("lots", prefix=b"SKU-3\x00"):
                for serial in row["serials"]:
                    assert serial not in holders, f"{serial} held by two lots"
                    holders[serial] = key
            # Between receipts of a serial, it leaves a lot at most once.
            out = {}
            for event in tx.events(first):
                for sku, lot, delta, _expiry, serials in event["moves"]:
                    for serial in serials or ():
                        if delta > 0:
                            out[serial] = 0
                        elif lot is not None and event["type"] == "sale":
                            out[serial] = out.get(serial, 0) + 1
                            assert out[serial] == 1, f"{serial} sold from a lot twice"
        finally:
            tx.abort()
