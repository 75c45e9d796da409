"""The stock ledger's arithmetic, pure Python: the readable reference of `_ledger_c.pyx`.

Balances live in two tables: `lots` (per SKU and lot, with expiry and serials) and `skus` (per SKU).
Both only ever change through `apply_moves`, and both must always equal `replay` of the event log.
A move is `[sku, lot, delta, expiry, serials]`; `lot` None is the SKU's balance outside any lot
(items not tracked by lot, and units sold beyond the ledger's stock).
"""
from __future__ import annotations

from ._localtime import days_between
from ._store import lot_key, split_lot_key

FLAVOUR = "python"


def lots_of(tx, sku, recalls):
    """FEFO's view of a SKU's lots: `[(lot, expiry, on_hand, recalled), ...]` in key order.

    `recalls` is `{lot: recall}` of the SKU (lot None = every lot). The SKU's balance outside any
    lot is not a lot: FEFO never takes from it.
    """
    out = []
    for key, row in tx.items("lots", prefix=sku.encode() + b"\x00"):
        lot = split_lot_key(key)[1]
        if lot is None:
            continue
        out.append((lot, row.get("expiry"), row["qty"], lot in recalls or None in recalls))
    return out


def fefo_allocate(lots, qty, today):
    """Choose lots for `qty` units, first expiring first.

    `lots` are `(lot, expiry, on_hand, recalled)` with `expiry` an ISO date or None; recalled lots,
    lots expired before `today` (ISO date) and empty lots are skipped. Returns
    `(allocations, shortfall)` with allocations `[(lot, expiry, take), ...]`.
    """
    usable = [
        (expiry is None, expiry or "", lot, expiry, on_hand)
        for lot, expiry, on_hand, recalled in lots
        if on_hand > 0 and not recalled and not (expiry is not None and expiry < today)
    ]
    usable.sort()
    allocations = []
    left = qty
    for _none_last, _exp, lot, expiry, on_hand in usable:
        if left <= 0:
            break
        take = on_hand if on_hand < left else left
        allocations.append((lot, expiry, take))
        left -= take
    return allocations, left


def apply_moves(tx, moves):
    """Apply `moves` to the balance tables; returns the SKUs touched, in first-touched order."""
    touched = []
    for sku, lot, delta, expiry, serials in moves:
        key = lot_key(sku, lot)
        row = tx.get("lots", key)
        if row is None:
            row = {"qty": 0, "expiry": expiry, "serials": []}
        row["qty"] += delta
        if expiry is not None and row.get("expiry") is None:
            row["expiry"] = expiry
        if serials:
            held = row["serials"]
            if delta > 0:
                for s in serials:
                    if s not in held:
                        held.append(s)
            else:
                for s in serials:
                    if s in held:
                        held.remove(s)
        if row["qty"] <= 0 and row["serials"]:
            # A lot with no units left holds none of the serials it listed (units sold or counted
            # without naming theirs), so a serial can never be taken from it again.
            row["serials"] = []
        if row["qty"] == 0 and not row["serials"]:
            tx.delete("lots", key)
        else:
            tx.put("lots", key, row)
        total = tx.get("skus", sku, 0) + delta
        if total == 0:
            tx.delete("skus", sku)
        else:
            tx.put("skus", sku, total)
        if sku not in touched:
            touched.append(sku)
    return touched


def lot_alerts(tx, sku, lots, today, warn_days, recalls):
    """The alerts the lots of `sku` call for now, `{alert key: alert}` (key as `_alerts.alert_key`).

    `lots` names the lots to evaluate (None: every lot the ledger holds of the SKU); each with
    stock gets `expiring` when it expires within `warn_days` of `today` and `recalled` when
    `recalls` (`{lot: recall}`, lot None = every lot) covers it.
    """
    if lots is None:
        rows = ((split_lot_key(key)[1], row) for key, row in tx.items("lots", prefix=sku.encode() + b"\x00"))
    else:
        rows = ((lot, tx.get("lots", lot_key(sku, lot))) for lot in lots)
    want = {}
    for lot, row in rows:
        qty = row["qty"] if row else 0
        if qty <= 0:
            continue
        expiry = row.get("expiry")
        if expiry is not None:
            left = days_between(today, expiry)
            if left <= warn_days:
                want[_alert_key(sku, "expiring", lot)] = {"kind": "expiring", "sku": sku, "lot": lot, "expiry": expiry,
                                                          "days_left": left, "qty": qty}
        recall = recalls.get(lot) or recalls.get(None)
        if recall is not None:
            want[_alert_key(sku, "recalled", lot)] = {"kind": "recalled", "sku": sku, "lot": lot, "qty": qty,
                                                      "recall_id": recall["recall_id"], "reason": recall.get("reason", "")}
    return want


def _alert_key(sku, kind, lot):
    return f"{sku}\x00{kind}\x00{lot or ''}".encode()


def replay(events):
    """Balances from scratch: `({(sku, lot): qty}, {sku: qty})`, zero balances left out."""
    lots = {}
    skus = {}
    for event in events:
        for sku, lot, delta, _expiry, _serials in event.get("moves") or ():
            lots[(sku, lot)] = lots.get((sku, lot), 0) + delta
            skus[sku] = skus.get(sku, 0) + delta
    return ({k: v for k, v in lots.items() if v}, {k: v for k, v in skus.items() if v})
