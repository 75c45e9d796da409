"""What a parsed scan does by its scanner's role, in the core (the serial side is in test_scanner.py)."""
from __future__ import annotations

from ._data import GTIN_STRIPS, apply_master


def scan(n, role, lot="N1", **extra):
    return {"id": f"{role}-{n}", "role": role, "code": "raw", "gtin": GTIN_STRIPS, "hibc": None, "lot": lot,
            "expiry": "2029-05-31", "serial": None, "quantity": None, **extra}


async def test_receive_books_one_unit_with_the_barcodes_lot_and_expiry(core):
    res = await core.request("scan", scan(1, "receive"), source="backroom", channel="scanner")
    assert res.ok, res.body
    with core.store.read() as tx:
        assert tx.get("lots", b"SKU-1\x00N1") == {"qty": 1, "expiry": "2029-05-31", "serials": []}
        assert tx.event(res.body["seq"])["type"] == "receipt"


async def test_a_recalled_lot_is_refused_at_receive_and_lane_and_raises_an_alert(core):
    apply_master(core.store, "recalls", {"recalls": [{"recall_id": "R-5", "gtin": GTIN_STRIPS, "lot": "N1",
                                                      "reason": "mislabelled"}]})
    with core.store.read() as tx:
        last = tx.last_seq()
    for n, role in enumerate(("receive", "lane")):
        res = await core.request("scan", scan(n, role, lane="1"), source="backroom", channel="scanner")
        assert res.body["err"] == "RECALLED_LOT" and "R-5" in res.body["msg"]
    with core.store.read() as tx:
        alerts = [e for e in tx.events(last + 1)]
        assert tx.get("lots", b"SKU-1\x00N1") is None and tx.get("baskets", "1") is None
    assert [(e["type"], e["kind"], e["role"]) for e in alerts] == [("alert", "recalled_scan", "receive"),
                                                                   ("alert", "recalled_scan", "lane")]


async def test_lane_scans_fill_the_basket_that_a_sale_of_that_lane_empties(core):
    for n in range(2):
        res = await core.request("scan", scan(n, "lane", lot="C3", lane="4"), source="lane4-scanner", channel="scanner")
        assert res.ok, res.body
    basket = await core.request("lane_basket", {"id": "b", "lane": "4"}, channel="pos")
    assert [(l["sku"], l["lot"], l["qty"]) for l in basket.body["lines"]] == [("SKU-1", "C3", 1)] * 2
    sold = await core.request("sale", {"id": "s4", "lane": "4", "lines": [{"code": "SKU-1", "qty": 2, "lot": "C3"}],
                                       "payments": [{"method": "cash", "cents": 3980}]})
    assert sold.ok, sold.body
    after = await core.request("lane_basket", {"id": "b2", "lane": "4"}, channel="pos")
    assert after.body["lines"] == []


async def test_a_pos_file_selling_a_recalled_lot_applies_it_and_raises_an_alert(core):
    # Amended spec: the file's sales already happened, so the sale is recorded and alerted (it used
    # to refuse the whole file and record a refusal).
    apply_master(core.store, "recalls", {"recalls": [{"recall_id": "R-7", "sku": "SKU-1", "lot": "A1"}]})
    docs = [{"t": "sale", "id": "f:1", "rows": [2], "lines": [{"code": "SKU-4", "qty": 1}]},
            {"t": "sale", "id": "f:2", "rows": [3], "lines": [{"code": "SKU-1", "qty": 1, "lot": "A1"}]}]
    res = await core.request("csv_slice", {"file": "day.csv", "hash": "ab" * 32, "baskets": 2, "rows": 2,
                                           "first": 0, "docs": docs}, source="legacy", channel="csv")
    assert res.ok, res.body
    assert (res.body["applied"], res.body["refused"]) == (2, [])
    with core.store.read() as tx:
        assert tx.get("ids", "legacy:f:1") is not None and tx.get("ids", "legacy:f:2") is not None
        [alert] = [e for e in tx.events() if e["type"] == "alert" and e["kind"] == "RECALLED_LOT_SOLD"]
        sale = tx.event(alert["sale_seq"])
    assert (alert["file"], alert["basket"], alert["sku"], alert["lot"], alert["recall_id"], alert["rows"]) == \
        ("day.csv", "f:2", "SKU-1", "A1", "R-7", [3])
    assert (sale["type"], sale["id"]) == ("sale", "legacy:f:2")
