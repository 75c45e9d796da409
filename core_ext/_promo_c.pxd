# The priced basket's typed records, compiled (the twins of `_records.PricedLine` and `Priced`):
# the engine makes them, the compiled sale path (`_salepath_c.pyx`) reads and completes them.
from ._mpwrite cimport Writer


cdef struct TraceC:               # one trace entry, as the engine made it (`Priced.trace` has the maps)
    int kind                      # why a rule saved nothing (1.., the engine's reasons), or a T_ kind
    int rule, line, group, winner # the rule's rank; the line (T_CEILING); group and winner (T_EXCLUSIVE)
    long long cents               # T_CAPPED and T_CEILING


cdef enum:
    T_CAPPED = 100, T_CEILING, T_EXCLUSIVE

cdef class ResolvedLine:
    # The compiled twin of `_records.SaleLine` (its fields by the same names), with the item's fields
    # the sale path and the engine read copied once: struct reads instead of attribute lookups.
    cdef public object index, code, item, qty, lot, serial, expiry
    cdef readonly object sku, category, unit_cents
    cdef readonly bint lot_tracked, serial_tracked


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
    cdef list _trace                # the trace's maps: as given, or made from the entries when asked for
    cdef bytes _entries             # TraceC entries as the engine made them (None when given as maps)
    cdef tuple _names               # the engine's rule ids, versions and group names, for the entries

    cdef list _trace_maps(self)
    cdef int write_trace(self, Writer* w) except -1
