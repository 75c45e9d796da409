"""Master-data content checks name each bad entry; what the store cannot hold is refused, not crashed on."""
from __future__ import annotations

import copy

from core_ext import _master

from ._data import CATALOG, MEMBERS


def test_a_valid_catalog_members_recalls_and_policy_pass():
    assert _master.validate("catalog", CATALOG) == []
    assert _master.validate("members", MEMBERS) == []
    assert _master.validate("recalls", {"recalls": [{"recall_id": "R", "sku": "SKU-1", "lot": None}]}) == []
    assert _master.validate("policy", {"negative_stock": "refuse", "expiry_warn_days": 10}) == []


def test_each_bad_catalog_entry_is_named():
    bad = copy.deepcopy(CATALOG)
    bad["items"][0]["unit_cents"] = -1
    bad["items"][1]["gtins"] = ["12345678"]           # wrong check digit
    bad["items"][2]["sku"] = "S" * 200                # longer than a store key may be
    bad["items"][3]["pos_codes"] = ["4711"]           # already SKU-2's
    errors = _master.validate("catalog", bad)
    assert any("items[0] (sku 'SKU-1'): unit_cents" in e for e in errors)
    assert any("items[1]" in e and "12345678" in e for e in errors)
    assert any("items[2]" in e and "longer than 128 bytes" in e for e in errors)
    assert any("items[3]" in e and "'4711' already belongs to sku 'SKU-2'" in e for e in errors)


def test_a_price_reorder_point_or_quantity_beyond_the_bounds_is_refused_and_the_largest_allowed_is_alerted_on(tmp_path):
    from core_ext import Store, alerts, limits
    MAX_STOCK_UNITS = limits.MAX_STOCK_UNITS
    from ._data import NOW, apply_master
    for field in ("reorder_point", "reorder_qty"):
        for value in (2 ** 63, MAX_STOCK_UNITS + 1, -1):
            bad = copy.deepcopy(CATALOG)
            bad["items"][1][field] = value
            assert _master.validate("catalog", bad) == [
                f"items[1] (sku 'SKU-2'): {field} must be an integer from 0 to 1,000,000,000"]
    bad = copy.deepcopy(CATALOG)
    bad["items"][1]["unit_cents"] = 10 ** 14 + 1  # beyond what the promotion engine prices
    assert _master.validate("catalog", bad) == [
        "items[1] (sku 'SKU-2'): unit_cents must be an integer from 0 to 100,000,000,000,000"]
    # The bound itself: both flavours' alerts take it (the compiled one reads it as a C integer).
    most = copy.deepcopy(CATALOG)
    most["items"][1].update(reorder_point=MAX_STOCK_UNITS, reorder_qty=MAX_STOCK_UNITS)
    store = Store(str(tmp_path / "data"))
    apply_master(store, "catalog", most)
    with store.begin(write=True) as tx:
        alerts.refresh_all(tx, int(NOW * 1000), "UTC")
        low = tx.get("alerts", b"SKU-2\x00low_stock\x00")
    store.close()
    assert low["reorder_point"] == MAX_STOCK_UNITS and low["suggested_qty"] == 2 * MAX_STOCK_UNITS


def test_members_recalls_policy_problems_are_named():
    assert _master.validate("members", {"mode": "full", "members": [{"id": "M" * 129}]}) == [
        "members[0]: id must be a non-empty string of at most 128 bytes"]
    assert _master.validate("members", {"mode": "delta", "members": [{"id": "M1", "points": 10 ** 12 + 1}]}) == [
        "members[0] (id 'M1'): points must be an integer from 0 to 1,000,000,000,000"]
    errors = _master.validate("recalls", {"recalls": [{"recall_id": "R1", "sku": "A", "gtin": "06901234567892"},
                                                      {"recall_id": "R2", "sku": "A", "lot": "L" * 300}]})
    assert errors == ["recalls[0] (recall_id 'R1'): give exactly one of gtin and sku",
                      "recalls[1] (recall_id 'R2'): sku and lot must be at most 128 bytes"]
    assert _master.validate("policy", {"negative_stock": "maybe", "colour": "red"}) == [
        "colour: unknown policy key", "negative_stock: must be 'allow' or 'refuse'"]


def test_a_policy_number_beyond_its_bounds_is_refused_and_the_longest_warning_is_sold_under(tmp_path):
    from core_ext import Store
    from ._data import apply_master, seed
    assert _master.validate("policy", {"expiry_warn_days": 36_501, "points_offline_cap": -1,
                                       "points_value_cents": 0, "batch_max_events": 2 ** 63}) == [
        "expiry_warn_days: must be an integer from 0 to 36,500",
        "points_offline_cap: must be an integer from 0 to 1,000,000,000,000",
        "points_value_cents: must be an integer from 1 to 100,000,000,000,000",
        "batch_max_events: must be an integer from 1 to 100,000"]
    # The longest warning allowed: a sale of a lot that expires within it is sold and warned of (the
    # compiled flavour once failed every such sale, reading 2**63 days as a C integer).
    store = Store(str(tmp_path / "data"))
    seed(store)
    apply_master(store, "policy", {"expiry_warn_days": 36_500, "points_offline_cap": 10 ** 12,
                                   "points_value_cents": 10 ** 14, "batch_max_events": 100_000}, version=2)
    answer = _sell_one(store, {"sku": "SKU-1", "qty": 1, "lot": "B2"})
    store.close()
    assert answer["ok"], answer
    assert "LOT_EXPIRES_SOON" in answer["warnings"]


def test_a_store_holding_numbers_beyond_todays_bounds_reads_them_at_the_bounds_and_sells(tmp_path):
    # What a gateway of an older release, with no bounds, may have stored: the compiled flavour failed
    # every sale of the SKU (its alerts read the numbers as C integers), and the twin too once the
    # suggested quantity passed what MessagePack holds. Each is read at today's bound.
    from core_ext import Store, alerts, limits
    from ._data import seed
    path = str(tmp_path / "data")
    store = Store(path)
    seed(store)
    with store.begin(write=True) as tx:
        tx.put("catalog", "SKU-1", {**tx.get("catalog", "SKU-1"), "reorder_point": 2 ** 63, "reorder_qty": 2 ** 64 - 1})
        tx.put("meta", "policy", {**(tx.meta("policy") or {}), "expiry_warn_days": 2 ** 63})
    store.close()
    store = Store(path)
    answer = _sell_one(store, {"sku": "SKU-1", "qty": 1, "lot": "A1"})
    assert answer["ok"], answer
    assert "LOT_EXPIRES_SOON" in answer["warnings"]
    with store.read() as tx:
        held = {(a["kind"], a["lot"]): a for a in alerts.open_alerts(tx)}
    store.close()
    low = held[("low_stock", None)]
    bound = limits.MAX_STOCK_UNITS
    assert low["reorder_point"] == bound and low["suggested_qty"] == bound - low["on_hand"] + bound
    assert ("expiring", "A1") in held  # the lot sold, under the longest warning


def _sell_one(store, line: dict) -> dict:
    """A terminal's quote of `line`, then its sale paid in cash, each a group of its own: the sale's answer."""
    from core_ext import Request
    from gateway._app_core import build_core
    from ._data import NOW, STORE
    core = build_core(store, STORE, clock=lambda: NOW, group_budget_s=float("inf"))
    quote = [[Request("quote", {"t": "quote", "id": "q1", "lines": [line]}, "lane1", "ecr"), None, None]]
    core._apply_group(quote)
    sale = [[Request("sale", {"t": "sale", "id": "s1", "lines": [line],
                              "payments": [{"method": "cash", "cents": quote[0][1].body["total_cents"]}]},
                     "lane1", "ecr"), None, None]]
    core._apply_group(sale)
    return sale[0][1].body


async def test_a_field_too_long_for_the_store_refuses_only_its_request(core):
    import trio
    from core_ext import Request
    results = {}

    async def send(name, body):
        results[name] = await core.submit(Request("receipt", body, source="erp"))

    async with trio.open_nursery() as n:
        n.start_soon(send, "long", {"id": "r-long", "sku": "SKU-1", "lot": "L" * 600, "expiry": None, "qty": 1})
        n.start_soon(send, "fine", {"id": "r-fine", "sku": "SKU-4", "qty": 1})
    assert results["long"].body["err"] == "BAD_REQUEST" and "too long" in results["long"].body["msg"]
    assert results["fine"].ok


async def test_refusal_documents_have_ids_of_their_own(core):
    from ._data import apply_master
    apply_master(core.store, "recalls", {"recalls": [{"recall_id": "R", "sku": "SKU-1", "lot": "A1"}]})
    body = {"id": "X1", "lines": [{"code": "SKU-1", "qty": 1, "lot": "A1"}], "payments": [{"method": "cash", "cents": 1990}]}
    for _ in range(2):
        assert (await core.request("sale", body)).body["err"] == "RECALLED_LOT"
    ok = await core.request("sale", {**body, "lines": [{"code": "SKU-1", "qty": 1}]})
    assert ok.ok
    with core.store.read() as tx:
        docs = [e for e in tx.events() if e.get("request_id") == "lane1:X1" or e["id"].startswith("lane1:X1")]
    ids = [d["id"] for d in docs]
    assert len(ids) == 3 and len(set(ids)) == 3 and "lane1:X1" in ids
