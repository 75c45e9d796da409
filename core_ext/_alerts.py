"""Alerts kept current as stock moves: low stock, lots expiring within the policy's window, recalled
lots still on hand, and units sold beyond the ledger's stock (the unallocated balance below zero).

One alert per kind, SKU and lot. A newly raised alert is also appended to the log as an `alert`
document so the ERP hears of it; a cleared one simply disappears from the open alerts.
"""
from __future__ import annotations

from . import _master
from ._localtime import days_between
from ._store import lot_key, split_lot_key


def alert_key(sku: str, kind: str, lot: str | None) -> bytes:
    return f"{sku}\x00{kind}\x00{lot or ''}".encode()


def _sku_alerts(tx, sku: str) -> dict:
    """The alerts of the SKU as a whole: low stock, units sold beyond the ledger's stock."""
    out = {}
    item = tx.get("catalog", sku)
    on_hand = tx.get("skus", sku, 0)
    if item and item.get("reorder_point", 0) > 0 and on_hand <= item["reorder_point"]:
        suggested = item["reorder_point"] - on_hand + max(item.get("reorder_qty", 0), 1)
        out[alert_key(sku, "low_stock", None)] = {"kind": "low_stock", "sku": sku, "lot": None, "on_hand": on_hand,
                                                  "reorder_point": item["reorder_point"], "suggested_qty": suggested}
    unallocated = (tx.get("lots", lot_key(sku, None)) or {"qty": 0})["qty"]
    if unallocated < 0:
        out[alert_key(sku, "unallocated", None)] = {"kind": "unallocated", "sku": sku, "lot": None, "qty": unallocated}
    return out


def _lot_alerts(sku: str, lot, row, today: str, warn_days: int, recalls: dict) -> dict:
    """The alerts of one lot with stock: expiring within the window, recalled."""
    out = {}
    qty = row["qty"] if row else 0
    if qty <= 0:
        return out
    expiry = row.get("expiry")
    if expiry is not None:
        left = days_between(today, expiry)
        if left <= warn_days:
            out[alert_key(sku, "expiring", lot)] = {"kind": "expiring", "sku": sku, "lot": lot, "expiry": expiry,
                                                    "days_left": left, "qty": qty}
    recall = recalls.get(lot) or recalls.get(None)
    if recall is not None:
        out[alert_key(sku, "recalled", lot)] = {"kind": "recalled", "sku": sku, "lot": lot, "qty": qty,
                                                "recall_id": recall["recall_id"], "reason": recall.get("reason", "")}
    return out


def _sync(tx, want: dict, have_keys, now_ms: int) -> int:
    """Make the stored alerts among `have_keys` exactly `want`; returns how many were newly raised."""
    raised = 0
    for key in have_keys:
        if key not in want:
            tx.delete("alerts", key)
    for key, alert in want.items():
        old = tx.get("alerts", key)
        if old is None:
            raised += 1
            # An alert may be raised, cleared and raised again: the seq keeps each document's id unique.
            tx.append_event({"type": "alert", "id": f"alert:{alert['sku']}:{alert['kind']}:{alert['lot'] or ''}:"
                                                    f"{tx.last_seq() + 1}", "ts_ms": now_ms, "moves": [], **alert})
        if old != alert:
            tx.put("alerts", key, alert)
    return raised


def refresh(tx, skus, today: str, now_ms: int) -> int:
    """Re-evaluate every alert of `skus`, every lot; returns how many were newly raised."""
    warn_days = _master.policy(tx)["expiry_warn_days"]
    raised = 0
    for sku in skus:
        recalls = _master.recalls_of(tx, sku)
        want = _sku_alerts(tx, sku)
        for key, row in tx.items("lots", prefix=sku.encode() + b"\x00"):
            want.update(_lot_alerts(sku, split_lot_key(key)[1], row, today, warn_days, recalls))
        have = [key for key, _ in tx.items("alerts", prefix=sku.encode() + b"\x00")]
        raised += _sync(tx, want, have, now_ms)
    return raised


def after_moves(tx, moves, today: str, now_ms: int) -> int:
    """Bring up to date what `moves` can have changed: their SKUs' totals and the lots they touched.

    Lots not moved keep their alerts; dates and master data moving are `refresh`'s business.
    """
    warn_days = _master.policy(tx)["expiry_warn_days"]
    raised = 0
    touched = {}
    for move in moves:
        touched.setdefault(move[0], set()).add(move[1])
    for sku, lots in touched.items():
        raised += _sync(tx, _sku_alerts(tx, sku), [alert_key(sku, "low_stock", None),
                                                   alert_key(sku, "unallocated", None)], now_ms)
        recalls = _master.recalls_of(tx, sku)
        for lot in lots:
            want = _lot_alerts(sku, lot, tx.get("lots", lot_key(sku, lot)), today, warn_days, recalls)
            raised += _sync(tx, want, [alert_key(sku, "expiring", lot), alert_key(sku, "recalled", lot)], now_ms)
    return raised


def refresh_all(tx, now_ms: int, timezone: str) -> int:
    """Re-evaluate every SKU's alerts (dates moved, or a recall, catalog or policy changed)."""
    from ._localtime import today
    return refresh(tx, all_skus(tx), today(now_ms, timezone), now_ms)


def all_skus(tx) -> list[str]:
    skus = {k.decode() for k, _ in tx.items("catalog")}
    skus.update(split_lot_key(k)[0] for k, _ in tx.items("lots"))
    skus.update(k.decode().split("\x00", 1)[0] for k, _ in tx.items("alerts"))
    return sorted(skus)


def open_alerts(tx) -> list[dict]:
    return [alert for _k, alert in tx.items("alerts")]
