"""Alerts kept current as stock moves: low stock, lots expiring within the policy's window, recalled
lots still on hand, and units sold beyond the ledger's stock (the unallocated balance below zero).

One alert per kind, SKU and lot. A newly raised alert is also appended to the log as an `alert`
document so the ERP hears of it; a cleared one simply disappears from the open alerts. The writer
keeps the open alerts in memory (`OpenAlerts` in the sale path's twins), so keeping alerts
current after a sale costs nothing when none is open or due.
"""
from __future__ import annotations

from . import _master
from ._select import ledger, salepath
from ._store import alert_key

__all__ = ["alert_key", "refresh", "after_moves", "refresh_all", "all_skus", "open_alerts"]


def refresh(tx, skus, today: str, now_ms: int) -> int:
    """Re-evaluate every alert of `skus`, every lot; returns how many were newly raised."""
    warn_days = _master.policy(tx)["expiry_warn_days"]
    raised = 0
    for sku in skus:
        recalls = _master.recalls_of(tx, sku)
        want = salepath.sku_alerts(tx, sku)
        # The lots' alerts (expiring, recalled) are evaluated by the ledger core, every lot here.
        want.update(ledger.lot_alerts(tx, sku, None, today, warn_days, recalls))
        have = [key for key, _ in tx.items("alerts", prefix=sku.encode() + b"\x00")]
        raised += salepath.sync_alerts(tx, want, have, now_ms)
    return raised


def after_moves(tx, moves, today: str, now_ms: int) -> int:
    """Bring up to date what `moves` can have changed: their SKUs' totals and the lots they touched
    (lots not moved keep their alerts; dates and master data moving are `refresh`'s business)."""
    return salepath.after_moves(tx, moves, today, now_ms)


def refresh_all(tx, now_ms: int, timezone: str) -> int:
    """Re-evaluate every SKU's alerts (dates moved, or a recall, catalog or policy changed)."""
    from ._localtime import today
    return refresh(tx, all_skus(tx), today(now_ms, timezone), now_ms)


def all_skus(tx) -> list[str]:
    skus = set(_master.view(tx).items)
    skus.update(sku for sku, _lot in ledger.lot_keys(tx))
    skus.update(k.decode().split("\x00", 1)[0] for k, _ in tx.items("alerts"))
    return sorted(skus)


def open_alerts(tx) -> list[dict]:
    return [alert for _k, alert in tx.items("alerts")]
