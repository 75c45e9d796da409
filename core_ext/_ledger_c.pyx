# cython: language_level=3
"""The stock ledger's arithmetic, compiled: mirrors `_ledger_py.py` (the reference) function by function.

Where the reference goes through `Tx.get`/`Tx.put`/`Tx.items`, this one calls the LMDB transaction
and MessagePack directly with the same encoding (`_store._pack`, `unpackb(raw=False,
strict_map_key=False)`): on the sale and receipt paths those wrappers cost as much as the work.
"""
from datetime import date

from msgpack import unpackb

from ._store import _pack

FLAVOUR = "cython"


cdef inline object _unpack(bytes raw):
    return unpackb(raw, raw=False, strict_map_key=False)


cdef inline bytes _lot_key(sku, lot):
    return f"{sku}\x00{lot or ''}".encode()


def lots_of(tx, str sku, recalls):
    cdef bytes prefix = sku.encode() + b"\x00"
    cdef list out = []
    cdef bint every = None in recalls
    cdef bytes k
    cdef dict row
    cur = tx.txn.cursor(db=tx.db["lots"])
    try:
        if not cur.set_range(prefix):
            return out
        for k, v in cur:
            if not k.startswith(prefix):
                break
            lot = k.decode().partition("\x00")[2] or None
            if lot is None:
                continue
            row = _unpack(v)
            out.append((lot, row.get("expiry"), row["qty"], lot in recalls or every))
    finally:
        cur.close()
    return out


def fefo_allocate(lots, Py_ssize_t qty, str today):
    cdef list usable = []
    cdef Py_ssize_t on_hand, left, take
    for lot, expiry, on_hand_obj, recalled in lots:
        on_hand = on_hand_obj
        if on_hand <= 0 or recalled:
            continue
        if expiry is not None and expiry < today:
            continue
        usable.append((expiry is None, expiry or "", lot, expiry, on_hand))
    usable.sort()
    cdef list allocations = []
    left = qty
    for item in usable:
        if left <= 0:
            break
        on_hand = item[4]
        take = on_hand if on_hand < left else left
        allocations.append((item[2], item[3], take))
        left -= take
    return allocations, left


def apply_moves(tx, moves):
    cdef list touched = []
    cdef Py_ssize_t delta, total
    cdef dict row
    cdef list held
    cdef bytes key, sku_key
    txn = tx.txn
    lots_db = tx.db["lots"]
    skus_db = tx.db["skus"]
    for sku, lot, delta_obj, expiry, serials in moves:
        delta = delta_obj
        key = _lot_key(sku, lot)
        raw = txn.get(key, db=lots_db)
        if raw is None:
            row = {"qty": 0, "expiry": expiry, "serials": []}
        else:
            row = _unpack(raw)
        row["qty"] = <Py_ssize_t>row["qty"] + delta
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
            txn.delete(key, db=lots_db)
        else:
            txn.put(key, _pack(row), db=lots_db)
        sku_key = sku if isinstance(sku, bytes) else str(sku).encode()
        raw = txn.get(sku_key, db=skus_db)
        total = (0 if raw is None else <Py_ssize_t>_unpack(raw)) + delta
        if total == 0:
            txn.delete(sku_key, db=skus_db)
        else:
            txn.put(sku_key, _pack(total), db=skus_db)
        if sku not in touched:
            touched.append(sku)
    return touched


def lot_alerts(tx, str sku, lots, str today, Py_ssize_t warn_days, dict recalls):
    cdef dict want = {}
    cdef dict row
    cdef bytes prefix, k
    cdef Py_ssize_t qty, left
    cdef list rows = []
    txn = tx.txn
    lots_db = tx.db["lots"]
    if lots is None:
        prefix = sku.encode() + b"\x00"
        cur = txn.cursor(db=lots_db)
        try:
            if cur.set_range(prefix):
                for k, v in cur:
                    if not k.startswith(prefix):
                        break
                    rows.append((k.decode().partition("\x00")[2] or None, _unpack(v)))
        finally:
            cur.close()
    else:
        for lot in lots:
            raw = txn.get(_lot_key(sku, lot), db=lots_db)
            rows.append((lot, None if raw is None else _unpack(raw)))
    first = None
    every = recalls.get(None)
    for lot, row in rows:
        qty = row["qty"] if row else 0
        if qty <= 0:
            continue
        expiry = row.get("expiry")
        if expiry is not None:
            if first is None:
                first = date.fromisoformat(today)
            left = (date.fromisoformat(expiry) - first).days
            if left <= warn_days:
                want[_alert_key(sku, "expiring", lot)] = {"kind": "expiring", "sku": sku, "lot": lot, "expiry": expiry,
                                                          "days_left": left, "qty": qty}
        recall = recalls.get(lot) or every
        if recall is not None:
            want[_alert_key(sku, "recalled", lot)] = {"kind": "recalled", "sku": sku, "lot": lot, "qty": qty,
                                                      "recall_id": recall["recall_id"], "reason": recall.get("reason", "")}
    return want


cdef inline bytes _alert_key(str sku, str kind, lot):
    return f"{sku}\x00{kind}\x00{lot or ''}".encode()


def replay(events):
    cdef dict lots = {}
    cdef dict skus = {}
    cdef Py_ssize_t delta
    for event in events:
        moves = event.get("moves")
        if not moves:
            continue
        for sku, lot, delta_obj, _expiry, _serials in moves:
            key = (sku, lot)
            delta = delta_obj
            lots[key] = <Py_ssize_t>lots.get(key, 0) + delta
            skus[sku] = <Py_ssize_t>skus.get(sku, 0) + delta
    return ({k: v for k, v in lots.items() if v}, {k: v for k, v in skus.items() if v})
