# The ledger's balances as C types, for the compiled sale path (`_salepath_c.pyx`) to read and
# change without going through Python attributes.

from cpython.ref cimport PyObject

cdef class LotRow:
    cdef public long long qty
    cdef public object expiry
    cdef public list serials


cdef class SkuBalances:
    cdef public long long total
    cdef public dict lots       # lot (None: outside any lot) -> LotRow, in the table's key order


# What one move replaced, for a rollback: owned references (NULL: none), so the undo log holds
# no Python object of its own per move.
cdef struct MoveUndo:
    PyObject* row               # the lot's row as it was; NULL: the lot had none
    PyObject* bal               # the SKU's SkuBalances
    PyObject* lot
    PyObject* expiry
    PyObject* serials           # a copy of the row's serials; NULL: it held none
    long long qty
    long long total             # the SKU's total before the move


cdef class Balances:
    cdef public dict skus       # sku -> SkuBalances
    cdef MoveUndo* _undo
    cdef Py_ssize_t _undo_len
    cdef Py_ssize_t _undo_cap
    cdef Py_ssize_t _held           # SKUs with a nonzero total
    cdef dict _dirty                # the rows changed since the last flush: {sku: {lot, ...}}
    cdef public long long seq   # the last event these balances include (kept by `Tx`)

    cdef SkuBalances _sku(self, str sku)
    cpdef LotRow row(self, str sku, lot)
    cpdef long long qty(self, str sku, lot)
    cpdef dict lots_of_sku(self, str sku)
    cpdef long long on_hand(self, str sku)
    cdef tuple apply_one(self, str sku, lot, long long delta, expiry, serials)
    cdef MoveUndo* _undo_push(self) except NULL
    cdef void _undo_release(self, MoveUndo* u)
    cdef void _undo_clear(self)


cdef inline tuple move_tuple(move):
    # A move is a named tuple: read as a tuple, not through the iterator or slots a subclass would take.
    return <tuple>move if isinstance(move, tuple) else tuple(move)


cdef object state_of(tx, cls)
cpdef list apply_moves(tx, moves)
cdef Balances _balances(tx)
