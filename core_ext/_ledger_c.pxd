# The ledger's balances as C types, for the compiled sale path (`_salepath_c.pyx`) to read and
# change without going through Python attributes.

cdef class LotRow:
    cdef public long long qty
    cdef public object expiry
    cdef public list serials


cdef class SkuBalances:
    cdef public long long total
    cdef public dict lots       # lot (None: outside any lot) -> LotRow, in the table's key order


cdef class Balances:
    cdef public dict skus       # sku -> SkuBalances
    cdef list _undo
    cdef public long long seq   # the last event these balances include (kept by `Tx`)

    cdef SkuBalances _sku(self, str sku)
    cpdef LotRow row(self, str sku, lot)
    cpdef long long qty(self, str sku, lot)
    cpdef dict lots_of_sku(self, str sku)
    cpdef long long on_hand(self, str sku)
    cdef tuple apply_one(self, str sku, lot, long long delta, expiry, serials)


cdef Balances _balances(tx)
