"""Alerts kept current, cycle counts closed into adjustments, and `gateway verify-ledger`."""
from __future__ import annotations

import os
import subprocess
import sys

from core_ext import Store
from core_ext._verify import verify

from ._data import apply_master

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def alerts(store):
    with store.read() as tx:
        return {(a["kind"], a["sku"], a["lot"]): a for _k, a in tx.items("alerts")}


async def test_low_stock_alert_with_suggested_quantity_comes_and_goes(core):
    # SKU-1: 35 on hand, reorder point 5, reorder quantity 20.
    res = await core.request("sale", {"id": "a1", "lines": [{"code": "SKU-1", "qty": 31}],
                                      "payments": [{"method": "cash", "cents": 31 * 1990}]})
    assert res.ok, res.body
    low = alerts(core.store)[("low_stock", "SKU-1", None)]
    assert low["on_hand"] == 4 and low["suggested_qty"] == 5 - 4 + 20
    with core.store.read() as tx:
        raised = [e for e in tx.events() if e["type"] == "alert" and e["kind"] == "low_stock"]
    assert len(raised) == 1  # raised once, as a document for the ERP
    await core.request("receipt", {"id": "r1", "sku": "SKU-1", "lot": "D4", "expiry": "2029-01-01", "qty": 30},
                       source="erp")
    assert ("low_stock", "SKU-1", None) not in alerts(core.store)


async def test_expiry_window_and_recalled_on_hand_alerts(core, clock):
    assert ("expiring", "SKU-1", "B2") not in alerts(core.store)  # 37 days left, window 30
    clock.t += 10 * 86400
    res = await core.request("alerts_refresh", {}, source="timer")
    assert res.body["raised"] >= 1
    expiring = alerts(core.store)[("expiring", "SKU-1", "B2")]
    assert expiring["days_left"] == 27 and expiring["qty"] == 5
    apply_master(core.store, "recalls", {"recalls": [{"recall_id": "R-9", "sku": "SKU-3", "lot": None,
                                                      "reason": "implant batch"}]})
    await core.request("alerts_refresh", {}, source="timer")
    recalled = alerts(core.store)[("recalled", "SKU-3", "L1")]
    assert recalled["recall_id"] == "R-9" and recalled["qty"] == 3


async def test_count_close_turns_the_difference_into_a_count_event(core):
    # Counted: 8 of lot A1 (ledger 10) and 2 of a lot the ledger did not know; B2 and C3 not seen.
    for lot, n in (("A1", 8), ("Z9", 2)):
        for _ in range(n):
            res = await core.request("scan", {"id": f"{lot}-{_}", "role": "count", "gtin": None, "hibc": None,
                                              "code": "x"}, source="desk")
            assert res.body["err"] == "UNKNOWN_ITEM"  # no code: nothing counted
            res = await core.request("scan", {"id": f"{lot}-{_}b", "role": "count", "gtin": "06901234567892",
                                              "lot": lot, "expiry": "2027-09-30", "code": "raw"}, source="desk")
            assert res.ok, res.body
    res = await core.request("count_close", {"id": "close-1", "device": "desk"}, source="desk")
    assert res.ok, res.body
    rows = {(r[0], r[1]): (r[2], r[3]) for r in res.body["counted"]}
    assert rows[("SKU-1", "A1")] == (8, -2)
    assert rows[("SKU-1", "Z9")] == (2, 2)
    assert rows[("SKU-1", "B2")] == (0, -5) and rows[("SKU-1", "C3")] == (0, -20)
    stock = await core.request("stock", {"id": "s", "code": "SKU-1"})
    assert stock.body["on_hand"] == 10
    again = await core.request("count_close", {"id": "close-2", "device": "desk"}, source="desk")
    assert again.body["err"] == "BAD_REQUEST"  # the count was closed
    assert verify(core.store) == []


def _verify_cli(data_dir):
    return subprocess.run([sys.executable, "-m", "gateway", "verify-ledger", "--data-dir", data_dir],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True)


def test_verify_ledger_command_passes_then_catches_a_tampered_balance(seeded_store, tmp_path):
    path = seeded_store.path
    seeded_store.close()
    ok = _verify_cli(path)
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout
    store = Store(path)
    with store.begin(write=True) as tx:
        tx.put("lots", b"SKU-1\x00A1", {"qty": 11, "expiry": "2027-03-31", "serials": []})
    store.close()
    bad = _verify_cli(path)
    assert bad.returncode == 1
    assert "SKU-1 lot A1: stored 11, replay gives 10" in bad.stdout
