"""Stock that moves without a sale: receipts, ERP movements, scans by role, cycle counts, lane
baskets, and the periodic alert refresh (legacy POS files are in `_csv_files.py`)."""
from __future__ import annotations

from . import _alerts, _errors as E, _master, _sales
from ._errors import Refused, bad_request
from ._localtime import today
from ._records import Move
from ._select import ledger

MOVEMENT_TYPES = ("receipt", "transfer_out", "adjustment", "opening")



def _day(ctx) -> str:
    return today(ctx.now_ms, ctx.settings.timezone)


def _receipt_moves(tx, sku: str, lot, qty: int, expiry, serials) -> list[Move]:
    """A receipt first settles units sold beyond stock (the unallocated balance below zero)."""
    if lot is not None:
        unallocated = ledger.lot_qty(tx, sku, None)
        settle = min(qty, -unallocated) if unallocated < 0 else 0
        if settle:
            return [Move(sku, None, settle), Move(sku, lot, qty, expiry, tuple(serials)),
                    Move(sku, lot, -settle, expiry)]
    return [Move(sku, lot, qty, expiry, tuple(serials))]


def _check_serials(tx, event_id: str, kind: str, sku: str, lot, qty: int, serials) -> None:
    """Serials name units: a unit comes in only when not already held, and goes out only from
    the lot that holds it; there are never more serials than units moved."""
    if not isinstance(serials, list) or not all(isinstance(x, str) and x for x in serials):
        raise bad_request(f"movement {event_id}: serials must be a list of non-empty strings")
    if not serials:
        return
    if len(set(serials)) != len(serials):
        raise bad_request(f"movement {event_id}: serials name a unit twice")
    if len(serials) > abs(qty):
        raise bad_request(f"movement {event_id}: {len(serials)} serials for {abs(qty)} units")
    held = ledger.serial_holders(tx, sku)
    incoming = kind in ("receipt", "opening") or (kind == "adjustment" and qty > 0)
    for serial in serials:
        if incoming and serial in held and not (kind == "opening" and held[serial] == lot):
            raise bad_request(f"movement {event_id}: {sku} serial {serial} is already in stock "
                              f"(lot {held[serial] or '-'})")
        if not incoming and held.get(serial, object()) != lot:
            raise bad_request(f"movement {event_id}: {sku} serial {serial} is not in lot {lot or '-'}")


def post_movement(tx, ctx, movement: dict, event_id: str) -> int:
    """Apply one ERP stock movement (receipt, transfer_out, adjustment, opening); returns its seq."""
    kind = movement.get("type")
    if kind not in MOVEMENT_TYPES:
        raise bad_request(f"movement {event_id}: type must be one of {', '.join(MOVEMENT_TYPES)}")
    sku, qty = movement.get("sku"), movement.get("qty")
    item = _master.item(tx, sku) if isinstance(sku, str) else None
    if item is None:
        raise Refused(E.UNKNOWN_ITEM, f"movement {event_id}: sku {sku!r} is not in the catalog")
    if not isinstance(qty, int) or isinstance(qty, bool) or (kind != "adjustment" and qty < 0) or qty == 0 and kind != "opening":
        raise bad_request(f"movement {event_id}: qty {qty!r} is not valid for a {kind}")
    lot = movement.get("lot") if item.lot_tracked else None
    if item.lot_tracked and not lot:
        raise bad_request(f"movement {event_id}: {sku} is tracked by lot, give its lot")
    expiry = movement.get("expiry")
    serials = movement.get("serials") or []
    have = ledger.lot_qty(tx, sku, lot)
    _check_serials(tx, event_id, kind, sku, lot, qty, serials)
    if kind == "receipt":
        moves = _receipt_moves(tx, sku, lot, qty, expiry, serials)
    elif kind == "opening":
        moves = [Move(sku, lot, qty - have, expiry, tuple(serials))] if qty != have or serials else []
    else:
        delta = -qty if kind == "transfer_out" else qty
        if have + delta < 0:
            raise Refused(E.INSUFFICIENT_STOCK, f"movement {event_id}: {kind} of {abs(delta)} {sku} lot {lot} "
                                                f"would leave {have + delta} (transfers and adjustments never go below zero)")
        moves = [Move(sku, lot, delta, expiry, tuple(serials))]
    ledger.apply_moves(tx, moves)
    doc = {"type": kind, "id": event_id, "ts_ms": ctx.now_ms, "sku": sku, "lot": lot, "expiry": expiry,
           "qty": qty, "reason": movement.get("reason"), "moves": moves}
    if kind == "opening":
        doc["set_to"] = qty
    seq = tx.append_event(doc)
    _alerts.after_moves(tx, moves, _day(ctx), ctx.now_ms)
    return seq


def handle_receipt(tx, request, ctx) -> dict:
    """A receipt from a device or a test: {"id", "sku", "lot", "expiry", "serials", "qty"}."""
    body = dict(request.body)
    body["type"] = "receipt"
    return {"seq": post_movement(tx, ctx, body, f"{request.source}:{body.get('id')}")}


# --- scans -----------------------------------------------------------------------------------

def handle_scan(tx, request, ctx) -> dict:
    """A parsed barcode from a scanner, applied by the scanner's role."""
    body = request.body
    role = body.get("role")
    item = _sales.item_for_scan(tx, body.get("gtin"), body.get("hibc"))
    if item is None:
        raise Refused(E.UNKNOWN_ITEM, f"scan {body.get('code')!r} matches nothing in the catalog")
    sku = item.sku
    lot = body.get("lot") if item.lot_tracked else None
    expiry = body.get("expiry")
    serial = body.get("serial")
    qty = body.get("quantity") or 1
    recall = _master.recall_of(tx, sku, lot)
    if recall is not None and role in ("receive", "lane") and (lot is not None or not item.lot_tracked):
        raise Refused(E.RECALLED_LOT, f"{sku} lot {lot or '(all lots)'} is recalled ({recall['recall_id']})",
                      record={"type": "alert", "kind": "recalled_scan", "role": role, "sku": sku, "lot": lot,
                              "recall_id": recall["recall_id"], "device": request.source})
    if role == "receive":
        if item.lot_tracked and not lot:
            raise bad_request(f"{sku} is tracked by lot and the barcode carries none")
        seq = post_movement(tx, ctx, {"type": "receipt", "sku": sku, "lot": lot, "expiry": expiry,
                                      "serials": [serial] if serial else [], "qty": qty, "reason": "scan"},
                            f"{request.source}:{body.get('id')}")
        return {"seq": seq, "sku": sku, "lot": lot, "qty": qty}
    if role == "count":
        key = f"{request.source}\x00{sku}\x00{lot or ''}"
        row = tx.get("counts", key) or {"qty": 0, "expiry": expiry}
        row["qty"] += qty
        tx.put("counts", key, row)
        return {"sku": sku, "lot": lot, "counted": row["qty"]}
    if role == "lane":
        lane = str(body.get("lane") or "")
        if not lane:
            raise bad_request("a lane scanner needs its lane")
        basket = tx.get("baskets", lane) or []
        basket.append({"sku": sku, "code": body.get("code"), "qty": qty, "lot": lot, "expiry": expiry, "serial": serial})
        tx.put("baskets", lane, basket)
        return {"lane": lane, "sku": sku, "lines": len(basket)}
    raise bad_request(f"unknown scanner role {role!r}")


def handle_count_close(tx, request, ctx) -> dict:
    """Close a device's open cycle count: every SKU it counted is set to what was counted.

    Lots of a counted SKU that were not scanned were counted as zero; the counted figure and the
    delta it implies are both kept in the `count` document.
    """
    device = request.body.get("device") or request.source
    prefix = f"{device}\x00".encode()
    counted = {}
    for key, row in list(tx.items("counts", prefix=prefix)):
        _dev, sku, lot = key.decode().split("\x00")
        counted[(sku, lot or None)] = row
        tx.delete("counts", key)
    if not counted:
        raise bad_request(f"device {device!r} has no open count (is it a scanner with role \"count\", "
                          "and has it scanned since its last close?)")
    skus = sorted({sku for sku, _lot in counted})
    rows, moves = [], []
    for sku in skus:
        ledger_lots = ledger.lot_rows(tx, sku)
        for lot in sorted(set(ledger_lots) | {l for s, l in counted if s == sku}, key=lambda x: (x is None, x or "")):
            held = ledger_lots.get(lot)
            have = held.qty if held is not None else 0
            figure = counted.get((sku, lot), {"qty": 0})["qty"]
            expiry = counted.get((sku, lot), {}).get("expiry") or (held.expiry if held is not None else None)
            rows.append([sku, lot, figure, figure - have])
            if figure != have:
                moves.append(Move(sku, lot, figure - have, expiry))
    ledger.apply_moves(tx, moves)
    seq = tx.append_event({"type": "count", "id": f"{request.source}:{request.body.get('id')}", "ts_ms": ctx.now_ms,
                           "device": device, "counted": rows, "moves": moves})
    _alerts.refresh(tx, skus, _day(ctx), ctx.now_ms)
    return {"seq": seq, "counted": rows}


def handle_lane_basket(tx, request, ctx) -> dict:
    lane = request.body.get("lane")
    if not isinstance(lane, str) or not lane:
        raise bad_request("lane must be a non-empty string")
    return {"lane": lane, "lines": tx.get("baskets", lane) or []}


def handle_alerts_refresh(tx, request, ctx) -> dict:
    """Dates move even when stock does not: re-evaluate every SKU's alerts."""
    return {"raised": _alerts.refresh_all(tx, ctx.now_ms, ctx.settings.timezone)}
