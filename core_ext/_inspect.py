"""Read-only views of the store for people: the status page, `gateway status`, `stock`, `alerts`.

Every function here takes a read transaction (`Store.read()`) and reads the LMDB tables directly,
never the writer's in-memory state, so it is safe beside a running gateway and never holds the
writer. Nothing returned names a member or carries a key: these views are shown on screens.
"""
from __future__ import annotations

from . import _master
from ._localtime import local_datetime, today
from ._store import _unpack, split_lot_key, total_key, u64

# Events read backwards at most, per view: bounds what one page costs on a busy day.
MAX_EVENTS_SCANNED = 200_000
LOT_REFUSALS = ("RECALLED_LOT", "EXPIRED_LOT")


def events_backwards(tx, limit: int = MAX_EVENTS_SCANNED):
    """The newest events first, at most `limit` of them."""
    cursor = tx.txn.cursor(db=tx.db["events"])
    if not cursor.last():
        return
    for _n in range(limit):
        yield _unpack(cursor.value())
        if not cursor.prev():
            return


def _lane() -> dict:
    return {"sales": 0, "sales_cents": 0, "returns": 0, "refund_cents": 0, "refusals": 0}


def day_sales(tx, now_ms: int, timezone: str) -> dict:
    """Today's figures by lane (the source that sold) and payment method, in the store's day.

    Computed from the day's `sale`, `return` and `refusal` events; when running day totals are
    kept (day close), this is the one function to point at them.
    """
    day = today(now_ms, timezone)
    lanes: dict = {}
    payments: dict = {}
    for event in events_backwards(tx):
        ts = event.get("ts_ms")
        if isinstance(ts, int) and local_datetime(ts, timezone).date().isoformat() < day:
            break
        kind = event.get("type")
        if kind not in ("sale", "return", "refusal"):
            continue
        lane = lanes.setdefault(str(event.get("lane") or event.get("source") or "?"), _lane())
        if kind == "sale":
            lane["sales"] += 1
            lane["sales_cents"] += event.get("total_cents") or 0
            for payment in event.get("payments") or ():
                method = str(payment.get("method", "?"))
                payments[method] = payments.get(method, 0) + (payment.get("cents") or 0)
        elif kind == "return":
            lane["returns"] += 1
            lane["refund_cents"] += event.get("refund_cents") or 0
        else:
            lane["refusals"] += 1
    return {"day": day, "lanes": dict(sorted(lanes.items())), "payments": dict(sorted(payments.items())),
            "sales": sum(l["sales"] for l in lanes.values()),
            "sales_cents": sum(l["sales_cents"] for l in lanes.values()),
            "refund_cents": sum(l["refund_cents"] for l in lanes.values())}


def latest_refusals(tx, limit: int = 10, *, scan: int = 20_000) -> list[dict]:
    """The newest refusals of a recalled or expired lot offered for sale, newest first."""
    out = []
    for event in events_backwards(tx, scan):
        if event.get("type") == "refusal" and event.get("err") in LOT_REFUSALS:
            out.append({"ts_ms": event.get("ts_ms"), "source": event.get("source"), "err": event.get("err"),
                        "sku": event.get("sku"), "lot": event.get("lot"), "recall_id": event.get("recall_id"),
                        "expiry": event.get("expiry")})
            if len(out) >= limit:
                break
    return out


def stock_alerts(tx) -> dict:
    """Open alerts by kind, each with the item's name: what to reorder, to pull, to sell first."""
    names = {k.decode(): row.get("name") or "" for k, row in tx.items("catalog")}
    out = {"low_stock": [], "expiring": [], "recalled": [], "unallocated": []}
    for _key, alert in tx.items("alerts"):
        entry = {**alert, "name": names.get(alert.get("sku"), "")}
        out.setdefault(alert.get("kind", "other"), []).append(entry)
    out["expiring"].sort(key=lambda a: (a.get("expiry") or "", a.get("sku") or ""))
    return out


def master_versions(tx) -> dict:
    """Each master-data kind: the version in force (with when it took effect) and those waiting."""
    out = {}
    for key, row in tx.items("master"):
        out[key.decode()] = {"version": row.get("version", 0), "issued_ms": row.get("issued_ms"),
                             "effective_ms": row.get("effective_ms"),
                             "pending": [{"version": p.get("version"), "issued_ms": p.get("issued_ms"),
                                          "effective_ms": p.get("effective_ms")} for p in row.get("pending", [])]}
    return out


def ledger_head(tx) -> dict:
    """The event log's head: how many events, and when the last was recorded."""
    last = tx.last_seq()
    doc = tx.get("events", u64(last)) if last else None
    return {"events": last, "last_event_ms": doc.get("ts_ms") if isinstance(doc, dict) else None,
            "skus": tx.meta("skus", 0)}


def stock_of(tx, code: str, now_ms: int, timezone: str) -> dict | None:
    """On hand by lot of the item `code` names (SKU, GTIN, POS code or a raw scan), or None.

    Each lot says its expiry, whether it is expired or within the expiry window, and its recall.
    """
    from ._sales import resolve_code
    item, facts = resolve_code(tx, code.strip())
    if item is None:
        return None
    view = _master.view(tx)
    day = today(now_ms, timezone)
    warn_days = view.policy["expiry_warn_days"]
    lots = []
    for key, row in tx.items("lots", prefix=item.sku.encode() + b"\x00"):
        _sku, lot = split_lot_key(key)
        expiry = row.get("expiry")
        recall = view.recall_of(item.sku, lot) if lot is not None else (view.recalls.get(item.sku) or {}).get(None)
        lots.append({"lot": lot, "qty": row.get("qty", 0), "expiry": expiry,
                     "expired": expiry is not None and expiry < day,
                     "expiring": expiry is not None and day <= expiry and _days(day, expiry) <= warn_days,
                     "recall_id": recall["recall_id"] if recall else None,
                     "serials": len(row.get("serials") or ())})
    lots.sort(key=lambda l: (l["expiry"] or "9999", l["lot"] or ""))
    return {"sku": item.sku, "name": item.name, "category": item.category, "unit_cents": item.unit_cents,
            "active": item.active, "code": code, "scanned": {k: v for k, v in facts.items() if v is not None},
            "on_hand": tx.get("lots", total_key(item.sku)) or 0, "reorder_point": item.reorder_point,
            "reorder_qty": item.reorder_qty, "lots": lots,
            "recalls": [{"lot": lot, "recall_id": r.get("recall_id"), "reason": r.get("reason", "")}
                        for lot, r in sorted((view.recalls.get(item.sku) or {}).items(), key=lambda x: x[0] or "")],
            "alerts": [a for _k, a in tx.items("alerts", prefix=item.sku.encode() + b"\x00")]}


def _days(first: str, second: str) -> int:
    from ._localtime import days_between
    return days_between(first, second)
