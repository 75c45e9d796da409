# cython: language_level=3, boundscheck=False, wraparound=False
"""PROMO/1, compiled: the same `PromoEngine` as `_promo_py`, typed for the per-basket work.

Validation, rule loading, points and the answer's shape come from `_promo_py` (they run once per rule
set); this module mirrors its pricing step by step, so read `_promo_py` for the why of each step.
Money fits in 64 bits (the reference bounds it); products of two amounts go through 128-bit helpers.
"""
from core_ext._promo_py import (
    AMOUNT_OFF, BUNDLE, BUY_X_GET_Y, FIXED_PRICE, ORDER_PERCENT_OFF, PERCENT_OFF, QTY_TIER, THRESHOLD,
    PromoInputError, PromoRuleError, check_lines, coupon_codes, load_rules, points_earned, validate_promotions,
)

cimport cython

__all__ = ["PromoEngine", "PromoRuleError", "PromoInputError", "validate_promotions"]

cdef extern from *:
    """
    static inline long long pm_muldiv(long long a, long long b, long long c, long long *rem) {
        __int128 p = (__int128)a * b;
        *rem = (long long)(p % c);
        return (long long)(p / c);
    }
    static inline int pm_cmp(long long a, long long b, long long c, long long d) {
        __int128 l = (__int128)a * b, r = (__int128)c * d;
        return (l > r) - (l < r);
    }
    """
    long long pm_muldiv(long long a, long long b, long long c, long long *rem)
    int pm_cmp(long long a, long long b, long long c, long long d)


cdef inline dict trace_entry(CRule rule, str reason):
    return {"rule": rule.id, "version": rule.version, "reason": reason}


cdef inline long long half_up(long long cents_times_bp):
    return (cents_times_bp + 5000) // 10000


cdef list spread(long long total, list weights):
    """`total` over `weights` by largest remainder, ties to the earlier (as `_promo_py.spread`)."""
    cdef Py_ssize_t i, n = len(weights), best
    cdef long long whole = 0, left, rem, w
    for i in range(n):
        whole += <long long>weights[i]
    if whole == 0:
        return [0] * n
    cdef list parts = [0] * n
    cdef list rems = [0] * n
    left = total
    for i in range(n):
        w = weights[i]
        q = pm_muldiv(total, w, whole, &rem)
        parts[i] = q
        rems[i] = rem
        left -= q
    cdef list picked
    if left:
        picked = [False] * n
        while left:
            best = -1
            for i in range(n):
                if not picked[i] and (best < 0 or <long long>rems[i] > <long long>rems[best]):
                    best = i
            picked[best] = True
            parts[best] = <long long>parts[best] + 1
            left -= 1
    return parts


cdef class CRule:
    cdef public object id, version, group, skus, categories, excludes, bundle_qty, steps
    cdef public object from_ms, to_ms, weekdays, minutes, stores, channels, tiers, coupon
    cdef public int kind, layer, rank
    cdef public bint stackable, every, members_only, clawback
    cdef public long long cap, a, b, c, d

    def __init__(self, r):
        self.id, self.version, self.group = r.id, r.version, r.group
        self.skus, self.categories, self.excludes = r.skus, r.categories, r.excludes
        self.bundle_qty, self.steps = r.bundle_qty, r.steps
        self.from_ms, self.to_ms, self.weekdays, self.minutes = r.from_ms, r.to_ms, r.weekdays, r.minutes
        self.stores, self.channels, self.tiers, self.coupon = r.stores, r.channels, r.tiers, r.coupon
        self.kind, self.layer, self.rank = r.kind, r.layer, r.rank
        self.stackable, self.every, self.members_only, self.clawback = r.stackable, r.every, r.members_only, r.clawback
        self.cap, self.a, self.b, self.c, self.d = r.cap, r.a, r.b, r.c, r.d

    cdef bint matches(self, str sku, str category):
        if sku in self.excludes:
            return False
        if self.kind == BUNDLE and sku not in self.bundle_qty:
            return False
        return self.every or sku in self.skus or category in self.categories


@cython.no_gc  # per-basket state: it holds no reference back to itself, so no cycles
cdef class Seg:
    cdef long long n, net, tn, tnet   # tn/tnet: units and net a plan in progress drew from it
    cdef bint closed, used
    cdef Py_ssize_t order

    def __cinit__(self, long long n, long long net, bint closed=False, bint used=False):
        self.n = n
        self.net = net
        self.closed = closed
        self.used = used


@cython.no_gc
cdef class Line:
    cdef str sku, category
    cdef long long qty, unit, gross, limit, disc
    cdef list segs, promos

    def __cinit__(self, dict line, tuple ceiling):
        self.sku = line["sku"]
        self.category = line.get("category", "")
        self.qty = line["qty"]
        self.unit = line["unit_cents"]
        self.gross = self.qty * self.unit
        self.limit = self.gross * <long long>ceiling[1].get(self.category, ceiling[0]) // 10000
        self.disc = 0
        self.segs = [Seg(self.qty, self.gross)]
        self.promos = []


@cython.no_gc
cdef class Piece:
    cdef Py_ssize_t li
    cdef Seg seg
    cdef long long k, net
    cdef bint discounted


@cython.no_gc
cdef class Plan:
    cdef CRule rule
    cdef list pieces, trace, applied   # applied: [(line, cents)] in basket order
    cdef long long saving
    cdef object reason

    def __cinit__(self, CRule rule, reason=None):
        self.rule = rule
        self.pieces = []
        self.trace = []
        self.applied = []
        self.saving = 0
        self.reason = reason


cdef inline int unit_cmp(Seg a, Seg b, bint desc):
    cdef int c = pm_cmp(a.net, b.n, b.net, a.n)
    if c != 0:
        return -c if desc else c
    return -1 if a.order < b.order else (1 if a.order > b.order else 0)


cdef list sort_units(list segs, bint desc):
    """Insertion sort by net per unit (dearest first when `desc`), ties by line order; lists are short."""
    cdef list out = list(segs)
    cdef Py_ssize_t i, j, n = len(out)
    cdef Seg cur
    for i in range(1, n):
        cur = out[i]
        j = i - 1
        while j >= 0 and unit_cmp(<Seg>out[j], cur, desc) > 0:
            out[j + 1] = out[j]
            j -= 1
        out[j + 1] = cur
    return out


cdef void draw(list order, list lis, long long count, list pieces, bint discounted):
    cdef Seg seg
    cdef Piece piece
    cdef long long left, k, rem
    for seg in order:
        if count == 0:
            return
        left = seg.n - seg.tn
        if left == 0:
            continue
        k = count if count < left else left
        piece = Piece()
        piece.li = lis[seg.order]
        piece.seg = seg
        piece.k = k
        piece.net = pm_muldiv(seg.net - seg.tnet, k, left, &rem)
        piece.discounted = discounted
        pieces.append(piece)
        seg.tn += k
        seg.tnet += piece.net
        count -= k


cdef long long plan_xy(CRule rule, list segs, list lis, list pieces):
    cdef long long units = 0, apps, rewarded = 0
    cdef Seg seg
    cdef Piece piece
    cdef Py_ssize_t first
    for seg in segs:
        units += seg.n
        seg.tn = 0
        seg.tnet = 0
    apps = units // (rule.a + rule.b)
    if rule.d and apps > rule.d:
        apps = rule.d
    if apps == 0:
        return -1
    draw(sort_units(segs, True), lis, apps * rule.a, pieces, False)
    first = len(pieces)
    draw(sort_units(segs, False), lis, apps * rule.b, pieces, True)
    for piece in pieces[first:]:
        rewarded += piece.net
    return half_up(rewarded * rule.c)


cdef long long plan_bundle(CRule rule, list segs, list lis, list skus, list pieces):
    cdef long long sets = -1, have, qty, net = 0
    cdef Seg seg
    cdef Piece piece
    cdef Py_ssize_t i, n = len(segs)
    for seg in segs:
        seg.tn = 0
        seg.tnet = 0
    for sku, q in rule.steps:
        qty = q
        have = 0
        for i in range(n):
            if skus[i] == sku:
                have += (<Seg>segs[i]).n
        if sets < 0 or have // qty < sets:
            sets = have // qty
    if rule.b and sets > rule.b:
        sets = rule.b
    if sets <= 0:
        return -1
    for sku, q in rule.steps:
        qty = q
        draw(sort_units([segs[i] for i in range(n) if skus[i] == sku], True), lis, sets * qty, pieces, True)
    for piece in pieces:
        net += piece.net
    if pm_cmp(sets, rule.a, net, 1) >= 0:
        return 0
    return net - sets * rule.a


cdef long long qty_tier(CRule rule, list segs, long long net):
    cdef long long units = 0, pct, acc = 0, first = 0, least, bp, upto, lo, hi, a, b, rem
    cdef Seg seg
    cdef tuple steps = rule.steps
    cdef Py_ssize_t t, nsteps = len(steps)
    for seg in segs:
        units += seg.n
    if units < <long long>steps[0][0]:
        return -1
    if rule.a == 0:
        pct = 0
        for t in range(nsteps):
            if units >= <long long>steps[t][0]:
                pct = steps[t][1]
        return half_up(net * pct)
    for seg in segs:
        for t in range(nsteps):
            least = steps[t][0]
            bp = steps[t][1]
            upto = <long long>steps[t + 1][0] - 1 if t + 1 < nsteps else first + seg.n
            lo = least if least > first + 1 else first + 1
            hi = upto if upto < first + seg.n else first + seg.n
            if hi >= lo and bp:
                a = lo - first - 1
                b = hi - first
                acc += (pm_muldiv(seg.net, b, seg.n, &rem) - pm_muldiv(seg.net, a, seg.n, &rem)) * bp
        first += seg.n
    return half_up(acc)


cdef list lines_of(CRule rule, list state, dict sku_lines, dict category_lines):
    """As `_promo_py._lines_of`: the eligible lines, in basket order, through the basket's indexes."""
    cdef Py_ssize_t li, n = len(state)
    cdef Line line
    cdef list found
    cdef set hits
    if rule.every and rule.kind != BUNDLE:
        found = list(range(n))
    else:
        hits = set()
        skus = rule.bundle_qty if rule.kind == BUNDLE else rule.skus
        for sku in (skus if len(skus) < len(sku_lines) else [s for s in sku_lines if s in skus]):
            hits.update(sku_lines.get(sku, ()))
        if rule.kind != BUNDLE:
            for category in rule.categories:
                hits.update(category_lines.get(category, ()))
        found = sorted(hits)
    cdef list out = []
    for li in found:
        line = state[li]
        if rule.matches(line.sku, line.category):
            out.append(li)
    return out


cdef object plan_rule(CRule rule, list state, list lines):
    """As `_promo_py._plan`: what `rule` would do now on its eligible `lines`; None when there are none."""
    if not lines:
        return None
    cdef bint xy = rule.kind == BUNDLE or rule.kind == BUY_X_GET_Y
    cdef bint any_open = False
    cdef list segs = [], lis = [], skus = []
    cdef Line line
    cdef Seg seg
    cdef Piece piece
    cdef Py_ssize_t li
    cdef long long amount = 0, net = 0, times, cents, share, room
    cdef dict entry
    for li in lines:
        line = state[li]
        for seg in line.segs:
            if seg.closed:
                continue
            any_open = True
            if xy and seg.used:
                continue
            seg.order = len(segs)
            segs.append(seg)
            lis.append(li)
            skus.append(line.sku)
    if not segs:
        return Plan(rule, "units_used" if any_open else "units_closed")
    cdef Plan plan = Plan(rule)
    cdef list pieces = plan.pieces
    cdef int kind = rule.kind
    cdef Py_ssize_t i, n = len(segs)
    if kind == BUY_X_GET_Y:
        amount = plan_xy(rule, segs, lis, pieces)
        if amount < 0:
            plan.reason = "not_enough_units"
            return plan
    elif kind == BUNDLE:
        amount = plan_bundle(rule, segs, lis, skus, pieces)
        if amount < 0:
            plan.reason = "no_complete_set"
            return plan
    else:
        for seg in segs:
            net += seg.net
        for i in range(n):
            seg = segs[i]
            pieces.append(_piece(lis[i], seg, seg.n, seg.net, True))
        if kind == FIXED_PRICE:
            for seg in segs:
                if pm_cmp(rule.a, seg.n, seg.net, 1) < 0:
                    amount += seg.net - rule.a * seg.n
        elif kind == PERCENT_OFF:
            amount = half_up(net * rule.a)
        elif kind == AMOUNT_OFF:
            for seg in segs:
                amount += seg.net if pm_cmp(rule.a, seg.n, seg.net, 1) >= 0 else rule.a * seg.n
        elif kind == QTY_TIER:
            amount = qty_tier(rule, segs, net)
            if amount < 0:
                plan.reason = "qty_tier_not_reached"
                return plan
        elif kind == THRESHOLD:
            if rule.steps:
                amount = -1
                for least, off in rule.steps:
                    if net >= <long long>least:
                        amount = off
            else:
                times = net // rule.a
                if rule.c and times > rule.c:
                    times = rule.c
                if times == 0:
                    amount = -1
                elif pm_cmp(times, rule.b, net, 1) >= 0:
                    amount = net
                else:
                    amount = times * rule.b
            if amount < 0:
                plan.reason = "threshold_not_reached"
                return plan
            if amount > net:
                amount = net
        elif kind == ORDER_PERCENT_OFF:
            if net < rule.b:
                plan.reason = "below_min_cents"
                return plan
            amount = half_up(net * rule.a)
    if amount == 0:
        plan.reason = "no_saving"
        return plan
    if rule.cap >= 0 and amount > rule.cap:
        entry = trace_entry(rule, "capped")
        entry["cents"] = amount - rule.cap
        plan.trace.append(entry)
        amount = rule.cap
    # Lines in basket order, whatever order the units were drawn in (remainder ties: the earlier line).
    cdef dict weight = {}
    for piece in pieces:
        if piece.discounted:
            weight[piece.li] = <long long>weight.get(piece.li, 0) + piece.net
    cdef list order = sorted(weight)
    cdef list shares = spread(amount, [weight[li] for li in order])
    for i in range(len(order)):
        li = order[i]
        line = state[li]
        share = shares[i]
        room = line.limit - line.disc
        cents = share if share <= room else room
        if cents < share:
            entry = trace_entry(rule, "ceiling")
            entry["line"] = li
            entry["cents"] = share - cents
            plan.trace.append(entry)
        plan.applied.append((li, cents))
        plan.saving += cents
    return plan


cdef Piece _piece(Py_ssize_t li, Seg seg, long long k, long long net, bint discounted):
    cdef Piece piece = Piece()
    piece.li = li
    piece.seg = seg
    piece.k = k
    piece.net = net
    piece.discounted = discounted
    return piece


cdef void settle(Plan plan, list state, list trace):
    trace.extend(plan.trace)
    cdef CRule rule = plan.rule
    if plan.saving == 0:
        if plan.reason is not None:
            trace.append(trace_entry(rule, plan.reason))
        return
    cdef bint xy = rule.kind == BUNDLE or rule.kind == BUY_X_GET_Y
    cdef list taken_li = [], taken = []
    cdef Piece piece
    cdef Seg seg, part
    cdef Line line
    cdef long long cents, p
    cdef Py_ssize_t li, j
    for piece in plan.pieces:
        seg = piece.seg
        if piece.k < seg.n:
            part = Seg(piece.k, piece.net, seg.closed, seg.used)
            seg.n -= piece.k
            seg.net -= piece.net
            (<Line>state[piece.li]).segs.append(part)
            seg = part
        if xy:
            seg.used = True
        if piece.discounted:
            taken_li.append(piece.li)
            taken.append(seg)
    cdef list segs, parts
    for li, cents in plan.applied:
        if not cents:
            continue
        segs = [taken[j] for j in range(len(taken)) if <Py_ssize_t>taken_li[j] == li]
        parts = spread(cents, [(<Seg>s).net for s in segs])
        for j in range(len(segs)):
            seg = segs[j]
            p = parts[j]
            seg.net -= p
            if not rule.stackable:
                seg.closed = True
        line = state[li]
        line.disc += cents
        line.promos.append((rule, cents))


cdef class PromoEngine:
    """A loaded rule set: prices baskets and counts points. Loading validates (PromoRuleError)."""

    cdef list _rules
    cdef dict _by_sku, _by_category
    cdef list _every
    cdef tuple _ceiling
    cdef object _points
    cdef public object version
    cdef public object clawback_ids

    def __init__(self, body, version=0):
        rules, by_sku, by_category, every, self._ceiling, self._points = load_rules(body)
        compiled = {r.rank: CRule(r) for r in rules}
        self._rules = [compiled[r.rank] for r in rules]
        self._by_sku = {k: [compiled[r.rank] for r in v] for k, v in by_sku.items()}
        self._by_category = {k: [compiled[r.rank] for r in v] for k, v in by_category.items()}
        self._every = [compiled[r.rank] for r in every]
        self.version = version
        self.clawback_ids = frozenset(r.id for r in rules if r.clawback)

    def points_earned(self, cash_paid_cents, tier, is_member):
        return points_earned(self._points, cash_paid_cents, tier, is_member)

    cdef list _candidates(self, list lines, member, coupons, store, channel, long long ts_ms, long long weekday,
                          long long minute):
        cdef dict found = {}
        cdef CRule rule
        cdef Line line
        for rule in self._every:
            found[rule.rank] = rule
        for line in lines:
            for rule in self._by_sku.get(line.sku, ()):
                found[rule.rank] = rule
            for rule in self._by_category.get(line.category, ()):
                found[rule.rank] = rule
        tier = member.get("tier") if member else None
        codes = coupon_codes(coupons)
        cdef list out = []
        cdef bint hit
        for rank in sorted(found):
            rule = found[rank]
            if rule.from_ms is not None and ts_ms < rule.from_ms:
                continue
            if rule.to_ms is not None and ts_ms >= rule.to_ms:
                continue
            if rule.weekdays is not None and weekday not in rule.weekdays:
                continue
            if rule.minutes is not None:
                hit = False
                for start, end in rule.minutes:
                    if (start <= minute < end) if start < end else (minute >= start or minute < end):
                        hit = True
                        break
                if not hit:
                    continue
            if rule.stores is not None and store not in rule.stores:
                continue
            if rule.channels is not None and channel not in rule.channels:
                continue
            if (rule.members_only or rule.tiers is not None) and not member:
                continue
            if rule.tiers is not None and tier not in rule.tiers:
                continue
            if rule.coupon is not None and rule.coupon not in codes:
                continue
            out.append(rule)
        return out

    def price(self, lines, *, member=None, coupons=(), store="", channel="ecr", ts_ms=0, weekday=1, minute=0):
        check_lines(lines)
        cdef list state = [Line(src, self._ceiling) for src in lines]
        cdef list trace = []
        cdef list cands = self._candidates(state, member, coupons, store, channel, ts_ms, weekday, minute)
        cdef dict groups = {}
        cdef CRule rule
        cdef Plan p, best
        for rule in cands:
            if rule.group is not None:
                groups.setdefault(rule.group, []).append(rule)
        cdef dict sku_lines = {}, category_lines = {}
        cdef Line line
        cdef Py_ssize_t li
        for li in range(len(state)):
            line = state[li]
            sku_lines.setdefault(line.sku, []).append(li)
            category_lines.setdefault(line.category, []).append(li)
        for rule in cands:
            if rule.group is None:
                plan = plan_rule(rule, state, lines_of(rule, state, sku_lines, category_lines))
                if plan is not None:
                    settle(<Plan>plan, state, trace)
                continue
            members = groups.get(rule.group)
            if members is None or members[0] is not rule:
                continue
            plans = []
            for r in members:
                x = plan_rule(<CRule>r, state, lines_of(<CRule>r, state, sku_lines, category_lines))
                if x is not None:
                    plans.append(x)
            best = None
            for p in plans:
                if p.saving > 0 and (best is None or p.saving > best.saving):
                    best = p
            for p in plans:
                if p is best or p.saving == 0:
                    settle(p, state, trace)
                else:
                    entry = trace_entry(p.rule, "exclusive_group")
                    entry["group"] = rule.group
                    entry["winner"] = best.rule.id
                    trace.append(entry)
        return answer(self.version, state, trace)


cdef dict answer(version, list state, list trace):
    cdef list out_lines = []
    cdef long long gross = 0, disc = 0
    cdef Line line
    for line in state:
        out_lines.append({
            "sku": line.sku, "qty": line.qty, "unit_cents": line.unit, "gross_cents": line.gross,
            "discount_cents": line.disc, "net_cents": line.gross - line.disc,
            "promos": [{"id": r.id, "version": r.version, "cents": c} for r, c in line.promos],
        })
        gross += line.gross
        disc += line.disc
    return {"ruleset": version, "lines": out_lines, "gross_cents": gross, "discount_cents": disc,
            "total_cents": gross - disc, "trace": trace}
