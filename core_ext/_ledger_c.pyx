# cython: language_level=3
"""The stock ledger, compiled: mirrors `_ledger_py.py` (the reference) function by function.

The balances live in `cdef` classes with C integers: a `SkuBalances` per SKU (its on-hand total and
its lots) and a `LotRow` per lot. A move changes C fields and notes its row; only when the group
commits are the noted rows packed and written to LMDB (the `lots` table: each lot's row, and the
SKU's total beside them), once each. The undo log keeps what each change replaced, so an aborted
transaction puts the memory back exactly (see `Tx.state`).
"""
from datetime import date

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.ref cimport Py_INCREF, Py_XDECREF
from libc.string cimport memcpy

from . import _ledger_py
from ._records import shared_str
from ._ledger_py import check_row_key  # the rare long key: the reference's check and words
from ._store import _pack, alert_key, is_total_key, split_lot_key

from ._mpwrite cimport Writer, _pack_byte, _pack_int, _pack_length, _pack_str

FLAVOUR = "cython"


cdef class LotRow:
    """One lot's balance: units on hand, expiry, and the serials of the units it holds (fields in
    `_ledger_c.pxd`)."""

    def __init__(self, long long qty, expiry, list serials):
        self.qty = qty
        self.expiry = expiry
        self.serials = serials

    def to_doc(self):
        return {"qty": self.qty, "expiry": self.expiry, "serials": list(self.serials)}


cdef class SkuBalances:
    """A SKU's on-hand total and its lots (fields in `_ledger_c.pxd`)."""

    def __init__(self):
        self.total = 0
        self.lots = {}


cdef object _lot_order(item):
    return _lot_key_order(item[0])


cdef object _lot_key_order(lot):
    return (lot or "").encode()


cdef inline PyObject* _owned(obj):
    """A new reference to `obj`, for the undo log; None is kept as NULL."""
    if obj is None:
        return NULL
    Py_INCREF(obj)
    return <PyObject*>obj


cdef inline object _back(PyObject* ref):
    return None if ref == NULL else <object>ref


cdef class Balances:
    """Every SKU's lots and on-hand total, in memory, with an undo log for rollbacks (one C entry
    a move: `MoveUndo` in `_ledger_c.pxd`)."""

    def __init__(self):
        self.skus = {}
        self._dirty = {}
        self.seq = 0

    def __dealloc__(self):
        self._undo_clear()
        PyMem_Free(self._undo)

    @classmethod
    def load(cls, tx):
        cdef Balances state = cls()
        cdef SkuBalances bal
        for key, row in tx.items("lots"):
            if is_total_key(key):
                bal = state._sku(key.decode())
                bal.total = row
                state._held += bal.total != 0
                continue
            sku, lot = split_lot_key(key)
            bal = state._sku(sku)
            bal.lots[lot] = LotRow(row["qty"], row.get("expiry"), list(row.get("serials") or ()))
        return state

    def held(self):
        """How many SKUs have a nonzero on-hand total."""
        return self._held

    def flush(self, tx):
        """Just before the group commits: the rows changed since the last flush into the `lots`
        table, in key order (a SKU's total, then its lots), and the count of SKUs with stock into
        `meta`, when it moved."""
        cdef SkuBalances bal
        cdef LotRow row
        cdef list puts = []
        cdef bytes sku_key
        cdef set lots
        txn = tx.txn
        lots_db = tx.db["lots"]
        for sku in sorted(self._dirty):
            bal = self.skus.get(sku)
            sku_key = (<str>sku).encode()  # `total_key`
            if bal is None or bal.total == 0:
                txn.delete(sku_key, db=lots_db)
            else:
                puts.append((sku_key, _int_bytes(bal.total)))
            lots = self._dirty[sku]
            # Nearly always one lot: no list to sort.
            for lot in (lots if len(lots) == 1 else sorted(lots, key=_lot_key_order)):
                row = None if bal is None else bal.lots.get(lot)
                if row is None:
                    txn.delete(_row_key(sku_key, lot), db=lots_db)
                else:
                    puts.append((_row_key(sku_key, lot), _lot_row_bytes(row)))
        if puts:
            # In key order, in one call: py-lmdb's loop instead of a Python call per row. Every key
            # is written or deleted once, so the deletes before them change nothing of the result.
            with txn.cursor(db=lots_db) as cursor:
                cursor.putmulti(puts)
        self._dirty = {}
        if tx.meta("skus", 0) != self._held:
            tx.put("meta", "skus", self._held)

    cdef SkuBalances _sku(self, str sku):
        cdef SkuBalances bal = self.skus.get(sku)
        if bal is None:
            bal = SkuBalances()
            self.skus[shared_str(sku)] = bal  # the key an item's SKU matches by identity
        return bal

    cdef MoveUndo* _undo_push(self) except NULL:
        cdef Py_ssize_t cap
        cdef MoveUndo* grown
        if self._undo_len == self._undo_cap:
            cap = self._undo_cap * 2 if self._undo_cap else 256
            grown = <MoveUndo*>PyMem_Realloc(self._undo, cap * sizeof(MoveUndo))
            if grown == NULL:
                raise MemoryError()
            self._undo, self._undo_cap = grown, cap
        cdef MoveUndo* u = &self._undo[self._undo_len]
        u.row = u.bal = u.lot = u.expiry = u.serials = NULL
        self._undo_len += 1
        return u

    cdef void _undo_release(self, MoveUndo* u):
        Py_XDECREF(u.row)
        Py_XDECREF(u.bal)
        Py_XDECREF(u.lot)
        Py_XDECREF(u.expiry)
        Py_XDECREF(u.serials)

    def mark(self):
        return self._undo_len

    def rollback(self, Py_ssize_t mark):
        cdef MoveUndo* u
        cdef SkuBalances bal
        cdef LotRow row
        while self._undo_len > mark:
            u = &self._undo[self._undo_len - 1]
            bal = <SkuBalances>u.bal
            lot = _back(u.lot)
            if u.row == NULL:
                bal.lots.pop(lot, None)
            else:
                row = <LotRow>u.row
                row.qty = u.qty
                row.expiry = _back(u.expiry)
                row.serials = [] if u.serials == NULL else <list>u.serials
                if lot not in bal.lots:
                    bal.lots[lot] = row
                    bal.lots = dict(sorted(bal.lots.items(), key=_lot_order))
            self._held += (u.total != 0) - (bal.total != 0)
            bal.total = u.total
            self._undo_len -= 1
            self._undo_release(u)

    cdef void _undo_clear(self):
        cdef Py_ssize_t i
        for i in range(self._undo_len):
            self._undo_release(&self._undo[i])
        self._undo_len = 0

    def forget(self):
        self._undo_clear()

    cpdef LotRow row(self, str sku, lot):
        cdef SkuBalances bal = self.skus.get(sku)
        return None if bal is None else bal.lots.get(lot)

    cpdef long long qty(self, str sku, lot):
        cdef LotRow row = self.row(sku, lot)
        return 0 if row is None else row.qty

    def lot_keys(self):
        cdef SkuBalances bal
        return [(sku, lot) for sku, bal in self.skus.items() for lot in bal.lots]

    cpdef dict lots_of_sku(self, str sku):
        cdef SkuBalances bal = self.skus.get(sku)
        return _NO_LOTS if bal is None else bal.lots

    cpdef long long on_hand(self, str sku):
        cdef SkuBalances bal = self.skus.get(sku)
        return 0 if bal is None else bal.total

    cdef tuple apply_one(self, str sku, lot, long long delta, expiry, serials):
        cdef SkuBalances bal = self._sku(sku)
        cdef LotRow row = bal.lots.get(lot)
        cdef list held
        cdef MoveUndo* undo = self._undo_push()
        undo.bal = _owned(bal)
        undo.lot = _owned(lot)
        undo.total = bal.total
        if row is None:
            undo.row = undo.expiry = undo.serials = NULL
            undo.qty = 0
            row = LotRow(0, expiry, [])
            bal.lots[lot] = row
            if len(bal.lots) > 1:
                bal.lots = dict(sorted(bal.lots.items(), key=_lot_order))
        else:
            # The serials are copied only when there are some (NULL stands for none).
            undo.row = _owned(row)
            undo.qty = row.qty
            undo.expiry = _owned(row.expiry)
            undo.serials = _owned(list(row.serials)) if row.serials else NULL
        row.qty += delta
        if expiry is not None and row.expiry is None:
            row.expiry = expiry
        if serials:
            held = row.serials
            if delta > 0:
                for s in serials:
                    if s not in held:
                        held.append(s)
            else:
                for s in serials:
                    if s in held:
                        held.remove(s)
        if row.qty <= 0 and row.serials:
            # A lot with no units left holds none of the serials it listed.
            row.serials = []
        self._held += (bal.total + delta != 0) - (bal.total != 0)
        bal.total += delta
        if row.qty == 0 and not row.serials:
            del bal.lots[lot]
            row = None
        return row, bal.total


cdef dict _NO_LOTS = {}


cdef object state_of(tx, cls):
    """`tx.state(cls)`, read straight from the store's states when it is held (nearly always): a
    sale asks for the writer's states a dozen times, and each Python call cost more than the lookup."""
    state = (<dict>tx.store.states).get(cls)
    return state if state is not None else tx.state(cls)


cdef Balances _balances(tx):
    return state_of(tx, Balances)


def balances(tx):
    return _balances(tx)


cdef bytes _row_key(bytes sku_key, lot):
    """A lot's key in `lots` (`_store.lot_key`) from its SKU's key: its bytes, a NUL, the lot's UTF-8."""
    cdef bytes lot_bytes = (<str>lot).encode() if lot else b""
    cdef Py_ssize_t n = len(sku_key), m = len(lot_bytes)
    cdef bytes key = PyBytes_FromStringAndSize(NULL, n + 1 + m)
    cdef char* at = PyBytes_AS_STRING(key)
    memcpy(at, PyBytes_AS_STRING(sku_key), n)
    at[n] = 0
    memcpy(at + n + 1, PyBytes_AS_STRING(lot_bytes), m)
    return key


def lots_of(tx, str sku, recalls):
    cdef list out = []
    cdef bint every = None in recalls
    cdef LotRow row
    for lot, row in _balances(tx).lots_of_sku(sku).items():
        if lot is None:
            continue
        out.append((lot, row.expiry, row.qty, lot in recalls or every))
    return out


def lot_keys(tx):
    if tx.write:
        return _balances(tx).lot_keys()
    return _ledger_py.lot_keys(tx)  # a reader: the table, as the reference reads it


def lot_rows(tx, str sku):
    return _balances(tx).lots_of_sku(sku)


def lot_qty(tx, str sku, lot):
    return _balances(tx).qty(sku, lot)


def lot_expiry(tx, str sku, lot):
    cdef LotRow row = _balances(tx).row(sku, lot)
    return None if row is None else row.expiry


def on_hand(tx, str sku):
    return _balances(tx).on_hand(sku)


def serial_holders(tx, str sku):
    cdef dict out = {}
    cdef LotRow row
    for lot, row in _balances(tx).lots_of_sku(sku).items():
        for serial in row.serials:
            out[serial] = lot
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


# The rows a move writes, as `_pack` would pack them, written from the C fields; a value the writer
# does not take as it is (text that is not UTF-8, a serial that is not text) is packed by msgpack.
cdef Writer _row_writer  # reused: the bytes are copied out at once


cdef bytes _lot_row_bytes(LotRow row):
    """`_pack(row.to_doc())`."""
    expiry = row.expiry
    if not (expiry is None or type(expiry) is str):
        return _pack(row.to_doc())
    for serial in row.serials:
        if type(serial) is not str:
            return _pack(row.to_doc())
    _row_writer.size = 0
    try:
        _pack_length(&_row_writer, 3, 0x80, 15, 0, 0xde)
        _pack_str(&_row_writer, "qty")
        _pack_int(&_row_writer, row.qty)
        _pack_str(&_row_writer, "expiry")
        if expiry is None:
            _pack_byte(&_row_writer, 0xc0)
        else:
            _pack_str(&_row_writer, <str>expiry)
        _pack_str(&_row_writer, "serials")
        _pack_length(&_row_writer, len(row.serials), 0x90, 15, 0, 0xdc)
        for serial in row.serials:
            _pack_str(&_row_writer, <str>serial)
    except UnicodeError:
        return _pack(row.to_doc())
    return PyBytes_FromStringAndSize(<const char*>_row_writer.buf, _row_writer.size)


cdef bytes _int_bytes(long long value):
    """`_pack(value)`."""
    _row_writer.size = 0
    _pack_int(&_row_writer, value)
    return PyBytes_FromStringAndSize(<const char*>_row_writer.buf, _row_writer.size)


cpdef list apply_moves(tx, moves):
    cdef list touched = []
    cdef Balances state = _balances(tx)
    cdef dict dirty = state._dirty
    cdef set lots
    for move in moves:
        sku, lot, delta, expiry, serials = move_tuple(move)
        # Any text of up to this many characters fits LMDB's keys, UTF-8 taking 4 bytes at most.
        if len(sku) + (len(lot) if lot else 0) > _SAFE_KEY_CHARS:
            check_row_key(tx, sku, lot)
        state.apply_one(sku, lot, delta, expiry, serials)
        lots = dirty.get(sku)
        if lots is None:
            dirty[sku] = {lot}
        else:
            lots.add(lot)
        if sku not in touched:
            touched.append(sku)
    return touched


cdef Py_ssize_t _SAFE_KEY_CHARS = 126  # (511 - 1) // 4: the separator, then 4 bytes a character


def lot_alerts(tx, str sku, lots, str today, Py_ssize_t warn_days, dict recalls):
    cdef dict want = {}
    cdef dict held = _balances(tx).lots_of_sku(sku)
    cdef LotRow row
    cdef long long qty
    cdef Py_ssize_t left
    if lots is None:
        rows = list(held.items())
    else:
        rows = [(lot, held.get(lot)) for lot in lots]
    first = None
    every = recalls.get(None)
    for lot, row_obj in rows:
        if row_obj is None:
            continue
        row = row_obj
        qty = row.qty
        if qty <= 0:
            continue
        expiry = row.expiry
        if expiry is not None:
            if first is None:
                first = date.fromisoformat(today)
            left = (date.fromisoformat(expiry) - first).days
            if left <= warn_days:
                want[alert_key(sku, "expiring", lot)] = {"kind": "expiring", "sku": sku, "lot": lot, "expiry": expiry,
                                                          "days_left": left, "qty": qty}
        recall = recalls.get(lot) or every
        if recall is not None:
            want[alert_key(sku, "recalled", lot)] = {"kind": "recalled", "sku": sku, "lot": lot, "qty": qty,
                                                      "recall_id": recall["recall_id"], "reason": recall.get("reason", "")}
    return want




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
