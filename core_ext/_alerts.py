"""Alerts kept current as stock moves: low stock, lots expiring within the policy's window, recalled
lots still on hand, and units sold beyond the ledger's stock (the unallocated balance below zero).

One alert per kind, SKU and lot. A newly raised alert is also appended to the log as an `alert`
document so the ERP hears of it; a cleared one simply disappears from the open alerts.
"""
from __future__ import annotations

from . import _master
from ._select import ledger
from ._store import split_lot_key


def alert_key(sku: str, kind: str, lot: str | None) -> bytes:
    return f"{sku}\x00{kind}\x00{lot or ''}".encode()


def _sku_alerts(tx, sku: str) -> dict:
    """The alerts of the SKU as a whole: low stock, units sold beyond the ledger's stock."""
    out = {}
    item = _master.item(tx, sku)
    on_hand = ledger.on_hand(tx, sku)
    if item is not None and item.reorder_point > 0 and on_hand <= item.reorder_point:
        suggested = item.reorder_point - on_hand + max(item.reorder_qty, 1)
        out[alert_key(sku, "low_stock", None)] = {"kind": "low_stock", "sku": sku, "lot": None, "on_hand": on_hand,
                                                  "reorder_point": item.reorder_point, "suggested_qty": suggested}
    unallocated = ledger.lot_qty(tx, sku, None)
    if unallocated < 0:
        out[alert_key(sku, "unallocated", None)] = {"kind": "unallocated", "sku": sku, "lot": None, "qty": unallocated}
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
        # The lots' alerts (expiring, recalled) are evaluated by the ledger core, every lot here.
        want.update(ledger.lot_alerts(tx, sku, None, today, warn_days, recalls))
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
        touched.setdefault(move.sku, set()).add(move.lot)
    for sku, lots in touched.items():
        want = _sku_alerts(tx, sku)
        want.update(ledger.lot_alerts(tx, sku, lots, today, warn_days, _master.recalls_of(tx, sku)))
        have = [alert_key(sku, "low_stock", None), alert_key(sku, "unallocated", None)]
        for lot in lots:
            have += [alert_key(sku, "expiring", lot), alert_key(sku, "recalled", lot)]
        # One sync per SKU: the keys are distinct per lot and kind, so the alerts and the `alert`
        # events come out as they would lot by lot (SKU-wide first, then each lot in turn).
        raised += _sync(tx, want, have, now_ms)
    return raised


def refresh_all(tx, now_ms: int, timezone: str) -> int:
    """Re-evaluate every SKU's alerts (dates moved, or a recall, catalog or policy changed)."""
    from ._localtime import today
    return refresh(tx, all_skus(tx), today(now_ms, timezone), now_ms)


def all_skus(tx) -> list[str]:
    skus = set(_master.view(tx).items)
    skus.update(split_lot_key(k)[0] for k, _ in tx.items("lots"))
    skus.update(k.decode().split("\x00", 1)[0] for k, _ in tx.items("alerts"))
    return sorted(skus)


def open_alerts(tx) -> list[dict]:
    return [alert for _k, alert in tx.items("alerts")]
