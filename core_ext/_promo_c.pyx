# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""PROMO/1, compiled: the same `PromoEngine` as `_promo_py`, its pricing run over C structs.

Validation, rule loading, coupon keys and points come from `_promo_py` (once per rule set); plain
lines and coupons (exact dicts, ints and strings) are checked here with the reference's messages, in
its order, and anything else goes through the reference's own checks. This module mirrors the
reference's pricing step by step, so read `_promo_py` for the why of each step.

Layout, and why
---------------
* The rule set is flattened once, when the engine is built, into an `EngineC` struct of malloc'd
  arrays owned by the `PromoEngine` (freed in `__dealloc__`): one `RuleC` per rule, in evaluation
  order (its index is its rank); SKUs, categories, stores, tiers, coupons and exclusive groups are
  interned to integer ids, and every id list of a rule (target SKUs, categories and exclusions,
  stores, tiers, minute ranges) is a sorted slice of one `int32` pool, the kind's steps a slice of
  an `int64` pool. Reading a rule in the hot loop is pointer arithmetic, never a dict or a set.
* SKU and category indexes are CSR arrays (`sku_start[id]..sku_start[id+1]` into `sku_rules`), plus
  the few rules on every item. A basket sets one bit per rule its lines reach in a bitmap of the
  rule set and walks the set bits in order: a 10-line basket against 10,000 rules touches only its
  few hundred candidates, already in evaluation order, with no sort.
* The per-basket state is one `BasketC` struct (lines, segments, plan pieces, shares, promos and
  scratch) owned by a `Basket` object that frees it however pricing ends. Units are kept as counts:
  a line's segments are a chain of indexes into one `SegC` array. No Python object exists per rule,
  line, segment or piece while pricing; the only Python work is reading the input lines, the trace
  entries (they are the answer) and building the answer.
* Plans live in arenas reset after each rule (or exclusive group), so comparing the members of a
  group costs no allocation; every arena is grown before a plan or a settle, never inside the loops.

Arithmetic bounds (`_promo_py.check_lines`' limits, checked as the lines are read)
---------------------------------------------------------------------------------
qty <= 1,000,000 per line, unit_cents <= 10^14, the basket's gross <= 10^14 cents and <= 10^9 units.
Every net, weight, share and amount below is <= the basket's gross G (a rule never discounts more
than the net it works on, and spreading `total <= sum(weights)` gives no part more than its weight);
every unit count is <= 10^6 per segment and <= 10^9 per basket. The number of lines (500 at most on
the ECR, unbounded here) never enters a product: it only sizes arrays, indexed by int32 (<= 10^9 lines,
as each holds a unit).
* Always safe in 64 bits: net x basis points <= 10^14 x 10^4 = 10^18 < 2^63 (percentages, tiers,
  buy-X-get-Y rewards, the ceiling), and sums of nets <= G.
* Products of a price by a count (fixed_price, amount_off, bundle sets, threshold steps) are never
  formed when they could overflow: `x * n < net` is tested as `x <= (net - 1) // n`.
* Products of two amounts (a segment's net x units drawn, cross-multiplied unit prices, the
  largest-remainder spread `total x weight`) are <= max(G, 10^6)^2. With G <= SAFE_GROSS =
  3,037,000,499 (floor(sqrt(2^63 - 1))) that is below 2^63 and plain 64-bit arithmetic is exact; such
  a basket (up to 30 million in currency) is priced "narrow". A dearer basket is priced "wide": the
  same code, with those products taken in 128 bits. The mode is chosen once per basket, before any
  loop, and is the only thing `mul_div` and `cmp_products` branch on.
"""
from libc.stdint cimport int32_t, int64_t, uint64_t
from cpython.long cimport PyLong_AsLongLongAndOverflow
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE

from ._mpwrite cimport Writer, _pack_int, _pack_key, _pack_length, _pack_str

from core_ext import _promo_py
from core_ext._records import shared_str
from core_ext._promo_py import (
    PromoInputError, PromoRuleError, check_lines, coupon_codes, load_rules, points_earned, validate_promotions,
)

__all__ = ["PromoEngine", "PromoRuleError", "PromoInputError", "validate_promotions", "Priced", "PricedLine"]

ctypedef int64_t i64
ctypedef int32_t i32

cdef extern from *:
    """
    static inline long long pm_muldiv128(long long a, long long b, long long c, long long *rem) {
        __int128 p = (__int128)a * b;
        *rem = (long long)(p % c);
        return (long long)(p / c);
    }
    static inline int pm_cmp128(long long a, long long b, long long c, long long d) {
        __int128 l = (__int128)a * b, r = (__int128)c * d;
        return (l > r) - (l < r);
    }
    static inline int pm_ctz64(unsigned long long x) { return __builtin_ctzll(x); }
    """
    i64 pm_muldiv128(i64 a, i64 b, i64 c, i64 *rem) nogil
    int pm_cmp128(i64 a, i64 b, i64 c, i64 d) nogil
    int pm_ctz64(uint64_t x) nogil

cdef i64 SAFE_GROSS = 3_037_000_499  # floor(sqrt(2**63 - 1)); see "Arithmetic bounds" above
cdef i64 MAX_QTY = _promo_py.MAX_QTY, MAX_CENTS = _promo_py.MAX_CENTS, MAX_UNITS = _promo_py.MAX_UNITS

cdef enum:  # rule kinds, the codes of `_promo_py`
    PERCENT_OFF, AMOUNT_OFF, FIXED_PRICE, QTY_TIER, BUNDLE, BUY_X_GET_Y, THRESHOLD, ORDER_PERCENT_OFF

if (_promo_py.PERCENT_OFF, _promo_py.AMOUNT_OFF, _promo_py.FIXED_PRICE, _promo_py.QTY_TIER, _promo_py.BUNDLE,
        _promo_py.BUY_X_GET_Y, _promo_py.THRESHOLD, _promo_py.ORDER_PERCENT_OFF) != tuple(range(8)):
    raise ImportError("core_ext._promo_c: the kind codes of _promo_py changed; rebuild the twin")

cdef enum:  # why a planned rule saves nothing; the strings are REASONS
    R_NONE, R_UNITS_CLOSED, R_UNITS_USED, R_NOT_ENOUGH_UNITS, R_NO_COMPLETE_SET, R_QTY_TIER_NOT_REACHED,
    R_THRESHOLD_NOT_REACHED, R_BELOW_MIN_CENTS, R_NO_SAVING

cdef tuple REASONS = (None, "units_closed", "units_used", "not_enough_units", "no_complete_set", "qty_tier_not_reached",
           "threshold_not_reached", "below_min_cents", "no_saving")

cdef enum:  # a basket value whose lookup raised, needed by a candidate (the lookup is repeated to raise)
    NEED_STORE = 2, NEED_CHANNEL = 3, NEED_TIER = 4  # 0 and 1 are "out of scope" and "admitted"

cdef enum:  # sort keys of `sort_by`
    BY_UNIT_DESC, BY_UNIT_ASC, BY_VALUE_DESC, BY_INDEX_ASC, BY_ITSELF_ASC

CHANNEL_BITS = {"ecr": 1, "pos": 2, "csv": 4}


# --- the rule set ------------------------------------------------------------------------------

cdef struct RuleC:
    i32 kind
    i32 group                     # interned exclusive_group, -1 none
    bint stackable
    bint every                    # no target SKUs or categories
    bint members_only
    i64 cap                       # max_discount_cents, -1 none
    i64 a, b, c, d                # the kind's parameters, as `_promo_py.Rule`
    i32 steps0, nsteps            # pairs in `steps`: (min, value), or (SKU id, qty) for a bundle
    i32 skus0, nskus              # sorted ids in `ints`
    i32 cats0, ncats
    i32 excl0, nexcl
    bint has_from, has_to
    i64 from_ms, to_ms
    i32 weekdays                  # bit d for weekday d; -1 = any day
    i32 minutes0, nminutes        # [start, end) pairs in `ints`; nminutes -1 = any time
    i32 stores0, nstores          # -1 = any store
    i32 channels                  # channel bits; -1 = any channel
    i32 tiers0, ntiers            # -1 = anyone
    i32 coupon                    # interned coupon key, -1 none


cdef struct EngineC:
    RuleC* rules
    i32 nrules
    i32* ints
    i64* steps
    i32* sku_start                # CSR: rules indexed under SKU id s are sku_rules[sku_start[s]:sku_start[s+1]]
    i32* sku_rules
    i32* cat_start
    i32* cat_rules
    i32* every                    # rules on every item (no bundles)
    i32 nevery
    i32* cat_bp                   # the ceiling per category id
    i32 default_bp
    i32 ngroups


cdef struct Ctx:                  # the basket's when / where / who / coupons, as ids
    i64 ts_ms, weekday, minute
    i32 store                     # interned id; -1 named by no rule; -2 its lookup raised
    i32 channel                   # channel bits; -2 its lookup raised
    bint member
    i32 tier                      # interned id; -1 named by no rule; -2 its lookup raised
    i32* coupons
    i32 ncoupons


# --- the basket ------------------------------------------------------------------------------

cdef struct LineC:
    i32 sku, cat                  # interned ids, -1 when no rule names them
    i64 qty, unit, gross, limit, disc
    i32 head, tail                # its segments, a chain through SegC.next


cdef struct SegC:
    i64 n, net                    # n units whose current net adds up to net
    i64 tn, tnet                  # units and net the plan in progress drew from it
    i32 next
    bint closed, used


cdef struct Piece:                # units a plan takes from a segment, in drawing order
    i32 li, seg
    i64 k, net
    bint discounted


cdef struct Share:                # a line's part of a plan's amount, before and after its ceiling
    i32 li
    i64 share, cents


cdef struct PlanC:
    i32 rule, reason
    i64 saving, capped            # capped: cents cut by max_discount_cents
    i32 piece0, npieces, share0, nshares


cdef struct Promo:
    i32 li, rule
    i64 cents


cdef struct BasketC:
    bint wide                     # products of two amounts in 128 bits (see "Arithmetic bounds")
    char* line_block              # lines, line_w, line_mark
    char* cand_block              # everything about the candidates
    char* scratch                 # the scratch arrays
    i32* coupons                  # interned coupon keys carried
    i32 ncoupons
    i32 nlines
    LineC* lines
    SegC* segs
    i32 nsegs, cap_segs
    # candidates, in evaluation order, and the lines that reach each
    uint64_t* bits
    i32* pair_rule
    i32* pair_line
    i32* slot                     # rank -> candidate; read only where `bits` is set
    i32 ncand
    i32* cand_rule
    i32* cand_start
    i32* cand_end
    i32* cand_lines
    char* cand_every
    i32* group_next
    i32* group_head
    # plans
    PlanC* plans
    i32 cap_plans
    Piece* pieces
    i32 npieces, cap_pieces
    Share* shares
    i32 nshares, cap_shares
    Promo* promos
    i32 npromos, cap_promos
    TraceC* trace                 # the trace's entries, in order
    i32 ntrace, cap_trace
    # scratch, each of cap_scratch entries
    i32 cap_scratch
    i32* pseg                     # the plan's open segments, in basket order ...
    i32* pli                      # ... and their lines
    i32* order
    i32* idx
    i32* tmp
    i32* wl
    i32* taken_li
    i32* taken_seg
    i64* wts
    i64* parts
    i64* rems
    i64* line_w                   # per line
    i32* line_mark
    i32 stamp


cdef int reserve(void** p, i32* cap, i64 need, size_t size) noexcept nogil:
    """Grow `*p` to hold at least `need` items (doubling); -1 when memory runs out."""
    if need <= cap[0]:
        return 0
    cdef i64 want = cap[0] * 2
    if want < need:
        want = need
    if want < 16:
        want = 16
    if want > 0x7FFFFFFF:
        return -1
    cdef void* q = realloc(p[0], <size_t>want * size)
    if q == NULL:
        return -1
    p[0] = q
    cap[0] = <i32>want
    return 0


cdef inline void* carve(char** at, size_t nbytes) noexcept nogil:
    """The next `nbytes` of a block being cut into arrays (8-byte aligned)."""
    cdef void* p = at[0]
    at[0] += (nbytes + 7) & ~(<size_t>7)
    return p


cdef int reserve_scratch(BasketC* B, i64 need) noexcept nogil:
    """Every scratch array at least `need` long: one block, replaced (not copied) when it must grow,
    as scratch holds nothing between one plan or settle and the next."""
    if need <= B.cap_scratch:
        return 0
    if need < 2 * <i64>B.cap_scratch:
        need = 2 * <i64>B.cap_scratch
    if need > 0x7FFFFFF:
        return -1
    cdef size_t n = <size_t>need
    free(B.scratch)
    B.cap_scratch = 0
    B.scratch = <char*>malloc(n * (8 * sizeof(i32) + 3 * sizeof(i64)) + 11 * 8)
    if B.scratch == NULL:
        return -1
    cdef char* at = B.scratch
    B.wts = <i64*>carve(&at, n * sizeof(i64))
    B.parts = <i64*>carve(&at, n * sizeof(i64))
    B.rems = <i64*>carve(&at, n * sizeof(i64))
    B.pseg = <i32*>carve(&at, n * sizeof(i32))
    B.pli = <i32*>carve(&at, n * sizeof(i32))
    B.order = <i32*>carve(&at, n * sizeof(i32))
    B.idx = <i32*>carve(&at, n * sizeof(i32))
    B.tmp = <i32*>carve(&at, n * sizeof(i32))
    B.wl = <i32*>carve(&at, n * sizeof(i32))
    B.taken_li = <i32*>carve(&at, n * sizeof(i32))
    B.taken_seg = <i32*>carve(&at, n * sizeof(i32))
    B.cap_scratch = <i32>n
    return 0


cdef void free_basket(BasketC* B) noexcept nogil:
    free(B.line_block); free(B.cand_block); free(B.scratch); free(B.coupons)
    free(B.segs); free(B.plans); free(B.pieces); free(B.shares); free(B.promos); free(B.trace)


cdef int add_trace(BasketC* B, int kind, i32 rule, i32 line, i64 cents, i32 group, i32 winner) noexcept nogil:
    """Append a trace entry; -1 when memory runs out."""
    if reserve(<void**>&B.trace, &B.cap_trace, B.ntrace + 1, sizeof(TraceC)) < 0:
        return -1
    cdef TraceC* t = &B.trace[B.ntrace]
    t.kind, t.rule, t.line, t.cents, t.group, t.winner = kind, rule, line, cents, group, winner
    B.ntrace += 1
    return 0


cdef class Basket:
    """Owns one pricing's C state, so it is freed however pricing ends (an exception included)."""
    cdef BasketC c

    def __dealloc__(self):
        free_basket(&self.c)


# --- arithmetic ------------------------------------------------------------------------------

cdef inline i64 half_up(i64 cents_times_bp) noexcept nogil:
    return (cents_times_bp + 5000) // 10000


cdef inline i64 mul_div(i64 a, i64 b, i64 c, bint wide, i64* rem) noexcept nogil:
    """floor(a * b / c) and its remainder, all non-negative, c > 0."""
    if wide:
        return pm_muldiv128(a, b, c, rem)
    cdef i64 p = a * b
    rem[0] = p % c
    return p // c


cdef inline int cmp_products(i64 a, i64 b, i64 c, i64 d, bint wide) noexcept nogil:
    """The sign of a * b - c * d."""
    if wide:
        return pm_cmp128(a, b, c, d)
    cdef i64 l = a * b, r = c * d
    return (l > r) - (l < r)


cdef inline bint at_least(i64 x, i64 n, i64 net) noexcept nogil:
    """x * n >= net without forming x * n (x, net >= 0, n >= 1)."""
    return net == 0 or x > (net - 1) // n


# --- sorting and spreading -----------------------------------------------------------------------

cdef struct SortKey:
    int mode
    const BasketC* B
    const i64* values
    const i32* indexes


cdef inline int key_cmp(const SortKey* k, i32 x, i32 y) noexcept nogil:
    """< 0 when x sorts before y. Unit modes compare positions of the plan's segments by net per unit,
    cross-multiplied so it is exact."""
    cdef const SegC* s
    cdef const SegC* t
    cdef int c
    if k.mode == BY_UNIT_DESC or k.mode == BY_UNIT_ASC:
        s = &k.B.segs[k.B.pseg[x]]
        t = &k.B.segs[k.B.pseg[y]]
        c = cmp_products(s.net, t.n, t.net, s.n, k.B.wide)
        return -c if k.mode == BY_UNIT_DESC else c
    if k.mode == BY_VALUE_DESC:
        return (k.values[x] < k.values[y]) - (k.values[x] > k.values[y])
    if k.mode == BY_INDEX_ASC:
        return (k.indexes[x] > k.indexes[y]) - (k.indexes[x] < k.indexes[y])
    return (x > y) - (x < y)


cdef void sort_by(i32* a, i32 n, i32* tmp, const SortKey* k) noexcept nogil:
    """Stable merge sort of `a` by `k`, so ties keep their order (line order, or the earlier index)."""
    cdef i32 i, j, o, h, cur
    if n <= 12:
        for i in range(1, n):
            cur = a[i]
            j = i - 1
            while j >= 0 and key_cmp(k, a[j], cur) > 0:
                a[j + 1] = a[j]
                j -= 1
            a[j + 1] = cur
        return
    h = n // 2
    sort_by(a, h, tmp, k)
    sort_by(a + h, n - h, tmp, k)
    if key_cmp(k, a[h - 1], a[h]) <= 0:
        return
    for i in range(h):
        tmp[i] = a[i]
    i = 0
    j = h
    o = 0
    while i < h and j < n:
        if key_cmp(k, a[j], tmp[i]) < 0:
            a[o] = a[j]
            j += 1
        else:
            a[o] = tmp[i]
            i += 1
        o += 1
    while i < h:
        a[o] = tmp[i]
        i += 1
        o += 1


cdef void spread(BasketC* B, i64 total, const i64* weights, i32 n, i64* parts) noexcept nogil:
    """`total` over `weights` by largest remainder, ties to the earlier (as `_promo_py.spread`).
    Uses B.rems, B.idx and B.tmp."""
    cdef i64 whole = 0, left = total
    cdef i32 i
    for i in range(n):
        whole += weights[i]
    if whole == 0:
        for i in range(n):
            parts[i] = 0
        return
    if n == 1:
        parts[0] = total
        return
    for i in range(n):
        parts[i] = mul_div(total, weights[i], whole, B.wide, &B.rems[i])
        left -= parts[i]
    if left == 0:
        return
    for i in range(n):
        B.idx[i] = i
    cdef SortKey key
    key.mode = BY_VALUE_DESC
    key.values = B.rems
    sort_by(B.idx, n, B.tmp, &key)
    for i in range(<i32>left):
        parts[B.idx[i]] += 1


# --- candidates ------------------------------------------------------------------------------

cdef inline bint has_id(const i32* ids, i32 n, i32 x) noexcept nogil:
    """Whether the sorted `ids[:n]` hold x (binary search)."""
    cdef i32 lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if ids[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo < n and ids[lo] == x


cdef bint matches(const EngineC* E, const RuleC* r, i32 sku, i32 cat) noexcept nogil:
    """As `_promo_py.Rule.matches`, on interned ids (-1 = named by no rule)."""
    cdef i32 t
    if sku >= 0 and r.nexcl and has_id(E.ints + r.excl0, r.nexcl, sku):
        return False
    if r.kind == BUNDLE:
        if sku < 0:
            return False
        for t in range(r.nsteps):
            if E.steps[2 * (r.steps0 + t)] == sku:
                break
        else:
            return False
    if r.every:
        return True
    return (sku >= 0 and has_id(E.ints + r.skus0, r.nskus, sku)) or (
        cat >= 0 and has_id(E.ints + r.cats0, r.ncats, cat))


cdef inline bint reached_matches(const EngineC* E, const RuleC* r, i32 sku, i32 cat) noexcept nogil:
    """`matches` for a line that reached the rule through its indexes: the line's SKU or category is
    one the rule names (or the rule is on every item), so only exclusions and bundles need a look."""
    if r.kind == BUNDLE:
        return matches(E, r, sku, cat)
    return not (sku >= 0 and r.nexcl and has_id(E.ints + r.excl0, r.nexcl, sku))


cdef int admits(const EngineC* E, const RuleC* r, const Ctx* x) noexcept nogil:
    """1 when the rule's when / where / who / coupon hold, 0 when not (as `_promo_py`'s candidate
    filter, in its order); NEED_* when it needs a basket value whose lookup raised."""
    cdef i32 i, start, end
    cdef bint hit
    if r.has_from and x.ts_ms < r.from_ms:
        return 0
    if r.has_to and x.ts_ms >= r.to_ms:
        return 0
    if r.weekdays >= 0 and not (1 <= x.weekday <= 7 and (r.weekdays >> x.weekday) & 1):
        return 0
    if r.nminutes >= 0:
        hit = False
        for i in range(r.nminutes):
            start = E.ints[r.minutes0 + 2 * i]
            end = E.ints[r.minutes0 + 2 * i + 1]
            if (start <= x.minute < end) if start < end else (x.minute >= start or x.minute < end):
                hit = True
                break
        if not hit:
            return 0
    if r.nstores >= 0:
        if x.store == -2:
            return NEED_STORE
        if x.store < 0 or not has_id(E.ints + r.stores0, r.nstores, x.store):
            return 0
    if r.channels >= 0:
        if x.channel == -2:
            return NEED_CHANNEL
        if not (r.channels & x.channel):
            return 0
    if (r.members_only or r.ntiers >= 0) and not x.member:
        return 0
    if r.ntiers >= 0:
        if x.tier == -2:
            return NEED_TIER
        if x.tier < 0 or not has_id(E.ints + r.tiers0, r.ntiers, x.tier):
            return 0
    if r.coupon >= 0:
        for i in range(x.ncoupons):
            if x.coupons[i] == r.coupon:
                break
        else:
            return 0
    return 1


cdef inline void mark(BasketC* B, i32 r) noexcept nogil:
    B.bits[r >> 6] |= (<uint64_t>1) << (r & 63)


cdef int gather(const EngineC* E, BasketC* B, const Ctx* x) noexcept nogil:
    """The candidates in evaluation order (B.cand_*), each with the lines that reach it through the
    indexes, deduplicated and in basket order. 0, -1 (out of memory) or a NEED_* code."""
    cdef i32 li, j, r, w, ci, p = 0, npairs = 0, status
    cdef i32 words = (E.nrules + 63) >> 6
    cdef uint64_t bits
    cdef const LineC* line
    for li in range(B.nlines):
        line = &B.lines[li]
        if line.sku >= 0:
            npairs += E.sku_start[line.sku + 1] - E.sku_start[line.sku]
        if line.cat >= 0:
            npairs += E.cat_start[line.cat + 1] - E.cat_start[line.cat]
    cdef i32 most = npairs + E.nevery  # candidates at most
    cdef size_t words_size = (words + 1) * sizeof(uint64_t), starts_size = (most + 2) * sizeof(i32)
    B.cand_block = <char*>malloc(words_size + starts_size + (most + 1)
                                 + (2 * (npairs + 1) + (E.nrules + 1) + 3 * (most + 1) + (npairs + 1)
                                    + (E.ngroups + 1)) * sizeof(i32) + 12 * 8)
    if B.cand_block == NULL:
        return -1
    cdef char* at = B.cand_block
    B.bits = <uint64_t*>carve(&at, words_size)
    B.cand_start = <i32*>carve(&at, starts_size)
    B.cand_every = <char*>carve(&at, most + 1)
    memset(B.cand_block, 0, at - B.cand_block)  # the bitmap, the counts and the flags start at zero
    B.pair_rule = <i32*>carve(&at, (npairs + 1) * sizeof(i32))
    B.pair_line = <i32*>carve(&at, (npairs + 1) * sizeof(i32))
    B.slot = <i32*>carve(&at, (E.nrules + 1) * sizeof(i32))
    B.cand_rule = <i32*>carve(&at, (most + 1) * sizeof(i32))
    B.cand_end = <i32*>carve(&at, (most + 1) * sizeof(i32))
    B.group_next = <i32*>carve(&at, (most + 1) * sizeof(i32))
    B.cand_lines = <i32*>carve(&at, (npairs + 1) * sizeof(i32))
    B.group_head = <i32*>carve(&at, (E.ngroups + 1) * sizeof(i32))
    for li in range(B.nlines):
        line = &B.lines[li]
        if line.sku >= 0:
            for j in range(E.sku_start[line.sku], E.sku_start[line.sku + 1]):
                r = E.sku_rules[j]
                mark(B, r)
                B.pair_rule[p] = r
                B.pair_line[p] = li
                p += 1
        if line.cat >= 0:
            for j in range(E.cat_start[line.cat], E.cat_start[line.cat + 1]):
                r = E.cat_rules[j]
                mark(B, r)
                B.pair_rule[p] = r
                B.pair_line[p] = li
                p += 1
    for j in range(E.nevery):
        mark(B, E.every[j])
    # The set bits in rank order are the rules the basket can reach; keep those whose scope holds.
    B.ncand = 0
    for w in range(words):
        bits = B.bits[w]
        while bits:
            r = (w << 6) + pm_ctz64(bits)
            bits &= bits - 1
            status = admits(E, &E.rules[r], x)
            if status > 1:
                return status
            if status == 0:
                B.slot[r] = -1
                continue
            B.slot[r] = B.ncand
            B.cand_rule[B.ncand] = r
            B.ncand += 1
    for j in range(E.nevery):
        ci = B.slot[E.every[j]]
        if ci >= 0:
            B.cand_every[ci] = 1
    # Lines per candidate: counted, then filled in basket order (a line reaching a rule through both
    # its SKU and its category comes twice in a row and is kept once).
    for j in range(npairs):
        ci = B.slot[B.pair_rule[j]]
        B.pair_rule[j] = ci  # from here on: the pair's candidate, -1 when out of scope
        if ci >= 0:
            B.cand_start[ci + 1] += 1
    for ci in range(B.ncand):
        B.cand_start[ci + 1] += B.cand_start[ci]
    for ci in range(B.ncand):
        B.cand_end[ci] = B.cand_start[ci]
    for j in range(npairs):
        ci = B.pair_rule[j]
        if ci < 0:
            continue
        li = B.pair_line[j]
        p = B.cand_end[ci]
        if p > B.cand_start[ci] and B.cand_lines[p - 1] == li:
            continue
        B.cand_lines[p] = li
        B.cand_end[ci] = p + 1
    return 0


# --- planning: what a rule would do on the current state -----------------------------------------

cdef inline void add_piece(BasketC* B, i32 li, i32 seg, i64 k, i64 net, bint discounted) noexcept nogil:
    cdef Piece* p = &B.pieces[B.npieces]
    p.li = li
    p.seg = seg
    p.k = k
    p.net = net
    p.discounted = discounted
    B.npieces += 1


cdef void draw(BasketC* B, const i32* order, i32 m, i64 count, bint discounted) noexcept nogil:
    """Take `count` units along the plan's segment positions `order`, recording pieces (`_draw`)."""
    cdef i32 j, pos
    cdef SegC* seg
    cdef i64 left, k, net, rem
    for j in range(m):
        if count == 0:
            return
        pos = order[j]
        seg = &B.segs[B.pseg[pos]]
        left = seg.n - seg.tn
        if left == 0:
            continue
        k = count if count < left else left
        net = mul_div(seg.net - seg.tnet, k, left, B.wide, &rem)
        add_piece(B, B.pli[pos], B.pseg[pos], k, net, discounted)
        seg.tn += k
        seg.tnet += net
        count -= k


cdef void units_in_order(BasketC* B, i32 m, bint dearest_first) noexcept nogil:
    """B.order = the plan's segment positions by net per unit, ties by line order."""
    cdef i32 j
    cdef SortKey key
    for j in range(m):
        B.order[j] = j
    key.mode = BY_UNIT_DESC if dearest_first else BY_UNIT_ASC
    key.B = B
    sort_by(B.order, m, B.tmp, &key)


cdef void reset_drawn(BasketC* B, i32 m) noexcept nogil:
    cdef i32 j
    for j in range(m):
        B.segs[B.pseg[j]].tn = 0
        B.segs[B.pseg[j]].tnet = 0


cdef i64 plan_xy(const RuleC* r, BasketC* B, i32 m) noexcept nogil:
    """Buy `a` get `b` at `c` bp: qualifying units from the dearest down, rewarded from the cheapest up.
    -1 when not one application fits."""
    cdef i64 units = 0, apps, rewarded = 0
    cdef i32 j, first
    for j in range(m):
        units += B.segs[B.pseg[j]].n
    reset_drawn(B, m)
    apps = units // (r.a + r.b)
    if r.d and apps > r.d:
        apps = r.d
    if apps == 0:
        return -1
    units_in_order(B, m, True)
    draw(B, B.order, m, apps * r.a, False)
    first = B.npieces
    units_in_order(B, m, False)
    draw(B, B.order, m, apps * r.b, True)
    for j in range(first, B.npieces):
        rewarded += B.pieces[j].net
    return half_up(rewarded * r.c)


cdef i64 plan_bundle(const EngineC* E, const RuleC* r, BasketC* B, i32 m, i32 piece0) noexcept nogil:
    """Complete sets at `a` each, their units from the dearest down; -1 when no set is complete."""
    cdef i64 sets = -1, have, qty, net = 0
    cdef i32 t, j, k, sku
    reset_drawn(B, m)
    for t in range(r.nsteps):
        sku = <i32>E.steps[2 * (r.steps0 + t)]
        qty = E.steps[2 * (r.steps0 + t) + 1]
        have = 0
        for j in range(m):
            if B.lines[B.pli[j]].sku == sku:
                have += B.segs[B.pseg[j]].n
        if sets < 0 or have // qty < sets:
            sets = have // qty
    if r.b and sets > r.b:
        sets = r.b
    if sets <= 0:
        return -1
    cdef SortKey key
    key.mode = BY_UNIT_DESC
    key.B = B
    for t in range(r.nsteps):
        sku = <i32>E.steps[2 * (r.steps0 + t)]
        qty = E.steps[2 * (r.steps0 + t) + 1]
        k = 0
        for j in range(m):
            if B.lines[B.pli[j]].sku == sku:
                B.order[k] = j
                k += 1
        sort_by(B.order, k, B.tmp, &key)
        draw(B, B.order, k, sets * qty, True)
    for j in range(piece0, B.npieces):
        net += B.pieces[j].net
    if at_least(r.a, sets, net):
        return 0
    return net - sets * r.a


cdef i64 qty_tier(const EngineC* E, const RuleC* r, BasketC* B, i32 m, i64 net) noexcept nogil:
    """The tier amount on all eligible units; -1 when the first tier is not reached."""
    cdef const i64* steps = E.steps + 2 * r.steps0
    cdef i32 t, j, nsteps = r.nsteps
    cdef i64 units = 0, pct = 0, acc = 0, first = 0, least, bp, upto, lo, hi, rem
    cdef const SegC* seg
    for j in range(m):
        units += B.segs[B.pseg[j]].n
    if units < steps[0]:
        return -1
    if r.a == 0:  # all units at the highest tier reached
        for t in range(nsteps):
            if units >= steps[2 * t]:
                pct = steps[2 * t + 1]
        return half_up(net * pct)
    # Incremental: the k-th eligible unit, counted in basket order, takes the tier k falls in.
    for j in range(m):
        seg = &B.segs[B.pseg[j]]
        for t in range(nsteps):
            least = steps[2 * t]
            bp = steps[2 * t + 1]
            upto = steps[2 * t + 2] - 1 if t + 1 < nsteps else first + seg.n
            lo = least if least > first + 1 else first + 1
            hi = upto if upto < first + seg.n else first + seg.n
            if hi >= lo and bp:
                acc += (mul_div(seg.net, hi - first, seg.n, B.wide, &rem)
                        - mul_div(seg.net, lo - first - 1, seg.n, B.wide, &rem)) * bp
        first += seg.n
    return half_up(acc)


cdef i64 threshold(const EngineC* E, const RuleC* r, i64 net) noexcept nogil:
    """The threshold amount, never above the net; -1 when not reached."""
    cdef i64 amount = -1, times
    cdef i32 t
    if r.nsteps:
        for t in range(r.nsteps):
            if net >= E.steps[2 * (r.steps0 + t)]:
                amount = E.steps[2 * (r.steps0 + t) + 1]
        if amount > net:
            amount = net
        return amount
    times = net // r.a
    if r.c and times > r.c:
        times = r.c
    if times == 0:
        return -1
    if at_least(r.b, times, net):
        return net
    return times * r.b


cdef i64 plan_each_unit(const EngineC* E, const RuleC* r, BasketC* B, i32 m, PlanC* plan) noexcept nogil:
    """The amount of a kind that discounts every eligible unit; -1 with the reason set when it does not
    apply."""
    cdef i64 net = 0, amount = 0
    cdef i32 j
    cdef const SegC* seg
    for j in range(m):
        seg = &B.segs[B.pseg[j]]
        net += seg.net
        add_piece(B, B.pli[j], B.pseg[j], seg.n, seg.net, True)
    if r.kind == FIXED_PRICE:
        # Only units above the fixed price count: the rule never raises a price.
        for j in range(m):
            seg = &B.segs[B.pseg[j]]
            if not at_least(r.a, seg.n, seg.net):
                amount += seg.net - r.a * seg.n
    elif r.kind == PERCENT_OFF:
        amount = half_up(net * r.a)
    elif r.kind == AMOUNT_OFF:
        for j in range(m):
            seg = &B.segs[B.pseg[j]]
            amount += seg.net if at_least(r.a, seg.n, seg.net) else r.a * seg.n
    elif r.kind == QTY_TIER:
        amount = qty_tier(E, r, B, m, net)
        if amount < 0:
            plan.reason = R_QTY_TIER_NOT_REACHED
    elif r.kind == THRESHOLD:
        amount = threshold(E, r, net)
        if amount < 0:
            plan.reason = R_THRESHOLD_NOT_REACHED
    elif r.kind == ORDER_PERCENT_OFF:
        if net < r.b:
            plan.reason = R_BELOW_MIN_CENTS
            return -1
        amount = half_up(net * r.a)
    return amount


cdef void share_out(BasketC* B, PlanC* plan, i64 amount) noexcept nogil:
    """Spread `amount` over the lines of the discounted pieces, in basket order, weighted by their
    net; clip each share to what its line's ceiling still allows."""
    cdef i32 j, li, nl = 0, last = -1
    cdef bint in_order = True
    cdef const Piece* p
    cdef LineC* line
    cdef i64 share, room, cents
    B.stamp += 1
    for j in range(plan.piece0, B.npieces):
        p = &B.pieces[j]
        if not p.discounted:
            continue
        li = p.li
        if B.line_mark[li] != B.stamp:
            B.line_mark[li] = B.stamp
            B.line_w[li] = 0
            B.wl[nl] = li
            nl += 1
            if li < last:
                in_order = False
            last = li
        B.line_w[li] += p.net
    cdef SortKey key
    if not in_order:
        key.mode = BY_ITSELF_ASC
        sort_by(B.wl, nl, B.tmp, &key)
    for j in range(nl):
        B.wts[j] = B.line_w[B.wl[j]]
    spread(B, amount, B.wts, nl, B.parts)
    plan.share0 = B.nshares
    for j in range(nl):
        li = B.wl[j]
        line = &B.lines[li]
        share = B.parts[j]
        room = line.limit - line.disc
        cents = share if share <= room else room
        B.shares[B.nshares].li = li
        B.shares[B.nshares].share = share
        B.shares[B.nshares].cents = cents
        B.nshares += 1
        plan.saving += cents
    plan.nshares = B.nshares - plan.share0


cdef int plan_rule(const EngineC* E, BasketC* B, i32 ci, PlanC* plan) noexcept nogil:
    """What candidate `ci` would do now on its eligible lines (`_promo_py._plan`): 1 with `plan` filled,
    0 when the basket has no eligible line, -1 when memory runs out."""
    cdef i32 r = B.cand_rule[ci]
    cdef const RuleC* rule = &E.rules[r]
    cdef bint xy = rule.kind == BUNDLE or rule.kind == BUY_X_GET_Y
    cdef bint every = B.cand_every[ci], any_line = False, any_open = False
    cdef i32 j, li, s, m = 0
    cdef i32 reach = B.nlines if every else B.cand_end[ci] - B.cand_start[ci]
    cdef const LineC* line
    cdef const SegC* seg
    if (reserve_scratch(B, 2 * <i64>B.nsegs + B.nlines + 1) < 0
            or reserve(<void**>&B.pieces, &B.cap_pieces, B.npieces + 2 * <i64>B.nsegs + 1, sizeof(Piece)) < 0
            or reserve(<void**>&B.shares, &B.cap_shares, B.nshares + <i64>B.nlines + 1, sizeof(Share)) < 0):
        return -1
    for j in range(reach):
        li = j if every else B.cand_lines[B.cand_start[ci] + j]
        line = &B.lines[li]
        if not reached_matches(E, rule, line.sku, line.cat):
            continue
        any_line = True
        s = line.head
        while s >= 0:
            seg = &B.segs[s]
            if not seg.closed:
                any_open = True
                if not (xy and seg.used):
                    B.pseg[m] = s
                    B.pli[m] = li
                    m += 1
            s = seg.next
    if not any_line:
        return 0
    plan.rule = r
    plan.reason = R_NONE
    plan.saving = 0
    plan.capped = 0
    plan.piece0 = B.npieces
    plan.share0 = B.nshares
    plan.nshares = 0
    plan.npieces = 0
    if m == 0:
        plan.reason = R_UNITS_USED if any_open else R_UNITS_CLOSED
        return 1
    cdef i64 amount
    if rule.kind == BUY_X_GET_Y:
        amount = plan_xy(rule, B, m)
        if amount < 0:
            plan.reason = R_NOT_ENOUGH_UNITS
    elif rule.kind == BUNDLE:
        amount = plan_bundle(E, rule, B, m, plan.piece0)
        if amount < 0:
            plan.reason = R_NO_COMPLETE_SET
    else:
        amount = plan_each_unit(E, rule, B, m, plan)
    plan.npieces = B.npieces - plan.piece0
    if amount < 0:
        return 1
    if amount == 0:
        plan.reason = R_NO_SAVING
        return 1
    if rule.cap >= 0 and amount > rule.cap:
        plan.capped = amount - rule.cap
        amount = rule.cap
    share_out(B, plan, amount)
    return 1


# --- settling: commit a plan that saves something ----------------------------------------------

cdef i32 split_off(BasketC* B, i32 li, i32 s, i64 k, i64 net) noexcept nogil:
    """Cut `k` units worth `net` off segment `s` into a new segment at the end of line `li`."""
    cdef i32 t = B.nsegs
    cdef SegC* part = &B.segs[t]
    cdef SegC* seg = &B.segs[s]
    part.n = k
    part.net = net
    part.tn = 0
    part.tnet = 0
    part.closed = seg.closed
    part.used = seg.used
    part.next = -1
    seg.n -= k
    seg.net -= net
    B.segs[B.lines[li].tail].next = t
    B.lines[li].tail = t
    B.nsegs += 1
    return t


cdef int settle_units(const EngineC* E, BasketC* B, const PlanC* plan) noexcept nogil:
    """Apply a plan's shares to its units (`_promo_py._settle` past the trace); -1 when memory runs out."""
    cdef const RuleC* rule = &E.rules[plan.rule]
    cdef bint xy = rule.kind == BUNDLE or rule.kind == BUY_X_GET_Y
    cdef i32 j, q, e, s, li, nt = 0, count
    cdef bint in_order = True
    cdef const Piece* p
    cdef const Share* sh
    cdef LineC* line
    if (reserve(<void**>&B.segs, &B.cap_segs, B.nsegs + <i64>plan.npieces + 1, sizeof(SegC)) < 0
            or reserve(<void**>&B.promos, &B.cap_promos, B.npromos + <i64>plan.nshares + 1, sizeof(Promo)) < 0
            or reserve_scratch(B, 2 * <i64>B.nsegs + B.nlines + 1) < 0):
        return -1
    # Split partly taken segments in the order the plan drew them, so each piece's net is the one planned.
    for j in range(plan.piece0, plan.piece0 + plan.npieces):
        p = &B.pieces[j]
        s = p.seg
        if p.k < B.segs[s].n:
            s = split_off(B, p.li, s, p.k, p.net)
        if xy:
            B.segs[s].used = True
        if p.discounted:
            if nt and p.li < B.taken_li[nt - 1]:
                in_order = False
            B.taken_li[nt] = p.li
            B.taken_seg[nt] = s
            nt += 1
    cdef SortKey key
    for j in range(nt):
        B.order[j] = j
    if not in_order:
        key.mode = BY_INDEX_ASC
        key.indexes = B.taken_li
        sort_by(B.order, nt, B.tmp, &key)
    # The shares are in basket order, and so are the taken segments now: walk both.
    e = 0
    for j in range(plan.share0, plan.share0 + plan.nshares):
        sh = &B.shares[j]
        li = sh.li
        q = e
        while e < nt and B.taken_li[B.order[e]] == li:
            e += 1
        if not sh.cents:
            continue
        count = e - q
        for s in range(count):
            B.wts[s] = B.segs[B.taken_seg[B.order[q + s]]].net
        spread(B, sh.cents, B.wts, count, B.parts)
        for s in range(count):
            B.segs[B.taken_seg[B.order[q + s]]].net -= B.parts[s]
            if not rule.stackable:
                B.segs[B.taken_seg[B.order[q + s]]].closed = True
        line = &B.lines[li]
        line.disc += sh.cents
        B.promos[B.npromos].li = li
        B.promos[B.npromos].rule = plan.rule
        B.promos[B.npromos].cents = sh.cents
        B.npromos += 1
    return 0


# --- the engine ------------------------------------------------------------------------------

cdef bint read_plain_line(line, Py_ssize_t i, LineC* out) except -1:
    """Check line `i` as `_promo_py.check_lines` does and read its qty and unit_cents into `out`, when
    it is an exact dict whose values are exact str and int (or missing); raise the reference's message
    for a bad one. False when it is anything else: the reference must judge it."""
    if type(line) is not dict:
        return False
    cdef dict d = <dict>line
    return read_plain_values(d.get("sku"), d.get("qty"), d.get("unit_cents"), d.get("category", ""), i, out)


cdef class ResolvedLine:
    """A basket line resolved against the catalog (`_records.SaleLine`, compiled; fields in
    `_promo_c.pxd`), made by the compiled sale path and read by it and the engine."""

    def __init__(self, index, code, item, qty, lot, serial, expiry):
        self.index, self.code, self.item, self.qty = index, code, item, qty
        self.lot, self.serial, self.expiry = lot, serial, expiry
        self.sku, self.category, self.unit_cents = item.sku, item.category, item.unit_cents
        self.lot_tracked, self.serial_tracked = item.lot_tracked, item.serial_tracked

    def __repr__(self):
        return (f"ResolvedLine(index={self.index!r}, code={self.code!r}, item={self.item!r}, qty={self.qty!r}, "
                f"lot={self.lot!r}, serial={self.serial!r}, expiry={self.expiry!r})")


cdef dict _line_map(ResolvedLine line):
    """A resolved line as the map the engine prices (`_salepath_py.engine_lines`)."""
    return {"sku": line.sku, "qty": line.qty, "unit_cents": line.unit_cents, "category": line.category}


cdef bint read_plain_values(sku, qty, unit, category, Py_ssize_t i, LineC* out) except -1:
    # `read_plain_line` of a line's values, wherever they come from.
    if ((sku is not None and type(sku) is not str) or (qty is not None and type(qty) is not int)
            or (unit is not None and type(unit) is not int) or type(category) is not str):
        return False
    cdef int overflow = 0
    if sku is None or not sku:
        raise PromoInputError(f"lines[{i}].sku must be a non-empty string")
    out.qty = 0 if qty is None else PyLong_AsLongLongAndOverflow(qty, &overflow)
    if qty is None or overflow or not 1 <= out.qty <= MAX_QTY:
        raise PromoInputError(f"lines[{i}].qty must be an integer 1..{MAX_QTY}")
    out.unit = -1 if unit is None else PyLong_AsLongLongAndOverflow(unit, &overflow)
    if unit is None or overflow or not 0 <= out.unit <= MAX_CENTS:
        raise PromoInputError(f"lines[{i}].unit_cents must be an integer 0..{MAX_CENTS}")
    return True


cdef void free_engine(EngineC* E) noexcept nogil:
    free(E.rules); free(E.ints); free(E.steps); free(E.sku_start); free(E.sku_rules)
    free(E.cat_start); free(E.cat_rules); free(E.every); free(E.cat_bp)
    memset(E, 0, sizeof(EngineC))


cdef i32* int_array(list values) except? NULL:
    """A malloc'd copy of a list of ints (at least one slot, so an empty list is not NULL)."""
    cdef Py_ssize_t i, n = len(values)
    cdef i32* out = <i32*>malloc((n + 1) * sizeof(i32))
    if out == NULL:
        raise MemoryError()
    for i in range(n):
        out[i] = values[i]
    return out


cdef i64* long_array(list values) except? NULL:
    cdef Py_ssize_t i, n = len(values)
    cdef i64* out = <i64*>malloc((n + 1) * sizeof(i64))
    if out == NULL:
        raise MemoryError()
    for i in range(n):
        out[i] = values[i]
    return out


cdef i32 intern(dict ids, key):
    found = ids.get(key)
    if found is None:
        found = ids[shared_str(key)] = len(ids)  # the catalog's own object (`shared_str`)
    return found


cdef class PromoEngine:
    """A loaded rule set: prices baskets and counts points. Loading validates (PromoRuleError)."""

    cdef EngineC c
    cdef dict _sku_ids, _cat_ids, _store_ids, _tier_ids, _coupon_ids
    cdef list _ids, _versions, _groups
    cdef tuple _names  # the three above, for the trace entries of the baskets priced
    cdef object _points
    cdef public object version
    cdef public object clawback_ids

    def __init__(self, body, version=0):
        rules, by_sku, by_category, every, ceiling, self._points = load_rules(body)
        free_engine(&self.c)  # a second __init__ replaces the rule set
        self.version = version
        self.clawback_ids = frozenset(r.id for r in rules if r.clawback)
        self._ids = [r.id for r in rules]
        self._versions = [r.version for r in rules]
        self._sku_ids, self._cat_ids, self._store_ids, self._tier_ids, self._coupon_ids = {}, {}, {}, {}, {}
        group_ids = {}
        ints, steps = [], []
        self.c.rules = <RuleC*>calloc(len(rules) + 1, sizeof(RuleC))
        if self.c.rules == NULL:
            raise MemoryError()
        self.c.nrules = len(rules)
        for rank, rule in enumerate(rules):
            self._flatten(rule, &self.c.rules[rank], ints, steps, group_ids)
        self._groups = sorted(group_ids, key=group_ids.get)
        self._names = (self._ids, self._versions, self._groups)
        self.c.ngroups = len(group_ids)
        self.c.ints = int_array(ints)
        self.c.steps = long_array(steps)
        default_bp, by_category_bp = ceiling
        for category in by_category_bp:
            intern(self._cat_ids, category)
        self.c.default_bp = default_bp
        self.c.cat_bp = int_array([by_category_bp.get(category, default_bp)
                                   for category in sorted(self._cat_ids, key=self._cat_ids.get)])
        csr(by_sku, self._sku_ids, &self.c.sku_start, &self.c.sku_rules)
        csr(by_category, self._cat_ids, &self.c.cat_start, &self.c.cat_rules)
        self.c.every = int_array([r.rank for r in every])
        self.c.nevery = len(every)

    cdef _flatten(self, rule, RuleC* r, list ints, list steps, dict group_ids):
        """One `_promo_py.Rule` into `r`, its id lists into `ints`, its steps into `steps`."""
        r.kind = rule.kind
        r.group = -1 if rule.group is None else intern(group_ids, rule.group)
        r.stackable = rule.stackable
        r.every = rule.every
        r.members_only = rule.members_only
        r.cap, r.a, r.b, r.c, r.d = rule.cap, rule.a, rule.b, rule.c, rule.d
        r.steps0 = len(steps) // 2
        r.nsteps = len(rule.steps)
        for first, second in rule.steps:
            steps.append(intern(self._sku_ids, first) if rule.kind == BUNDLE else first)
            steps.append(second)
        r.skus0, r.nskus = add_ids(ints, [intern(self._sku_ids, s) for s in rule.skus])
        r.cats0, r.ncats = add_ids(ints, [intern(self._cat_ids, c) for c in rule.categories])
        r.excl0, r.nexcl = add_ids(ints, [intern(self._sku_ids, s) for s in rule.excludes])
        r.has_from = rule.from_ms is not None
        r.from_ms = rule.from_ms or 0
        r.has_to = rule.to_ms is not None
        r.to_ms = rule.to_ms or 0
        r.weekdays = -1 if rule.weekdays is None else sum(1 << d for d in rule.weekdays)
        r.minutes0, r.nminutes = len(ints), -1
        if rule.minutes is not None:
            r.nminutes = len(rule.minutes)
            for start, end in rule.minutes:
                ints += (start, end)
        r.stores0, r.nstores = len(ints), -1
        if rule.stores is not None:
            r.stores0, r.nstores = add_ids(ints, [intern(self._store_ids, s) for s in rule.stores])
        r.channels = -1 if rule.channels is None else sum(CHANNEL_BITS[c] for c in rule.channels)
        r.tiers0, r.ntiers = len(ints), -1
        if rule.tiers is not None:
            r.tiers0, r.ntiers = add_ids(ints, [intern(self._tier_ids, t) for t in rule.tiers])
        r.coupon = -1 if rule.coupon is None else intern(self._coupon_ids, rule.coupon)

    def __dealloc__(self):
        free_engine(&self.c)

    def points_earned(self, cash_paid_cents, tier, is_member):
        return points_earned(self._points, cash_paid_cents, tier, is_member)

    def price(self, lines, *, member=None, coupons=(), store="", channel="ecr", ts_ms=0, weekday=1, minute=0):
        return self.price_typed(lines, member=member, coupons=coupons, store=store, channel=channel, ts_ms=ts_ms,
                                weekday=weekday, minute=minute).to_doc()

    def price_typed(self, lines, *, member=None, coupons=(), store="", channel="ecr", ts_ms=0, weekday=1,
                    minute=0):
        cdef Basket basket = Basket.__new__(Basket)
        cdef BasketC* B = &basket.c
        skus = self._read_lines(B, lines)
        tier = member.get("tier") if member else None
        self._coupons(B, coupons)
        cdef Ctx x
        x.ts_ms = clamped(ts_ms)
        x.weekday = clamped(weekday)
        x.minute = clamped(minute)
        x.member = bool(member)
        x.store = lookup(self._store_ids, store)
        x.channel = lookup(CHANNEL_BITS, channel)
        x.tier = lookup(self._tier_ids, tier)
        x.coupons = B.coupons
        x.ncoupons = B.ncoupons
        status = gather(&self.c, B, &x)
        if status == -1:
            raise MemoryError()
        if status == NEED_STORE:
            self._store_ids[store]  # raises as `store in rule.stores` does
        elif status == NEED_CHANNEL:
            CHANNEL_BITS[channel]
        elif status == NEED_TIER:
            self._tier_ids[tier]
        self._evaluate(B)
        return self._answer(B, skus)

    cdef int _coupons(self, BasketC* B, coupons) except -1:
        """B.coupons: the ids of the coupon keys the basket carries that some rule asks for. An exact
        list or tuple of exact strings is read here; anything else goes through the reference's
        `coupon_codes`, which raises for what it refuses."""
        cdef Py_ssize_t i, n = 0
        keys = None
        if type(coupons) is tuple or type(coupons) is list:
            n = len(coupons)
            for i in range(n):
                if type(coupons[i]) is not str:
                    break
            else:
                keys = [c.strip().upper() for c in coupons]  # `_promo_py.coupon_key`
        if keys is None:
            keys = coupon_codes(coupons)
            n = len(keys)
        B.coupons = <i32*>malloc((n + 1) * sizeof(i32))
        if B.coupons == NULL:
            raise MemoryError()
        B.ncoupons = 0
        for key in keys:
            found = self._coupon_ids.get(key)
            if found is not None:
                B.coupons[B.ncoupons] = found
                B.ncoupons += 1
        return 0

    cdef list _read_lines(self, BasketC* B, lines):
        """Check the lines as `_promo_py.check_lines` does (its messages, in its order) and read them into
        B.lines, one segment each; the SKUs (Python strings) for the answer.

        Lines that are exact dicts of exact str and int values are checked here as they are read; on
        anything else (a subclass, a float, a bool) the reference checks the whole basket instead."""
        cdef bint checked = False  # the reference has passed the whole basket
        # The sale path's resolved lines are read from the records (their items' SKU, price and
        # category); anything else among them is priced as the maps they stand for.
        cdef bint resolved = type(lines) is list and len(<list>lines) > 0 and type((<list>lines)[0]) is ResolvedLine
        cdef ResolvedLine rl
        if type(lines) is not list and type(lines) is not tuple:
            check_lines(lines)
            checked = True
        cdef Py_ssize_t i, n = len(lines)
        cdef LineC* line
        cdef i64 gross = 0, units = 0
        cdef bint over = False     # the gross passed MAX_CENTS (then line.gross is not computed)
        B.nlines = <i32>n
        B.line_block = <char*>calloc(1, (n + 1) * (sizeof(LineC) + sizeof(i64) + sizeof(i32)) + 3 * 8)
        if B.line_block == NULL:
            raise MemoryError()
        cdef char* at = B.line_block
        B.lines = <LineC*>carve(&at, (n + 1) * sizeof(LineC))
        B.line_w = <i64*>carve(&at, (n + 1) * sizeof(i64))
        B.line_mark = <i32*>carve(&at, (n + 1) * sizeof(i32))
        if (reserve(<void**>&B.segs, &B.cap_segs, 2 * n + 16, sizeof(SegC)) < 0
                or reserve_scratch(B, 3 * n + 16) < 0):
            raise MemoryError()
        cdef list skus = []
        for i in range(n):
            src = lines[i]
            line = &B.lines[i]
            if resolved:
                rl = src if type(src) is ResolvedLine else None
                if rl is None or not read_plain_values(rl.sku, rl.qty, rl.unit_cents, rl.category, i, line):
                    # Out of the ordinary: the reference judges the basket, as maps.
                    free(B.line_block)
                    B.line_block = NULL
                    return self._read_lines(B, [_line_map(r) if type(r) is ResolvedLine else r for r in lines])
                sku, category = rl.sku, rl.category
            else:
                if not checked and not read_plain_line(src, i, line):
                    check_lines(lines)  # raises for a bad line, or passes them all
                    checked = True
                if checked:
                    line.qty = src["qty"]
                    line.unit = src["unit_cents"]
                    sku = str(src["sku"])  # a plain str in the answer whatever subclass came in
                else:
                    sku = src["sku"]
                category = src.get("category", "")
            skus.append(sku)
            line.sku = self._sku_ids.get(sku, -1)
            line.cat = self._cat_ids.get(category, -1)
            units += line.qty
            if not over and line.unit > (MAX_CENTS - gross) // line.qty:
                over = True  # only possible before the reference has passed the basket
            if over:
                continue
            line.gross = line.qty * line.unit
            gross += line.gross
            line.limit = line.gross * (self.c.cat_bp[line.cat] if line.cat >= 0 else self.c.default_bp) // 10000
            line.disc = 0
            line.head = line.tail = <i32>i
            B.segs[i].n = line.qty
            B.segs[i].net = line.gross
            B.segs[i].tn = B.segs[i].tnet = 0
            B.segs[i].next = -1
            B.segs[i].closed = B.segs[i].used = False
        if over:
            raise PromoInputError(f"the basket's gross exceeds {MAX_CENTS} cents")
        if units > MAX_UNITS:
            raise PromoInputError(f"the basket holds more than {MAX_UNITS} units")
        B.nsegs = <i32>n
        B.wide = gross > SAFE_GROSS
        return skus

    cdef int _evaluate(self, BasketC* B) except -1:
        """Every candidate in order; an exclusive group where its first candidate stands."""
        cdef i32 ci, g, m, k, nplans, best
        for ci in range(B.ncand):
            g = self.c.rules[B.cand_rule[ci]].group
            if g >= 0:
                B.group_head[g] = -1
        for ci in range(B.ncand - 1, -1, -1):
            g = self.c.rules[B.cand_rule[ci]].group
            if g >= 0:
                B.group_next[ci] = B.group_head[g]
                B.group_head[g] = ci
        for ci in range(B.ncand):
            B.npieces = 0
            B.nshares = 0
            g = self.c.rules[B.cand_rule[ci]].group
            if g < 0:
                if reserve(<void**>&B.plans, &B.cap_plans, 1, sizeof(PlanC)) < 0:
                    raise MemoryError()
                k = plan_rule(&self.c, B, ci, &B.plans[0])
                if k < 0:
                    raise MemoryError()
                if k:
                    self._settle(B, &B.plans[0])
                continue
            if B.group_head[g] != ci:
                continue  # the group was evaluated where its first candidate stands
            nplans = 0
            m = ci
            while m >= 0:
                if reserve(<void**>&B.plans, &B.cap_plans, nplans + 1, sizeof(PlanC)) < 0:
                    raise MemoryError()
                k = plan_rule(&self.c, B, m, &B.plans[nplans])
                if k < 0:
                    raise MemoryError()
                nplans += k
                m = B.group_next[m]
            best = -1
            for k in range(nplans):
                if B.plans[k].saving > 0 and (best < 0 or B.plans[k].saving > B.plans[best].saving):
                    best = k  # ties keep the earlier: higher priority, then lower id
            for k in range(nplans):
                if k == best or B.plans[k].saving == 0:
                    self._settle(B, &B.plans[k])
                elif add_trace(B, T_EXCLUSIVE, B.plans[k].rule, 0, 0, g, B.plans[best].rule) < 0:
                    raise MemoryError()
        return 0

    cdef int _settle(self, BasketC* B, PlanC* plan) except -1:
        """The plan's trace (cap, ceiling clips, or why it did not apply), then its units."""
        cdef i32 j
        cdef const Share* sh
        if plan.capped and add_trace(B, T_CAPPED, plan.rule, 0, plan.capped, 0, 0) < 0:
            raise MemoryError()
        for j in range(plan.share0, plan.share0 + plan.nshares):
            sh = &B.shares[j]
            if sh.cents < sh.share and add_trace(B, T_CEILING, plan.rule, sh.li, sh.share - sh.cents, 0, 0) < 0:
                raise MemoryError()
        if plan.saving == 0:
            if plan.reason != R_NONE and add_trace(B, plan.reason, plan.rule, 0, 0, 0, 0) < 0:
                raise MemoryError()
            return 0
        if settle_units(&self.c, B, plan) < 0:
            raise MemoryError()
        return 0

    cdef Priced _answer(self, BasketC* B, list skus):
        cdef list lines = []
        cdef PricedLine priced
        cdef Priced out = Priced.__new__(Priced)
        cdef i64 gross = 0, disc = 0
        cdef i32 j
        cdef const LineC* line
        for j in range(B.nlines):
            line = &B.lines[j]
            priced = PricedLine.__new__(PricedLine)
            priced.sku = skus[j]
            priced.qty = line.qty
            priced.unit_cents = line.unit
            priced.gross_cents = line.gross
            priced.discount_cents = line.disc
            priced.promos = []
            lines.append(priced)
            gross += line.gross
            disc += line.disc
        for j in range(B.npromos):
            (<PricedLine>lines[B.promos[j].li]).promos.append(
                [self._ids[B.promos[j].rule], self._versions[B.promos[j].rule], B.promos[j].cents])
        out.ruleset = self.version
        out.lines = lines
        out.gross_cents = gross
        out.discount_cents = disc
        # The entries as they are: the event writes them straight, and `trace` makes the maps if asked.
        out._entries = PyBytes_FromStringAndSize(<const char*>B.trace, B.ntrace * sizeof(TraceC))
        out._names = self._names
        return out


# --- the priced basket, typed (twins of `_records.PricedLine` and `_records.Priced`) ------------

cdef class PricedLine:
    """A basket line as the engine priced it, then as the sale took it (`_records.PricedLine`)."""

    def __init__(self, str sku, long long qty, long long unit_cents, long long gross_cents, long long discount_cents,
                 list promos, lot=None, serial=None, category=None, allocations=None):
        self.sku, self.qty, self.unit_cents = sku, qty, unit_cents
        self.gross_cents, self.discount_cents, self.promos = gross_cents, discount_cents, promos
        self.lot, self.serial, self.category, self.allocations = lot, serial, category, allocations

    @property
    def net_cents(self):
        return self.gross_cents - self.discount_cents

    @classmethod
    def of_event(cls, dict line):
        return cls(line["sku"], line["qty"], line["unit_cents"], line["gross_cents"], line["discount_cents"],
                   line["promos"], line.get("lot"), line.get("serial"), line.get("category"),
                   line.get("allocations"))

    def to_doc(self):
        cdef list p
        return {"sku": self.sku, "qty": self.qty, "unit_cents": self.unit_cents, "gross_cents": self.gross_cents,
                "discount_cents": self.discount_cents, "net_cents": self.gross_cents - self.discount_cents,
                "promos": [{"id": p[0], "version": p[1], "cents": p[2]} for p in self.promos]}

    cpdef dict event_doc(self):
        return {"sku": self.sku, "qty": self.qty, "unit_cents": self.unit_cents, "gross_cents": self.gross_cents,
                "discount_cents": self.discount_cents, "net_cents": self.gross_cents - self.discount_cents,
                "promos": self.promos, "lot": self.lot, "serial": self.serial, "category": self.category,
                "allocations": self.allocations}

    cpdef dict answer_doc(self):
        cdef list promos = []
        cdef list p
        for p in self.promos:
            promos.append({"id": p[0], "cents": p[2]})
        cdef dict doc = {"sku": self.sku, "qty": self.qty, "unit_cents": self.unit_cents,
                         "gross_cents": self.gross_cents, "discount_cents": self.discount_cents,
                         "net_cents": self.gross_cents - self.discount_cents, "promos": promos, "lot": self.lot,
                         "serial": self.serial}
        if self.allocations is not None:
            doc["allocations"] = self.allocations
        return doc


cdef class Priced:
    """A basket as the engine priced it (`_records.Priced`)."""

    def __init__(self, ruleset, list lines, long long gross_cents, long long discount_cents, list trace):
        self.ruleset, self.lines, self.gross_cents, self.discount_cents, self._trace = (
            ruleset, lines, gross_cents, discount_cents, trace)

    @property
    def total_cents(self):
        return self.gross_cents - self.discount_cents

    @property
    def trace(self):
        """The trace's maps (`_promo_py.trace_entry`'s shapes), made from the engine's entries on first use."""
        if self._trace is None:
            self._trace = self._trace_maps()
        return self._trace

    cdef list _trace_maps(self):
        if self._entries is None:  # made without the engine or maps: an empty trace
            return []
        cdef const TraceC* t = <const TraceC*>PyBytes_AS_STRING(self._entries)
        cdef Py_ssize_t i, n = PyBytes_GET_SIZE(self._entries) // sizeof(TraceC)
        cdef list ids = self._names[0], versions = self._names[1], groups = self._names[2]
        cdef list out = []
        for i in range(n):
            rid, version = ids[t[i].rule], versions[t[i].rule]
            if t[i].kind == T_CAPPED:
                out.append({"rule": rid, "version": version, "reason": "capped", "cents": t[i].cents})
            elif t[i].kind == T_CEILING:
                out.append({"rule": rid, "version": version, "reason": "ceiling", "line": t[i].line,
                            "cents": t[i].cents})
            elif t[i].kind == T_EXCLUSIVE:
                out.append({"rule": rid, "version": version, "reason": "exclusive_group", "group": groups[t[i].group],
                            "winner": ids[t[i].winner]})
            else:
                out.append({"rule": rid, "version": version, "reason": REASONS[t[i].kind]})
        return out

    cdef int write_trace(self, Writer* w) except -1:
        """The trace as MessagePack, byte for byte as `_pack(self.trace)`; 1 (nothing written) when
        it was given as maps or names a value this does not write (the caller packs the maps)."""
        if self._trace is not None or self._entries is None:
            return 1
        cdef const TraceC* t = <const TraceC*>PyBytes_AS_STRING(self._entries)
        cdef Py_ssize_t i, n = PyBytes_GET_SIZE(self._entries) // sizeof(TraceC)
        cdef Py_ssize_t start = w.size
        cdef list ids = self._names[0], versions = self._names[1], groups = self._names[2]
        _pack_length(w, n, 0x90, 15, 0, 0xdc)
        for i in range(n):
            # Ids and group names are text, versions integers (`_promo_py.check_rules`); anything
            # else is left to msgpack: what was written of it is taken back.
            if (type(ids[t[i].rule]) is not str or type(versions[t[i].rule]) is not int
                    or t[i].kind == T_EXCLUSIVE and type(groups[t[i].group]) is not str):
                w.size = start
                return 1
            _pack_length(w, 4 if t[i].kind == T_CAPPED else 5 if t[i].kind in (T_CEILING, T_EXCLUSIVE) else 3,
                         0x80, 15, 0, 0xde)
            _pack_key(w, b"rule")
            _pack_str(w, <str>ids[t[i].rule])
            _pack_key(w, b"version")
            _pack_int(w, <long long>versions[t[i].rule])
            _pack_key(w, b"reason")
            if t[i].kind == T_CAPPED:
                _pack_key(w, b"capped")
                _pack_key(w, b"cents")
                _pack_int(w, t[i].cents)
            elif t[i].kind == T_CEILING:
                _pack_key(w, b"ceiling")
                _pack_key(w, b"line")
                _pack_int(w, t[i].line)
                _pack_key(w, b"cents")
                _pack_int(w, t[i].cents)
            elif t[i].kind == T_EXCLUSIVE:
                _pack_key(w, b"exclusive_group")
                _pack_key(w, b"group")
                _pack_str(w, <str>groups[t[i].group])
                _pack_key(w, b"winner")
                _pack_str(w, <str>ids[t[i].winner])
            else:
                _pack_str(w, <str>REASONS[t[i].kind])
        return 0

    def to_doc(self):
        cdef PricedLine line
        return {"ruleset": self.ruleset, "lines": [line.to_doc() for line in self.lines],
                "gross_cents": self.gross_cents, "discount_cents": self.discount_cents,
                "total_cents": self.gross_cents - self.discount_cents, "trace": self.trace}


cdef tuple add_ids(list ints, list ids):
    """Append the sorted `ids` to the pool: (where they start, how many)."""
    start = len(ints)
    ints += sorted(ids)
    return start, len(ids)


cdef i64 clamped(value) except? -1:
    """An integer as a C long long, clamped: it is only compared with values within +-2**62, so the
    answers are those of the unbounded integer. Anything but an int raises TypeError."""
    cdef int overflow = 0
    if not isinstance(value, int):
        raise TypeError(f"an integer is required, got {type(value).__name__}")
    cdef i64 v = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow:
        return 0x7FFFFFFFFFFFFFFF if overflow > 0 else -0x7FFFFFFFFFFFFFFF
    return v


cdef i32 lookup(dict ids, key) except -3:
    """The interned id of `key`, -1 when no rule names it, -2 when it cannot be looked up (unhashable):
    the engine raises only if a candidate needs it, as the reference does."""
    try:
        return ids.get(key, -1)
    except TypeError:
        return -2


cdef int csr(dict index, dict ids, i32** start, i32** ranks) except -1:
    """The ranks of the rules under id k are (*ranks)[(*start)[k]:(*start)[k + 1]], in evaluation order."""
    by_id = [()] * len(ids)
    for key, rules in index.items():
        by_id[ids[key]] = rules
    offsets = [0]
    flat = []
    for rules in by_id:
        flat += [r.rank for r in rules]
        offsets.append(len(flat))
    start[0] = int_array(offsets)
    ranks[0] = int_array(flat)
    return 0
