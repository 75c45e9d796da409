"""Serial numbers name single units: never sold twice from a lot, returned only when sold, received
only when not already held. Also: a recall of every lot stops a sale that names no lot."""
from __future__ import annotations

from types import SimpleNamespace

from core_ext import Refused
from core_ext._stock import post_movement
from core_ext._verify import verify

from ._data import NOW, STORE, apply_master
from .test_core_sales import lot_qty, sale


def lot_row(store, sku, lot):
    with store.read() as tx:
        return tx.get("lots", f"{sku}\x00{lot or ''}".encode())


def last_seq(store):
    with store.read() as tx:
        return tx.last_seq()


async def test_a_serial_names_one_unit_so_its_line_has_qty_1(core):
    res = await sale(core, "Q2", [{"code": "SKU-3", "qty": 2, "serial": "S1"}], 2 * 120000)
    assert res.body["err"] == "BAD_REQUEST" and "lines[0].qty" in res.body["msg"], res.body
    assert lot_row(core.store, "SKU-3", "L1")["serials"] == ["S1", "S2", "S3"]


async def test_a_line_naming_another_lot_than_its_serials_is_a_bad_request(core):
    await core.request("receipt", {"id": "r-l2", "sku": "SKU-3", "lot": "L2", "expiry": "2029-01-01", "qty": 1,
                                   "serials": ["S8"]}, source="erp")
    res = await sale(core, "X1", [{"code": "SKU-3", "qty": 1, "lot": "L2", "serial": "S2"}], 120000)
    assert res.body["err"] == "BAD_REQUEST" and "lines[0].lot" in res.body["msg"], res.body
    assert lot_row(core.store, "SKU-3", "L2") == {"qty": 1, "expiry": "2029-01-01", "serials": ["S8"]}


async def test_a_serial_sold_twice_never_takes_another_unit_from_a_lot(core):
    assert (await sale(core, "A", [{"code": "SKU-3", "qty": 1, "serial": "S2"}], 120000)).ok
    # Policy allow: the ledger is what is wrong; the unit goes to the unallocated balance, L1 keeps its two.
    again = await sale(core, "B", [{"code": "SKU-3", "qty": 1, "serial": "S2"}], 120000)
    assert again.ok, again.body
    assert again.body["lines"][0]["allocations"] == [{"lot": None, "expiry": None, "qty": 1}]
    assert lot_row(core.store, "SKU-3", "L1") == {"qty": 2, "expiry": "2030-01-01", "serials": ["S1", "S3"]}
    assert lot_qty(core.store, "SKU-3", None) == -1
    # Policy refuse: the unit is not in stock.
    apply_master(core.store, "policy", {"negative_stock": "refuse"})
    before = last_seq(core.store)
    refused = await sale(core, "C", [{"code": "SKU-3", "qty": 1, "serial": "S2"}], 120000)
    assert refused.body["err"] == "INSUFFICIENT_STOCK" and "S2" in refused.body["msg"], refused.body
    assert last_seq(core.store) == before
    assert verify(core.store) == []


async def test_a_return_gives_back_only_a_serial_the_sale_took(core):
    s = await sale(core, "S", [{"code": "SKU-3", "qty": 1, "serial": "S1"}, {"code": "SKU-3", "qty": 1, "serial": "S2"}],
                   2 * 120000)
    assert s.ok, s.body
    before = last_seq(core.store)
    wrong = await core.request("return", {"id": "R1", "orig": "S", "lines": [{"sku": "SKU-3", "qty": 1, "serial": "S3"}]})
    assert wrong.body["err"] == "RETURN_EXCEEDS_SALE" and "S3" in wrong.body["msg"], wrong.body
    two = await core.request("return", {"id": "R2", "orig": "S", "lines": [{"sku": "SKU-3", "qty": 2, "serial": "S1"}]})
    assert two.body["err"] == "BAD_REQUEST" and "lines[0].qty" in two.body["msg"], two.body
    assert last_seq(core.store) == before
    ok = await core.request("return", {"id": "R3", "orig": "S", "lines": [{"sku": "SKU-3", "qty": 1, "serial": "S1"}]})
    assert ok.ok, ok.body
    assert lot_row(core.store, "SKU-3", "L1") == {"qty": 2, "expiry": "2030-01-01", "serials": ["S3", "S1"]}
    assert verify(core.store) == []


async def test_a_serial_in_stock_is_not_received_again_and_leaves_only_from_its_lot(core):
    before = last_seq(core.store)
    dup = await core.request("receipt", {"id": "r1", "sku": "SKU-3", "lot": "L2", "expiry": "2031-01-01", "qty": 1,
                                         "serials": ["S1"]}, source="erp")
    assert dup.body["err"] == "BAD_REQUEST" and "S1" in dup.body["msg"] and "L1" in dup.body["msg"], dup.body
    twice = await core.request("receipt", {"id": "r2", "sku": "SKU-3", "lot": "L2", "expiry": "2031-01-01", "qty": 2,
                                           "serials": ["S9", "S9"]}, source="erp")
    assert twice.body["err"] == "BAD_REQUEST", twice.body
    more = await core.request("receipt", {"id": "r3", "sku": "SKU-3", "lot": "L2", "expiry": "2031-01-01", "qty": 1,
                                          "serials": ["S8", "S9"]}, source="erp")
    assert more.body["err"] == "BAD_REQUEST" and "2 serials for 1 units" in more.body["msg"], more.body
    text = await core.request("receipt", {"id": "r4", "sku": "SKU-3", "lot": "L2", "expiry": "2031-01-01", "qty": 3,
                                          "serials": "S7S"}, source="erp")
    assert text.body["err"] == "BAD_REQUEST" and "serials" in text.body["msg"], text.body
    assert last_seq(core.store) == before and lot_row(core.store, "SKU-3", "L2") is None
    # A transfer out (an ERP movement) of a serial the lot does not hold, through the shared movement code.
    tx = core.store.begin(write=True)
    try:
        post_movement(tx, SimpleNamespace(now_ms=int(NOW * 1000), settings=STORE),
                      {"type": "transfer_out", "sku": "SKU-3", "lot": "L1", "qty": 1, "serials": ["S7"]}, "erp:t1")
    except Refused as exc:
        assert exc.code == "BAD_REQUEST" and "S7" in exc.message and "lot L1" in exc.message, exc.message
    else:
        raise AssertionError("a transfer of a serial the lot does not hold was accepted")
    finally:
        tx.abort()
    assert lot_row(core.store, "SKU-3", "L1")["serials"] == ["S1", "S2", "S3"]


async def test_a_lot_counted_empty_lets_go_of_its_serials(core):
    # The count finds L1 empty and one unit in L5: L1's serials are no longer units in the store.
    res = await core.request("scan", {"id": "c1", "role": "count", "code": "raw", "gtin": None, "hibc": "H123ABC1230",
                                      "lot": "L5", "expiry": "2031-01-01", "serial": None, "quantity": None},
                             source="backroom", channel="scanner")
    assert res.ok, res.body
    closed = await core.request("count_close", {"id": "close-1", "device": "backroom"}, source="backroom")
    assert closed.ok, closed.body
    assert lot_row(core.store, "SKU-3", "L1") is None
    # So the unit S1 can come in again.
    rec = await core.request("receipt", {"id": "r1", "sku": "SKU-3", "lot": "L2", "expiry": "2031-01-01", "qty": 1,
                                         "serials": ["S1"]}, source="erp")
    assert rec.ok, rec.body
    assert verify(core.store) == []


async def test_a_recall_of_every_lot_refuses_a_sale_naming_no_lot_and_records_it(core):
    apply_master(core.store, "recalls", {"recalls": [{"recall_id": "R-ALL", "sku": "SKU-1", "lot": None,
                                                      "reason": "labeling"}]}, version=1)
    before = last_seq(core.store)
    res = await sale(core, "RA", [{"code": "SKU-1", "qty": 1}], 1990)
    assert res.body["err"] == "RECALLED_LOT", res.body
    with core.store.read() as tx:
        events = list(tx.events(before + 1))
        assert tx.get("lots", b"SKU-1\x00") is None
    assert [(e["type"], e["recall_id"]) for e in events] == [("refusal", "R-ALL")]
    assert lot_qty(core.store, "SKU-1", "A1") == 10

