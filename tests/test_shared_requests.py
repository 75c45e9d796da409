"""A request that decides before it writes (a sale) runs in its group's own transaction, with no
nested one: refused before it writes, it leaves the group and the writer's memory as they were;
failing after a write all the same, it takes its whole group back with it, never half of itself."""
from __future__ import annotations

import pytest

from core_ext import Refused, Request, Store, StoreError, errors
from core_ext._select import ledger
from core_ext._verify import verify
from gateway._app_core import build_core
from gateway._core_loop import Handler

from ._data import NOW, STORE, apply_master, seed


def sale(rid: str, lines: list, cents: int) -> Request:
    return Request("sale", {"t": "sale", "id": rid, "lines": lines, "payments": [{"method": "cash", "cents": cents}]},
                   "lane1", "ecr")


def apply(core, requests) -> list[dict]:
    slots = [[r, None, None] for r in requests]
    core._apply_group(slots)
    return [slot[1].body for slot in slots]


def on_hand(tx, sku: str) -> int:
    return ledger.lot_qty(tx, sku, None)


@pytest.fixture
def store(tmp_path):
    store = Store(str(tmp_path / "data"))
    seed(store)
    apply_master(store, "policy", {"negative_stock": "refuse"})
    yield store
    store.close()


def test_a_sale_runs_in_its_groups_own_transaction(store):
    core = build_core(store, STORE, clock=lambda: NOW)
    assert core.handlers["sale"].decides_first
    assert not core.handlers["return"].decides_first
    tx = store.begin(write=True)
    child = tx.child(shared=True)
    assert child.txn is tx.txn and child.shared
    child.abort()
    tx.abort()


def test_a_sale_refused_after_taking_stock_leaves_the_group_and_the_balances_as_they_were(store):
    core = build_core(store, STORE, clock=lambda: NOW, group_budget_s=float("inf"))
    # The middle sale takes its first line from stock, then is refused on its second (100 bandages
    # in stock, 101 asked): what its first line took must come back, while its neighbours commit.
    short = [{"code": "SKU-2", "qty": 2}, {"code": "SKU-4", "qty": 101}]
    answers = apply(core, [sale("s1", [{"code": "SKU-2", "qty": 1}], 4990), sale("s2", short, 2 * 4990 + 101 * 350),
                           sale("s3", [{"code": "SKU-4", "qty": 1}], 350)])
    assert [a["ok"] for a in answers] == [True, False, True]
    assert answers[1]["err"] == errors.INSUFFICIENT_STOCK
    tx = store.begin(write=True)  # the writer's memory
    assert (on_hand(tx, "SKU-2"), on_hand(tx, "SKU-4")) == (49, 99)
    tx.abort()
    with store.read() as tx:  # the table
        assert (on_hand(tx, "SKU-2"), on_hand(tx, "SKU-4")) == (49, 99)
        assert tx.get("ids", "lane1:s2") is None
        assert [e["id"] for e in tx.events(tx.last_seq() - 1)] == ["lane1:s1", "lane1:s3"]
    assert verify(store) == []


def test_a_request_that_fails_after_writing_rolls_its_whole_group_back(store, caplog):
    def writes_then_refuses(tx, request, ctx):
        tx.put("meta", "written", 1)
        raise Refused(errors.BAD_REQUEST, "refused after writing")

    core = build_core(store, STORE, clock=lambda: NOW, group_budget_s=float("inf"),
                      extra_handlers={"odd": Handler(writes_then_refuses, decides_first=True)})
    with store.read() as tx:
        last = tx.last_seq()
    answers = apply(core, [sale("s1", [{"code": "SKU-2", "qty": 1}], 4990), Request("odd", {"id": "o1"}, "lane1")])
    assert [a["err"] for a in answers] == [errors.UNAVAILABLE, errors.UNAVAILABLE]
    assert "cannot be rolled back alone" in caplog.text
    with store.read() as tx:
        assert tx.last_seq() == last and tx.meta("written") is None and on_hand(tx, "SKU-2") == 50
    # The writer goes on, its memory as committed: the same sale now goes through, once.
    assert apply(core, [sale("s1", [{"code": "SKU-2", "qty": 1}], 4990)])[0]["ok"]
    with store.read() as tx:
        assert on_hand(tx, "SKU-2") == 49
    assert verify(store) == []


def test_a_shared_transaction_can_be_rolled_back_only_until_it_writes(store):
    tx = store.begin(write=True)
    child = tx.child(shared=True)
    assert not child.wrote
    child.put("meta", "x", 1)
    assert child.wrote
    with pytest.raises(StoreError, match="cannot be rolled back alone"):
        child.abort()
    tx.abort()
    with store.read() as tx:
        assert tx.meta("x") is None


def test_what_a_nested_transaction_wrote_counts_as_written_by_its_shared_parent(store):
    tx = store.begin(write=True)
    child = tx.child(shared=True)
    inner = child.child()
    inner.put("meta", "x", 1)
    inner.commit()
    assert child.wrote  # its writes are in the group's transaction now: no rolling back alone
    with pytest.raises(StoreError, match="cannot be rolled back alone"):
        child.abort()
    tx.abort()
