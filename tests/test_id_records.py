"""A committed sale's id record keeps what its event does not (its warnings, a known member's
balance): a repeat is answered from the event and that memo, the first answer again to the byte;
records that kept the whole answer (every other kind, and sales from before) answer as they did."""
from __future__ import annotations

import json

import msgpack
import pytest

from core_ext import Request, Store

from gateway._app_core import build_core

from ._data import NOW, STORE, apply_master, seed

RULES = {"rules": [
    {"id": "P-THERMO", "version": 1, "kind": "percent_off", "params": {"pct_bp": 1000}, "target": {"skus": ["SKU-2"]}},
    {"id": "P-STRIPS", "version": 1, "kind": "percent_off", "params": {"pct_bp": 500},
     "target": {"categories": ["consumable"]}},
]}


def apply(core, requests) -> list:
    slots = [[r, None, None] for r in requests]
    core._apply_group(slots)
    return [slot[1] for slot in slots]


def make_core(path):
    store = Store(str(path))
    seed(store)
    apply_master(store, "promotions", RULES)
    apply_master(store, "policy", {"expiry_warn_days": 60})  # lot B2 (2026-12-31) expires soon
    return build_core(store, STORE, clock=lambda: NOW, group_budget_s=float("inf"))


@pytest.fixture
def core(tmp_path):
    loop = make_core(tmp_path / "data")
    yield loop
    loop.store.close()


def priced(core, rid: str, lines: list, member: str | None = None, points: int = 0) -> Request:
    """A sale of `lines` paid in full: `points` cents in points, the rest in cash."""
    body = {"t": "quote", "id": f"q-{rid}", "lines": lines, **({"member": member} if member else {})}
    [quote] = apply(core, [Request("quote", body, "lane1", "ecr")])
    total = quote.body["total_cents"]
    payments = [{"method": "cash", "cents": total - points}] + ([{"method": "points", "cents": points}] if points else [])
    return Request("sale", {**body, "t": "sale", "id": rid, "payments": payments}, "lane1", "ecr")


def as_bytes(answer: dict) -> tuple[bytes, bytes]:
    """The answer as each transport frames it (key order included)."""
    return json.dumps(answer).encode(), msgpack.packb(answer, use_bin_type=True)


def test_a_repeated_sale_is_answered_from_its_event_exactly_as_the_first_time(core):
    sales = [
        # A known member paying partly in points, a lot named that expires soon, a rule per line.
        priced(core, "s1", [{"sku": "SKU-1", "qty": 2, "lot": "B2"}, {"sku": "SKU-2", "qty": 1}], member="M1",
               points=300),
        # An unknown member, a serial named, two lines of one SKU.
        priced(core, "s2", [{"sku": "SKU-3", "qty": 1, "serial": "S2"}, {"sku": "SKU-4", "qty": 3},
                            {"sku": "SKU-4", "qty": 1}], member="M9"),
        # No member, no rule.
        priced(core, "s3", [{"sku": "SKU-4", "qty": 2}]),
    ]
    first = apply(core, sales)
    assert [r.body["ok"] for r in first] == [True, True, True], [r.body for r in first]
    assert "LOT_EXPIRES_SOON" in first[0].body["warnings"] and first[0].body["points_balance"] == 1000 - 300 + first[0].body["points_earned"]
    assert first[1].body["warnings"] == ["UNKNOWN_MEMBER"] and "points_balance" not in first[1].body
    again = apply(core, sales)
    for one, two in zip(first, again):
        assert two.replayed and not one.replayed
        assert as_bytes(two.body) == as_bytes(one.body)
    with core.store.read() as tx:
        record = tx.get("ids", "lane1:s1")
    assert "res" not in record and record["seq"] == first[0].body["seq"]
    assert record["memo"] == {"warnings": first[0].body["warnings"], "points_balance": first[0].body["points_balance"]}
    assert len(msgpack.packb(record)) * 4 < len(msgpack.packb(first[0].body)), "the record is a fraction of the answer"


def test_a_group_checked_ahead_answers_each_request_as_if_it_came_alone(core, tmp_path):
    """The writer checks a few requests ahead of the one it applies (shape, id, body digest); it
    looks an id up only when it applies its request, so a repeat within the group, on either side
    of a batch of checks, is still a repeat or a conflict, and a bad request is refused in its place."""
    from gateway._core_loop import CHECK_AHEAD
    lines = [[{"sku": "SKU-2", "qty": 1}], [{"sku": "SKU-4", "qty": 2}], [{"sku": "SKU-1", "qty": 1, "lot": "B2"}]]
    sales = [priced(core, f"s{i}", lines[i % 3]) for i in range(CHECK_AHEAD + 8)]
    bad = Request("sale", {"t": "sale", "id": "bad", "lines": [{"sku": "SKU-2", "qty": "two"}]}, "lane1", "ecr")
    no_id = Request("receipt", {"sku": "SKU-4", "qty": 5}, "erp", "erp")
    conflict = Request("sale", {**sales[1].body, "lines": lines[0]}, "lane1", "ecr")
    group = [*sales[:3], bad, *sales[3:CHECK_AHEAD], sales[0], conflict, no_id, *sales[CHECK_AHEAD:], sales[2]]
    together = apply(core, group)
    alone = make_core(tmp_path / "alone")
    one_by_one = [apply(alone, [request])[0] for request in group]
    alone.store.close()
    assert [(as_bytes(a.body), a.replayed) for a in together] == [(as_bytes(b.body), b.replayed) for b in one_by_one]
    assert together[3].body["err"] == "BAD_REQUEST" and "qty" in together[3].body["msg"]
    repeat, other, missing = together[CHECK_AHEAD + 1:CHECK_AHEAD + 4]
    assert repeat.replayed and repeat.body == together[0].body
    assert other.body["err"] == "DUPLICATE_ID_CONFLICT" and missing.body["err"] == "BAD_REQUEST"
    assert together[-1].replayed and together[-1].body == together[2].body
    assert sum(a.body["ok"] and not a.replayed for a in together) == len(sales)


def test_a_repeat_with_other_content_is_still_a_conflict(core):
    sale = priced(core, "s1", [{"sku": "SKU-2", "qty": 1}])
    assert apply(core, [sale])[0].body["ok"]
    other = Request("sale", {**sale.body, "lines": [{"sku": "SKU-2", "qty": 2}]}, "lane1", "ecr")
    [answer] = apply(core, [other])
    assert answer.body["err"] == "DUPLICATE_ID_CONFLICT" and not answer.replayed


def test_a_record_that_kept_the_whole_answer_answers_with_it(core):
    # As a gateway of the previous version wrote every record, and as every other kind is kept.
    sale = priced(core, "s1", [{"sku": "SKU-2", "qty": 1}])
    [first] = apply(core, [sale])
    with core.store.begin(write=True) as tx:
        record = tx.get("ids", "lane1:s1")
        tx.put("ids", "lane1:s1", {"h": record["h"], "seq": record["seq"], "res": {**first.body, "kept": "whole"}})
    [again] = apply(core, [sale])
    assert again.replayed and again.body == {**first.body, "kept": "whole"}
    receipt = Request("receipt", {"id": "r1", "sku": "SKU-4", "qty": 5}, "erp", "erp")
    [done] = apply(core, [receipt])
    with core.store.read() as tx:
        assert tx.get("ids", "erp:r1")["res"] == done.body


def test_verify_ledger_checks_that_a_sales_id_record_names_its_sale_and_a_repeat_is_never_answered_from_another(core):
    from core_ext._verify import verify
    sales = [priced(core, "s1", [{"sku": "SKU-2", "qty": 1}]), priced(core, "s2", [{"sku": "SKU-4", "qty": 1}])]
    apply(core, sales)
    assert verify(core.store) == []
    with core.store.begin(write=True) as tx:
        other = tx.get("ids", "lane1:s2")["seq"]
        tx.put("ids", "lane1:s1", {**tx.get("ids", "lane1:s1"), "seq": other})
    assert verify(core.store) == [f"id 'lane1:s1': its record names event {other}, which is not its sale"]
    # A repeat is then refused on its own, never answered with another sale's answer.
    [again, fresh] = apply(core, [sales[0], priced(core, "s3", [{"sku": "SKU-4", "qty": 1}])])
    assert again.body["err"] == "UNAVAILABLE" and "verify-ledger" in again.body["msg"] and not again.replayed
    assert fresh.body["ok"]


def test_a_store_of_an_older_schema_is_upgraded_when_opened_for_writing_and_an_unknown_one_is_refused(tmp_path):
    import lmdb
    from core_ext import StoreError
    from core_ext._store import SCHEMA
    path = str(tmp_path / "data")
    Store(path).close()

    def set_schema(n: int) -> None:
        env = lmdb.open(path, max_dbs=32, subdir=True)
        meta = env.open_db(b"meta")  # before the write transaction: opening a table takes one of its own
        with env.begin(write=True) as txn:
            txn.put(b"schema", msgpack.packb(n), db=meta)
        env.close()

    def schema_of() -> int:
        env = lmdb.open(path, max_dbs=32, subdir=True, readonly=True)
        meta = env.open_db(b"meta", create=False)
        with env.begin() as txn:
            value = msgpack.unpackb(txn.get(b"schema", db=meta))
        env.close()
        return value

    for older in (1, 2):
        set_schema(older)
        # A reader beside an older gateway changes nothing, and does not misread what it cannot read.
        with pytest.raises(StoreError, match=f"holds a store of schema {older}, not of schema 3"):
            Store(path, readonly=True)
        assert schema_of() == older
        Store(path).close()
        assert schema_of() == SCHEMA == 3
    Store(path, readonly=True).close()
    set_schema(4)
    with pytest.raises(StoreError, match="holds schema 4, this gateway reads 3"):
        Store(path)
