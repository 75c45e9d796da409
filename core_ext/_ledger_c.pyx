# cython: language_level=3
"""The stock ledger's arithmetic, compiled: mirrors `_ledger_py.py` (the reference) function by function."""
from ._store import lot_key

FLAVOUR = "cython"


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
    for sku, lot, delta_obj, expiry, serials in moves:
        delta = delta_obj
        key = lot_key(sku, lot)
        row = tx.get("lots", key)
        if row is None:
            row = {"qty": 0, "expiry": expiry, "serials": []}
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
            tx.delete("lots", key)
        else:
            tx.put("lots", key, row)
        total = <Py_ssize_t>tx.get("skus", sku, 0) + delta
        if total == 0:
            tx.delete("skus", sku)
        else:
            tx.put("skus", sku, total)
        if sku not in touched:
            touched.append(sku)
    return touched


def replay(events):
    cdef dict lots = {}
    cdef dict skus = {}
    cdef Py_ssize_t delta
    for event in events:
        moves = event.get("moves")
        if not moves:
            continue
        for move in moves:
            sku = move[0]
            key = (sku, move[1])
            delta = move[2]
            lots[key] = <Py_ssize_t>lots.get(key, 0) + delta
            skus[sku] = <Py_ssize_t>skus.get(sku, 0) + delta
    return ({k: v for k, v in lots.items() if v}, {k: v for k, v in skus.items() if v})
