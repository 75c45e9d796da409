"""A small store's master data and opening stock, shared by the tests."""
from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

from core_ext import Settings, _master, _stock, is_total_key, total_key

STORE = Settings(store_id="S001", timezone="Asia/Shanghai")
# 2026-11-24 10:00 in the store (02:00 UTC): fixed so expiry dates in the tests mean the same every day.
NOW = datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc).timestamp()


def with_check_digit(body: str) -> str:
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(body.zfill(13)))
    return body + str((10 - total % 10) % 10)


GTIN_STRIPS = with_check_digit("0690123456789")
GTIN_THERMO = with_check_digit("0400638133393")
GTIN_BANDAGE = with_check_digit("590123412345")  # an EAN-13, stored as GTIN-14 with a leading 0

CATALOG = {"items": [
    {"sku": "SKU-1", "name": "Glucose test strips 50", "gtins": [GTIN_STRIPS], "category": "consumable",
     "unit_cents": 1990, "lot_tracked": True, "serial_tracked": False, "reorder_point": 5, "reorder_qty": 20,
     "active": True},
    {"sku": "SKU-2", "name": "Digital thermometer", "gtins": [GTIN_THERMO], "pos_codes": ["4711"],
     "category": "device", "unit_cents": 4990, "lot_tracked": False, "serial_tracked": False,
     "reorder_point": 0, "reorder_qty": 0, "active": True},
    {"sku": "SKU-3", "name": "Hip implant", "gtins": [], "hibc": ["H123ABC1230"], "category": "implant",
     "unit_cents": 120000, "lot_tracked": True, "serial_tracked": True, "reorder_point": 1, "reorder_qty": 2,
     "active": True},
    {"sku": "SKU-4", "name": "Bandage", "gtins": [GTIN_BANDAGE], "pos_codes": ["B-100"], "category": "consumable",
     "unit_cents": 350, "lot_tracked": False, "serial_tracked": False, "reorder_point": 0, "reorder_qty": 0,
     "active": True},
]}

MEMBERS = {"mode": "full", "members": [
    {"id": "M1", "tier": "gold", "points": 1000, "name": "Li Wei"},
    {"id": "M2", "tier": "silver", "points": 0, "name": "Zhang Min"},
]}

OPENING = [
    {"type": "receipt", "sku": "SKU-1", "lot": "A1", "expiry": "2027-03-31", "qty": 10},
    {"type": "receipt", "sku": "SKU-1", "lot": "B2", "expiry": "2026-12-31", "qty": 5},
    {"type": "receipt", "sku": "SKU-1", "lot": "C3", "expiry": "2028-01-31", "qty": 20},
    {"type": "receipt", "sku": "SKU-2", "lot": None, "expiry": None, "qty": 50},
    {"type": "receipt", "sku": "SKU-3", "lot": "L1", "expiry": "2030-01-01", "qty": 3, "serials": ["S1", "S2", "S3"]},
    {"type": "receipt", "sku": "SKU-4", "lot": None, "expiry": None, "qty": 100},
]


def apply_master(store, kind: str, body, version: int = 1) -> None:
    """Put a master document in force directly (the upstream API does this through the core loop)."""
    with store.begin(write=True) as tx:
        assert _master.validate(kind, body) == []
        _master.apply(tx, kind, version, body)
        if kind == "promotions":
            from core_ext import u64
            tx.put("master_docs", b"promotions\x00" + u64(version), body)
        tx.put("master", kind, {"version": version, "issued_ms": 0, "effective_ms": 0})


def seed(store, *, stock: bool = True) -> None:
    apply_master(store, "catalog", CATALOG)
    apply_master(store, "members", MEMBERS)
    if stock:
        ctx = SimpleNamespace(now_ms=int(NOW * 1000), settings=STORE)
        with store.begin(write=True) as tx:
            for i, movement in enumerate(OPENING):
                _stock.post_movement(tx, ctx, movement, f"erp:opening-{i}")


def _written(tx):
    """`tx`, its `lots` table as its commit will leave it: the rows the writer's balances changed
    are written when a group commits (`Tx.flush`), so a group's own transaction writes them first."""
    if tx.write:
        tx.flush()
    return tx


def stored_on_hand(tx, sku: str, default=None):
    """A SKU's on-hand total as the `lots` table holds it (`total_key`, beside its lots)."""
    return _written(tx).get("lots", total_key(sku), default)


def stored_lot_rows(tx) -> dict:
    """The `lots` table's lot rows, {key bytes: row}, without the SKUs' totals."""
    return {bytes(k): row for k, row in _written(tx).items("lots") if not is_total_key(k)}


def stored_totals(tx) -> dict:
    """Every SKU's on-hand total as the `lots` table holds it, {sku: total}."""
    return {k.decode(): v for k, v in _written(tx).items("lots") if is_total_key(k)}
