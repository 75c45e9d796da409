# The priced basket's typed records, compiled (the twins of `_records.PricedLine` and `Priced`):
# the engine makes them, the compiled sale path (`_salepath_c.pyx`) reads and completes them.

cdef class PricedLine:
    cdef public str sku
    cdef public long long qty
    cdef public long long unit_cents
    cdef public long long gross_cents
    cdef public long long discount_cents
    cdef public list promos        # [rule id, rule version, cents], the event's own shape
    cdef public object lot
    cdef public object serial
    cdef public object category
    cdef public object allocations  # [{"lot", "expiry", "qty"}], once taken from stock

    cpdef dict event_doc(self)
    cpdef dict answer_doc(self)


cdef class Priced:
    cdef public object ruleset
    cdef public list lines          # PricedLine
    cdef public long long gross_cents
    cdef public long long discount_cents
    cdef public list trace
