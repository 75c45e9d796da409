"""Property: any sequence of stock movements leaves the balances equal to a replay of the log, and
under the `refuse` policy no balance ever goes below zero. Refused requests change nothing."""
from __future__ import annotations

import math

from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from core_ext import HANDLERS, Refused, Request, Store, ledger, split_lot_key

from gateway._app_core import build_core

from ._data import NOW, STORE, apply_master, seed, stored_lot_rows, stored_totals

SKUS = ["SKU-1", "SKU-2", "SKU-4"]  # lot-tracked and not
LOTS = ["A1", "B2", "C3", "N9"]

sale_op = st.builds(lambda sku, lot, qty: ("sale", {"lines": [{"code": sku, "qty": qty, **({"lot": lot} if lot else {})}]}),
                    st.sampled_from(SKUS), st.sampled_from(LOTS + [None, None]), st.integers(1, 25))
op = st.one_of(
    sale_op,
    st.builds(lambda sku, lot, qty, expiry: ("receipt", {"sku": sku, "lot": lot, "expiry": expiry, "qty": qty}),
              st.sampled_from(SKUS), st.sampled_from(LOTS), st.integers(1, 20),
              st.sampled_from(["2027-06-30", "2026-12-10"])),  # the second within the 30-day window
    st.builds(lambda sku, lot, qty: ("movement", {"type": "transfer_out", "sku": sku, "lot": lot, "qty": qty}),
              st.sampled_from(SKUS), st.sampled_from(LOTS), st.integers(1, 15)),
    st.builds(lambda sku, lot, qty: ("movement", {"type": "adjustment", "sku": sku, "lot": lot, "qty": qty}),
              st.sampled_from(SKUS), st.sampled_from(LOTS), st.integers(-15, 15).filter(bool)),
    st.builds(lambda sku, lot, qty: ("count", {"sku": sku, "lot": lot, "qty": qty}),
              st.sampled_from(SKUS), st.sampled_from(LOTS), st.integers(0, 12)),
)


def _price(tx, sku):
    return tx.get("catalog", sku)["unit_cents"]


def run_ops(tx, ops):
    """Apply `ops` like the core loop would: each in a child transaction, rolled back when refused."""
    ctx = SimpleNamespace(now_ms=int(NOW * 1000), settings=STORE, after_commit=lambda cb: None)
    refused = 0
    for n, (kind, body) in enumerate(ops):
        before = tx.last_seq()
        child = tx.child()
        try:
            if kind == "sale":
                line = body["lines"][0]
                body = {**body, "id": f"s{n}", "payments": [{"method": "cash", "cents": line["qty"] * _price(child, line["code"])}]}
                HANDLERS["sale"][0](child, Request("sale", body, "lane1", "ecr"), ctx)
            elif kind == "receipt":
                HANDLERS["receipt"][0](child, Request("receipt", {"id": f"r{n}", **body}, "erp"), ctx)
            elif kind == "movement":
                from core_ext._stock import post_movement
                post_movement(child, ctx, body, f"erp:m{n}")
            else:
                child.put("counts", f"dev\x00{body['sku']}\x00{body['lot'] if body['sku'] == 'SKU-1' else ''}",
                          {"qty": body["qty"], "expiry": "2027-06-30"})
                HANDLERS["count_close"][0](child, Request("count_close", {"id": f"c{n}", "device": "dev"}, "dev"), ctx)
            child.commit()
        except Refused:
            child.abort()
            refused += 1
            assert tx.last_seq() == before
    return refused


def check_alerts_current(tx):
    """What the moves kept current equals a full re-evaluation: nothing raised, nothing changed."""
    from core_ext import _alerts
    before = dict(tx.items("alerts"))
    assert _alerts.refresh(tx, _alerts.all_skus(tx), "2026-11-24", int(NOW * 1000)) == 0
    assert dict(tx.items("alerts")) == before


def check_consistent(tx, *, never_negative: bool):
    lots, skus = ledger.replay(tx.events())
    stored = {split_lot_key(k): row["qty"] for k, row in stored_lot_rows(tx).items()}
    assert stored == lots
    assert stored_totals(tx) == skus
    # Counted as the moves go (written to `meta` when the group commits: `verify-ledger` checks it).
    assert ledger.balances(tx).held() == len(skus)
    if never_negative:
        assert all(q >= 0 for q in stored.values()), stored


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    allow = Store(str(tmp_path_factory.mktemp("allow")))
    refuse = Store(str(tmp_path_factory.mktemp("refuse")))
    seed(allow)
    seed(refuse)
    for store in (allow, refuse):  # a recalled lot, so recalled-on-hand alerts come and go too
        apply_master(store, "recalls", {"recalls": [{"recall_id": "R-N9", "sku": "SKU-1", "lot": "N9"}]})
    apply_master(refuse, "policy", {"negative_stock": "refuse"})
    yield allow, refuse
    allow.close()
    refuse.close()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, max_size=25))
def test_balances_always_equal_the_replay(stores, ops):
    allow, refuse = stores
    for store, strict in ((allow, False), (refuse, True)):
        tx = store.begin(write=True)
        try:
            run_ops(tx, ops)
            check_consistent(tx, never_negative=strict)
            check_alerts_current(tx)
        finally:
            tx.abort()  # every example starts from the same seeded store


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(sale_op, min_size=1, max_size=8), data=st.data())
def test_repeats_get_the_first_response_and_apply_once(stores, ops, data):
    """Idempotency by id through the core loop's own group code: a group of requests, then the same
    requests again in another order, in one group or several: each repeat is the first response."""
    allow, _ = stores
    loop = build_core(allow, STORE, clock=lambda: NOW, group_budget_s=math.inf)  # whole groups, however slow
    tag = next(_tags)
    requests = []
    with allow.read() as tx:
        for n, (_kind, body) in enumerate(ops):
            line = body["lines"][0]
            requests.append(Request("sale", {**body, "id": f"{tag}-{n}", "payments": [
                {"method": "cash", "cents": line["qty"] * _price(tx, line["code"])}]}, "lane1", "ecr"))
    first = [[r, None, None] for r in requests]
    loop._apply_group(first)
    with allow.read() as tx:
        last = tx.last_seq()
    again = [[r, None, None] for r in data.draw(st.permutations(requests))]
    split = data.draw(st.integers(0, len(again)))
    loop._apply_group(again[:split])
    loop._apply_group(again[split:])
    answers = {slot[0].body["id"]: slot[1] for slot in first}
    for slot in again:
        response = slot[1]
        if answers[slot[0].body["id"]].ok:
            assert response.replayed and response.body == answers[slot[0].body["id"]].body
        else:
            assert not response.ok  # a refusal is not remembered: it is simply refused again
    with allow.read() as tx:
        # Refused sales may record nothing but refusals; accepted ones are not applied twice.
        assert all(e["type"] in ("refusal", "alert") for e in tx.events(last + 1))
        check_consistent(tx, never_negative=False)


_tags = iter(range(10**9))


# Serial-tracked stock (SKU-3): sales with and without serials, receipts with serials, counts.
SERIALS = [f"S{i}" for i in range(1, 9)]
SERIAL_LOTS = ["L1", "L2", "L3"]

serial_op = st.one_of(
    st.builds(lambda serial, lot: ("sale", {"lines": [{"code": "SKU-3", "qty": 1, "serial": serial,
                                                       **({"lot": lot} if lot else {})}]}),
              st.sampled_from(SERIALS), st.sampled_from(SERIAL_LOTS + [None, None, None])),
    st.builds(lambda qty: ("sale", {"lines": [{"code": "SKU-3", "qty": qty}]}), st.integers(1, 3)),
    st.builds(lambda lot, serials: ("receipt", {"sku": "SKU-3", "lot": lot, "expiry": "2031-01-01",
                                                "qty": max(len(serials), 1), "serials": serials}),
              st.sampled_from(SERIAL_LOTS), st.lists(st.sampled_from(SERIALS), max_size=3, unique=True)),
    st.builds(lambda lot, qty: ("count", {"sku": "SKU-3", "lot": lot, "qty": qty}),
              st.sampled_from(SERIAL_LOTS), st.integers(0, 3)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(serial_op, max_size=20))
def test_serials_stay_single_units(stores, ops):
    """Serial-tracked stock: no unit held by two lots, and a serial leaves a lot at most once."""
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
