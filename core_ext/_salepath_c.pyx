# cython: language_level=3
"""The sale path's work per line, compiled: mirrors `_salepath_py.py` (the reference) function by
function, typed, over the ledger's C fields (`_ledger_c.pxd`).

Where the reference asks the ledger module for a balance, this reads the `Balances` fields; where it
builds a key to ask whether an alert is open, this first asks whether the SKU has any open alert.
The answers, the rows written and the events appended are the same, byte for byte.
"""
from hashlib import sha256 as _sha256

from . import _errors as E, _ledger_c, _master, _salepath_py
from ._day_figures import METHOD_ORDER, fold as _fold
from ._errors import Refused, bad_request
from ._limits import MAX_CODE, MAX_COUPONS, MAX_ID, MAX_LINES, MAX_TEXT
from ._records import Move, alert_raised
from ._store import _pack, alert_key

from ._ledger_c cimport Balances, LotRow, SkuBalances, _balances, apply_moves, move_tuple, state_of
from ._promo_c cimport Priced, PricedLine, ResolvedLine

from datetime import date

from cpython.bytes cimport PyBytes_AsStringAndSize, PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_Keys
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.object cimport PyObject, PyTypeObject
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

from ._mpwrite cimport Writer, _pack_byte, _pack_int, _pack_key, _pack_length, _pack_raw, _pack_str, _put_be, _reserve

FLAVOUR = "cython"

cdef dict _NO_FACTS = {}


cdef extern from "Python.h":
    PyTypeObject PyTuple_Type


cdef inline object _move(sku, lot, delta, expiry, serials):
    # `Move(...)` without its Python-level `__new__`: the same named tuple, made by tuple's own
    # constructor called in C (`tuple.__new__(Move, ...)` without looking it up each time).
    cdef tuple args = ((sku, lot, delta, expiry, serials),)  # tuple(iterable): one argument
    return PyTuple_Type.tp_new(<type>Move, <PyObject*>args, NULL)


cdef inline dict _map_of(obj):
    # A map read as a dict (a key without a method call); a map of another type as a copy.
    return <dict>obj if type(obj) is dict else dict(obj)


cdef tuple _NO_SERIALS = ()
cdef tuple _METHODS = METHOD_ORDER  # the payment methods
_MasterState = _master.MasterState  # the writer's master view, as `state_of` finds it




cdef inline LotRow _row(Balances bal, str sku, lot):
    cdef SkuBalances sb = bal.skus.get(sku)
    return None if sb is None else sb.lots.get(lot)


cdef inline long long _qty(Balances bal, str sku, lot):
    cdef LotRow row = _row(bal, sku, lot)
    return 0 if row is None else row.qty


cdef bint _holds_serial(Balances bal, str sku, serial):
    """Whether a lot of `sku` (or its balance outside any lot) holds the unit `serial`."""
    cdef SkuBalances sb = bal.skus.get(sku)
    cdef LotRow row
    if sb is None:
        return False
    for row in sb.lots.values():
        if serial in row.serials:
            return True
    return False


cdef object _holder_of(Balances bal, str sku, serial):
    """The lot holding `serial` (as `serial_holders`: the last lot listing it), or None."""
    cdef SkuBalances sb = bal.skus.get(sku)
    cdef LotRow row
    holder = None
    if sb is None:
        return None
    for lot, row in sb.lots.items():
        if serial in row.serials:
            holder = lot
    return holder


cdef inline long long _days_between(str first, str second):
    return (date.fromisoformat(second) - date.fromisoformat(first)).days


# --- resolving and checking the lines --------------------------------------------------------

cdef bint _sale_line_ok(line):
    if not isinstance(line, dict):
        return False
    cdef dict d = _map_of(line)
    code = d.get("code", d.get("sku"))
    if not isinstance(code, str) or not code:
        return False
    qty = d.get("qty")
    if not _int_ok(qty) or not 0 < qty <= 1_000_000:
        return False
    for opt in ("lot", "serial"):
        value = d.get(opt)
        if value is not None and (not isinstance(value, str) or not value):
            return False
    return True


cpdef basket_lines(dict body):
    lines = body.get("lines")
    if isinstance(lines, list) and lines:
        for line in <list>lines:
            if not _sale_line_ok(line):
                break
        else:
            return lines
    return _salepath_py.basket_lines(body)  # refused: in the reference's words


cpdef list resolve_lines(tx, list lines, resolve_code):
    cdef list out = []
    cdef Py_ssize_t i
    cdef dict facts
    cdef dict items = _view(tx).items
    cdef Balances bal = None
    cdef dict line
    for i in range(len(lines)):
        line = _map_of(lines[i])
        code = line.get("code", line.get("sku"))
        item = items.get(code)
        if item is None:
            item, facts = resolve_code(tx, code)
        else:
            facts = _NO_FACTS
        if item is None or not item.active:
            raise Refused(E.UNKNOWN_ITEM, f"lines[{i}]: {code!r} matches nothing sellable in the catalog")
        qty = line["qty"]
        serial = line.get("serial") or facts.get("serial")
        lot_tracked = item.lot_tracked
        lot = (line.get("lot") or facts.get("lot")) if lot_tracked else None
        if serial and abs(qty) != 1:
            raise bad_request(f"lines[{i}].qty must be 1 with a serial (a serial names one unit), got {qty}")
        if serial and lot_tracked:
            if bal is None:
                bal = _balances(tx)
            holder = _holder_of(bal, item.sku, serial)  # a serial names its unit, and so its lot
            if holder is not None and lot is not None and holder != lot:
                raise bad_request(f"lines[{i}].lot: serial {serial} of {item.sku} is in lot {holder}, not {lot}")
            lot = lot if holder is None else holder
        out.append(ResolvedLine(i, code, item, qty, lot, serial, line.get("expiry") or facts.get("expiry")))
    return out


cpdef list check_lots(tx, list resolved, str day, warn_days, bint record, bint as_happened):
    cdef list warnings = []
    view = _view(tx)
    cdef Balances bal = None
    cdef LotRow row
    cdef ResolvedLine line
    for line in resolved:
        sku = line.sku
        lot = line.lot
        recall = view.recall_of(sku, lot) if view.recalls else None
        if recall is not None and as_happened:  # sold at the counter already: reported, not refused
            warnings.append({"kind": E.RECALLED_LOT_SOLD, "sku": sku, "lot": lot, "recall_id": recall["recall_id"]})
        elif recall is not None:
            doc = {"type": "refusal", "request": "sale", "sku": sku, "lot": lot, "recall_id": recall["recall_id"],
                   "reason": recall.get("reason", "")} if record else None
            raise Refused(E.RECALLED_LOT, f"{sku} lot {lot or '(all lots)'} is recalled ({recall['recall_id']}): "
                                          "it must not be sold", record=doc)
        if lot is None:
            continue
        if bal is None:
            bal = _balances(tx)
        row = _row(bal, sku, lot)
        expiry = (None if row is None else row.expiry) or line.expiry
        line.expiry = expiry
        if expiry is not None and expiry < day and as_happened:
            warnings.append({"kind": E.EXPIRED_LOT_SOLD, "sku": sku, "lot": lot, "expiry": expiry})
        elif expiry is not None and expiry < day:
            doc = {"type": "refusal", "request": "sale", "sku": sku, "lot": lot, "expiry": expiry} if record else None
            raise Refused(E.EXPIRED_LOT, f"{sku} lot {lot} expired on {expiry}: it must not be sold", record=doc)
        if expiry is not None and _days_between(day, expiry) <= warn_days and "LOT_EXPIRES_SOON" not in warnings:
            warnings.append("LOT_EXPIRES_SOON")
    return warnings


def engine_lines(list resolved):
    # The compiled engine reads the resolved lines (`ResolvedLine`) themselves: no map per line.
    return resolved


cpdef mark_lots(list priced_lines, list resolved):
    cdef Py_ssize_t i
    cdef PricedLine line
    cdef ResolvedLine r
    for i in range(min(len(priced_lines), len(resolved))):
        line = priced_lines[i]
        r = resolved[i]
        line.lot = r.lot
        line.serial = r.serial


# --- taking the units from stock -------------------------------------------------------------

cdef list _allocate(tx, Balances bal, ResolvedLine line, str day, bint refuse_negative):
    cdef str sku = line.sku
    qty = line.qty
    cdef tuple serials = (line.serial,) if line.serial else _NO_SERIALS
    cdef long long have, take_n, short
    if serials and line.serial_tracked and not _holds_serial(bal, sku, serials[0]):
        # The ledger does not hold this unit: no lot can give it, so it is all shortfall.
        if refuse_negative:
            raise Refused(E.INSUFFICIENT_STOCK, f"{sku}: serial {serials[0]} is not in stock")
        return [_move(sku, None, -qty, None, serials)]
    if not line.lot_tracked:
        have = _qty(bal, sku, None)
        if refuse_negative and have < qty:
            raise Refused(E.INSUFFICIENT_STOCK, f"{sku}: {max(have, 0)} on hand, {qty} asked")
        return [_move(sku, None, -qty, None, serials)]
    lot = line.lot
    if lot is not None:
        have = _qty(bal, sku, lot)
        take_n = min(max(have, 0), <long long>qty)
        row = _row(bal, sku, lot)
        chosen = [(lot, None if row is None else row.expiry, take_n)] if take_n else []
        short = qty - take_n
    else:
        chosen, short = _ledger_c.fefo_allocate(_ledger_c.lots_of(tx, sku, _master.recalls_of(tx, sku)), qty, day)
    if short and refuse_negative:
        raise Refused(E.INSUFFICIENT_STOCK, f"{sku}: sellable stock covers {qty - short} of {qty}")
    cdef list moves = []
    cdef Py_ssize_t i
    for i in range(len(chosen)):
        c_lot, c_expiry, c_take = chosen[i]
        moves.append(_move(sku, c_lot, -c_take, c_expiry, serials if i == 0 else _NO_SERIALS))
    if short:
        moves.append(_move(sku, None, -short, None, _NO_SERIALS if chosen else serials))
    return moves


def allocate(tx, line, str day, bint refuse_negative):
    return _allocate(tx, _balances(tx), line, day, refuse_negative)


cpdef list take_stock(tx, list resolved, list priced_lines, str day, bint refuse_negative):
    cdef list moves = []
    cdef list line_moves
    cdef Balances bal = _balances(tx)
    cdef Py_ssize_t i
    cdef PricedLine priced_line
    cdef ResolvedLine line
    for i in range(min(len(resolved), len(priced_lines))):
        line = resolved[i]
        priced_line = priced_lines[i]
        line_moves = _allocate(tx, bal, line, day, refuse_negative)
        # Applied now, so a later line of the same SKU sees what this one took.
        apply_moves(tx, line_moves)
        moves.extend(line_moves)
        priced_line.category = line.category
        # The moves are `_move`'s: tuples, read by place (lot, delta, expiry).
        priced_line.allocations = [{"lot": (<tuple>m)[1], "expiry": (<tuple>m)[3], "qty": -(<tuple>m)[2]}
                                   for m in line_moves]
    return moves


# --- the lines of the event and of the answer ------------------------------------------------

def event_lines(list priced_lines):
    cdef list out = []
    cdef PricedLine line
    for line in priced_lines:
        out.append(line.event_doc())
    return out


cpdef list answer_lines(list priced_lines):
    cdef list out = []
    cdef PricedLine line
    for line in priced_lines:
        out.append(line.answer_doc())
    return out


# --- alerts ----------------------------------------------------------------------------------

cdef class OpenAlerts:
    """The `alerts` table in memory, with an undo log (the protocol of `Tx.state`), and how many
    are open per SKU, so a SKU with none costs no key at all."""

    cdef public dict alerts
    cdef dict per_sku
    cdef list _undo
    cdef public long long seq

    def __init__(self):
        self.alerts = {}
        self.per_sku = {}
        self._undo = []
        self.seq = 0

    @property
    def keys(self):
        return self.alerts.keys()

    @classmethod
    def load(cls, tx):
        cdef OpenAlerts state = cls()
        for key, alert in tx.items("alerts"):
            state._set(key, alert)
        return state

    cdef void _set(self, bytes key, alert):
        if key not in self.alerts:
            sku = key.split(b"\x00", 1)[0].decode()
            self.per_sku[sku] = <long long>self.per_sku.get(sku, 0) + 1
        self.alerts[key] = alert

    cdef void _discard(self, bytes key):
        cdef long long n
        if key not in self.alerts:
            return
        del self.alerts[key]
        sku = key.split(b"\x00", 1)[0].decode()
        n = <long long>self.per_sku[sku] - 1
        if n:
            self.per_sku[sku] = n
        else:
            del self.per_sku[sku]

    def mark(self):
        return len(self._undo)

    def rollback(self, Py_ssize_t mark):
        cdef list undo = self._undo
        while len(undo) > mark:
            key, old = undo.pop()
            if old is None:
                self._discard(key)
            else:
                self._set(key, old)

    def forget(self):
        self._undo.clear()

    cdef void put(self, tx, bytes key, dict alert):
        self._undo.append((key, self.alerts.get(key)))
        self._set(key, alert)
        tx.wrote = True
        tx.txn.put(key, _pack(alert), db=tx.db["alerts"])

    cdef void delete(self, tx, bytes key):
        self._undo.append((key, self.alerts.get(key)))
        self._discard(key)
        tx.wrote = True
        tx.txn.delete(key, db=tx.db["alerts"])


cdef inline OpenAlerts _open_alerts(tx):
    return state_of(tx, OpenAlerts)


cdef object _view(tx):
    """`_master.view(tx)`: in a write transaction the writer's, found as `state_of` finds it."""
    return state_of(tx, _MasterState).view if tx.write else _master.view(tx)


def open_alerts(tx):
    return _open_alerts(tx)


cdef Py_ssize_t _sync(tx, OpenAlerts state, dict want, have_keys, now_ms) except -1:
    cdef Py_ssize_t raised = 0
    for key in have_keys:
        if key not in want and key in state.alerts:
            state.delete(tx, key)
    for key, alert in want.items():
        old = state.alerts.get(key)
        if old is None:
            raised += 1
            tx.append_event(alert_raised(alert, tx.last_seq() + 1, now_ms))
        if old != alert:
            state.put(tx, key, alert)
    return raised


def sync_alerts(tx, dict want, have_keys, now_ms):
    return _sync(tx, _open_alerts(tx), want, have_keys, now_ms)


cdef dict _sku_alerts(dict items, Balances bal, str sku):
    cdef dict out = {}
    cdef SkuBalances sb = bal.skus.get(sku)
    cdef long long on_hand = 0 if sb is None else sb.total
    cdef long long unallocated = _qty(bal, sku, None)
    cdef long long reorder_point
    item = items.get(sku)
    if item is not None:
        reorder_point = item.reorder_point
        if reorder_point > 0 and on_hand <= reorder_point:
            suggested = reorder_point - on_hand + max(<long long>item.reorder_qty, 1)
            out[alert_key(sku, "low_stock", None)] = {"kind": "low_stock", "sku": sku, "lot": None, "on_hand": on_hand,
                                                       "reorder_point": item.reorder_point, "suggested_qty": suggested}
    if unallocated < 0:
        out[alert_key(sku, "unallocated", None)] = {"kind": "unallocated", "sku": sku, "lot": None, "qty": unallocated}
    return out


def sku_alerts(tx, str sku):
    return _sku_alerts(_view(tx).items, _balances(tx), sku)


cdef bint _lots_due(Balances bal, str sku, dict lots, dict recalls):
    """Whether a touched lot with stock has an expiry or a recall: only then can it want an alert."""
    cdef SkuBalances sb = bal.skus.get(sku)
    cdef LotRow row
    if sb is None:
        return False
    for lot in lots:
        row = sb.lots.get(lot)
        if row is not None and row.qty > 0 and (row.expiry is not None or recalls):
            return True
    return False


cpdef after_moves(tx, moves, str today, now_ms):
    view = _view(tx)
    cdef dict items = view.items
    cdef dict all_recalls = view.recalls
    cdef Balances bal = _balances(tx)
    cdef OpenAlerts state = _open_alerts(tx)
    cdef Py_ssize_t raised = 0
    cdef dict touched = {}
    cdef dict lots, want, recalls
    cdef list have
    cdef tuple m
    for move in moves:
        m = move_tuple(move)
        sku = m[0]
        lots = touched.get(sku)
        if lots is None:
            lots = touched[sku] = {}
        lots[m[1]] = None
    warn_days = view.policy["expiry_warn_days"]
    for sku, lots in touched.items():
        want = _sku_alerts(items, bal, sku)
        recalls = all_recalls.get(sku) or _NO_FACTS
        if _lots_due(bal, sku, lots, recalls):
            want.update(_ledger_c.lot_alerts(tx, sku, lots, today, warn_days, recalls))
        if not want and sku not in state.per_sku:
            continue  # nothing due and nothing open: no key to build, no row to touch
        have = [alert_key(sku, "low_stock", None), alert_key(sku, "unallocated", None)]
        for lot in lots:
            have += [alert_key(sku, "expiring", lot), alert_key(sku, "recalled", lot)]
        raised += _sync(tx, state, want, have, now_ms)
    return raised


# --- the business day ------------------------------------------------------------------------

cdef inline void _add(dict d, key, n):
    if n:
        d[key] = d.get(key, 0) + n


cdef inline dict _at(dict d, key):
    sub = d.get(key)
    if sub is None:
        sub = d[key] = {}
    return sub


cdef void _fold_sale(dict doc, dict totals, set touched):
    # `_day_figures._fold_sale` with the plain accumulator: the same figures, in the same key order.
    cdef dict by_rule = {}
    cdef list entry
    for line in doc.get("lines") or ():
        promos = line.get("promos")
        if not promos:
            continue
        for p in promos:
            entry = by_rule.get(p[0])
            if entry is None:
                entry = by_rule[p[0]] = [0, 0]
            entry[0] += line.get("qty", 0)
            entry[1] += p[2]
    points = doc.get("points") or {}
    _fold_sale_figures(totals, doc.get("source") or "", doc.get("gross_cents", 0), doc.get("discount_cents", 0),
                       doc.get("total_cents", 0), doc.get("payments") or (), points.get("earned", 0),
                       points.get("redeemed", 0), doc.get("moves") or ())
    ruleset = doc.get("ruleset") or 0
    cdef dict promo
    for rule_id, entry in by_rule.items():
        touched.add(rule_id)
        promo = _at(totals["promotions"], rule_id)
        if ruleset > promo.get("ruleset", 0):
            promo["ruleset"] = ruleset
        _add(promo, "baskets", 1)
        _add(promo, "units", entry[0])
        _add(promo, "discount_cents", entry[1])


cdef void _fold_sale_event(SaleEvent ev, dict totals, set touched):
    # The same as `_fold_sale` of the event's document, read from its fields. Each rule's units and
    # cents go straight into its figures, line by line, rather than summed per rule first: a sale's
    # lines hold at least one unit and no rule takes negative cents, so every figure, and the order
    # its keys first appear in, comes out the same.
    cdef list p, seen = []
    cdef PricedLine line
    cdef dict promotions = totals["promotions"]
    cdef dict promo
    ruleset = ev.ruleset or 0
    _fold_sale_figures(totals, ev.source or "", ev.gross_cents, ev.discount_cents,
                       ev.gross_cents - ev.discount_cents, ev.payments, ev.earned, ev.redeemed, ev.moves)
    for line in ev.lines:
        for p in line.promos:
            rule_id = p[0]
            promo = _at(promotions, rule_id)
            if rule_id not in seen:
                seen.append(rule_id)
                touched.add(rule_id)
                if ruleset > promo.get("ruleset", 0):
                    promo["ruleset"] = ruleset
                _add(promo, "baskets", 1)
            _add(promo, "units", line.qty)
            _add(promo, "discount_cents", p[2])


cdef void _fold_sale_figures(dict totals, source, gross, discount, net, payments, earned, redeemed, moves):
    # A sale's lane and stock figures (its rules' are folded by the caller, from what it reads).
    cdef dict lane = _at(totals["lanes"], source)
    cdef dict taken
    cdef long long units = 0
    _add(lane, "sales", 1)
    _add(lane, "gross_cents", gross)
    _add(lane, "discount_cents", discount)
    _add(lane, "net_cents", net)
    taken = _at(lane, "taken")
    for payment in payments:
        _add(taken, payment["method"], payment["cents"])
    _add(lane, "points_earned", earned)
    _add(lane, "points_redeemed", redeemed)
    for m in moves:
        units += m[2]
    _add(totals["stock"], "sold", -units)


def fold_day(doc, dict row, set touched):
    """Fold one appended document (a map, or a sale's `SaleEvent`) into the open day's totals `row`,
    in place (no undo log); the rules whose figures it changed go into `touched`."""
    cdef SaleEvent ev
    if type(doc) is SaleEvent:
        ev = <SaleEvent>doc
        if row["first_ms"] is None:
            row["first_ms"] = ev.ts_ms
        _fold_sale_event(ev, row, touched)
        row["folded"] = ev.seq
        return
    if row["first_ms"] is None and doc.get("ts_ms") is not None:
        row["first_ms"] = doc["ts_ms"]
    if doc.get("type") == "sale":
        _fold_sale(<dict>doc, row, touched)
    else:
        _fold(doc, row)
    row["folded"] = doc["seq"]


# --- the business day, a group at a time ------------------------------------------------------
# The reference's `DayFolder` folds each document into the open day's totals as it comes. This one
# keeps the figures of the sales committed into a group in C fields and adds them to the totals at
# once when anything reads or writes the totals (`merge`): a sale adds to a few integers instead of
# reading and writing some thirty map entries. Each key goes into its map in the order the
# document-by-document fold would first have put it there, so the totals come out the same, key
# order included; any other document is folded as it comes, after what was kept back.

# A lane's figures, in the order a sale's fold first tries each (`taken` is a map of its own).
cdef tuple _LANE_FIGURES = ("sales", "gross_cents", "discount_cents", "net_cents", "taken", "points_earned",
                            "points_redeemed")
cdef int _TAKEN = 4
# A rule's figures, likewise.
cdef tuple _RULE_FIGURES = ("ruleset", "baskets", "units", "discount_cents")


cdef class _Order:
    # The order in which a map's keys (by index) were first given a figure since the last merge.
    cdef int keys[8]
    cdef int n
    cdef int seen

    cdef inline void note(self, int key):
        if not self.seen & (1 << key):
            self.seen |= 1 << key
            self.keys[self.n] = key
            self.n += 1


cdef class _LaneFigures:
    cdef long long figures[7]      # by `_LANE_FIGURES` (the `taken` slot unused)
    cdef long long taken[4]        # by `_METHODS`
    cdef _Order order, taken_order

    def __cinit__(self):
        self.order, self.taken_order = _Order(), _Order()

    cdef inline void add(self, int key, long long n):
        if n:
            self.figures[key] += n
            self.order.note(key)


cdef class _RuleFigures:
    cdef long long figures[4]      # by `_RULE_FIGURES`: the newest rule set, then sums
    cdef long long last_sale       # the sale that last counted its basket
    cdef _Order order

    def __cinit__(self):
        self.order = _Order()


cdef class DayFolder:
    cdef dict lanes                # source -> _LaneFigures, in the order each first sold
    cdef dict rules                # rule id -> _RuleFigures, in the order each was first used
    cdef long long sold
    cdef bint sold_noted
    cdef long long sales           # sales kept back (and the count that tells them apart)

    def __cinit__(self):
        self.lanes, self.rules = {}, {}

    def fold(self, doc, dict row, set touched):
        """Fold `doc` into the totals `row`: a sale's figures are kept back until `merge`."""
        if type(doc) is not SaleEvent or not self._keep(<SaleEvent>doc):
            self.merge(row, touched)
            fold_day(doc, row, touched)
            return
        if row["first_ms"] is None:
            row["first_ms"] = (<SaleEvent>doc).ts_ms
        row["folded"] = (<SaleEvent>doc).seq

    cdef bint _keep(self, SaleEvent ev) except -1:
        """Keep the sale's figures back; False (nothing kept) when one is beyond a C integer."""
        cdef long long earned, redeemed, ruleset, cents, units = 0
        cdef Py_ssize_t method
        cdef int overflow = 0
        cdef PricedLine line
        cdef _LaneFigures lane
        cdef _RuleFigures rule
        for p in ev.payments:
            method_name = (<dict>p).get("method") if type(p) is dict else None
            if type(method_name) is not str or method_name not in _METHODS or type((<dict>p).get("cents")) is not int:
                return False
            PyLong_AsLongLongAndOverflow((<dict>p)["cents"], &overflow)
            if overflow:
                return False
        if type(ev.earned) is not int or type(ev.redeemed) is not int:
            return False
        if not (ev.ruleset is None or type(ev.ruleset) is int):
            return False
        earned = PyLong_AsLongLongAndOverflow(ev.earned, &overflow)
        redeemed = PyLong_AsLongLongAndOverflow(ev.redeemed, &overflow)
        ruleset = PyLong_AsLongLongAndOverflow(ev.ruleset or 0, &overflow)
        for m in ev.moves:
            units += PyLong_AsLongLongAndOverflow(m[2], &overflow)
        if overflow:
            return False
        self.sales += 1
        source = ev.source or ""
        lane = self.lanes.get(source)
        if lane is None:
            lane = self.lanes[source] = _LaneFigures()
        lane.add(0, 1)
        lane.add(1, ev.gross_cents)
        lane.add(2, ev.discount_cents)
        lane.add(3, ev.gross_cents - ev.discount_cents)
        lane.order.note(_TAKEN)
        for p in ev.payments:
            cents = (<dict>p)["cents"]
            if cents:
                method = _METHODS.index((<dict>p)["method"])
                lane.taken[method] += cents
                lane.taken_order.note(<int>method)
        lane.add(5, earned)
        lane.add(6, redeemed)
        for line in ev.lines:
            for p in line.promos:
                rule_id = p[0]
                rule = self.rules.get(rule_id)
                if rule is None:
                    rule = self.rules[rule_id] = _RuleFigures()
                if rule.last_sale != self.sales:
                    rule.last_sale = self.sales
                    if ruleset > 0:
                        if ruleset > rule.figures[0]:
                            rule.figures[0] = ruleset
                        rule.order.note(0)
                    rule.figures[1] += 1
                    rule.order.note(1)
                if line.qty:
                    rule.figures[2] += line.qty
                    rule.order.note(2)
                cents = p[2]
                if cents:
                    rule.figures[3] += cents
                    rule.order.note(3)
        if units:
            self.sold -= units
            self.sold_noted = True
        return True

    def merge(self, dict row, set touched):
        """Add what was kept back to the totals `row`, key by key in the order the document-by-document
        fold would have put each key in; the rules whose figures changed go into `touched`."""
        if not self.sales:
            return
        cdef _LaneFigures lane
        cdef _RuleFigures rule
        cdef dict into, taken, promotions = row["promotions"], lanes = row["lanes"]
        cdef int i, j, key
        for source, lane in self.lanes.items():
            into = _at(lanes, source)
            for i in range(lane.order.n):
                key = lane.order.keys[i]
                if key == _TAKEN:
                    taken = _at(into, "taken")
                    for j in range(lane.taken_order.n):
                        method = _METHODS[lane.taken_order.keys[j]]
                        taken[method] = taken.get(method, 0) + lane.taken[lane.taken_order.keys[j]]
                else:
                    name = _LANE_FIGURES[key]
                    into[name] = into.get(name, 0) + lane.figures[key]
        for rule_id, rule in self.rules.items():
            touched.add(rule_id)
            into = _at(promotions, rule_id)
            for i in range(rule.order.n):
                key = rule.order.keys[i]
                name = _RULE_FIGURES[key]
                if key == 0:  # the newest rule set that used it, not a sum
                    if rule.figures[0] > into.get(name, 0):
                        into[name] = rule.figures[0]
                else:
                    into[name] = into.get(name, 0) + rule.figures[key]
        if self.sold_noted:
            into = row["stock"]
            into["sold"] = into.get("sold", 0) + self.sold
        self.lanes, self.rules = {}, {}
        self.sold, self.sold_noted, self.sales = 0, False, 0


# --- the sale's event, typed -----------------------------------------------------------------
# `_salepath_py.sale_event` builds the document; here the event stays a record, written straight
# to the stored bytes (the document's entries in its order, each value as msgpack's packer writes
# it) and folded from its fields. Anything the writer does not take as it is goes the reference's
# way: the document is built and packed by msgpack.

cpdef sale_event(str doc_id, source, channel, store, ts_ms, weekday, minute, Priced priced, member, tier,
               list coupons, list payments, tuple points, list moves, lane):
    cdef SaleEvent ev = SaleEvent.__new__(SaleEvent)
    ev.id, ev.source, ev.channel, ev.store, ev.ts_ms = doc_id, source, channel, store, ts_ms
    ev.weekday, ev.minute, ev.ruleset, ev.member, ev.tier = weekday, minute, priced.ruleset, member, tier
    ev.coupons, ev.lines, ev.payments, ev.priced, ev.moves = coupons, priced.lines, payments, priced, moves
    ev.gross_cents, ev.discount_cents = priced.gross_cents, priced.discount_cents
    ev.earned, ev.redeemed, ev.redeemed_cents = points
    ev.lane = lane
    ev.seq = None
    return ev


cdef class SaleEvent:
    """A sale's event as a record (the compiled twin of `_salepath_py.sale_event`'s document)."""

    cdef public str id
    cdef public object source, channel, store, ts_ms, weekday, minute, ruleset, member, tier
    cdef public list coupons, lines, payments, moves
    cdef Priced priced  # whose trace the event holds: written from the engine's entries, no map each
    cdef public long long gross_cents, discount_cents
    cdef public object earned, redeemed, redeemed_cents, lane, seq

    @property
    def trace(self):
        return self.priced.trace

    def to_doc(self):
        """The event's document, as `_salepath_py.sale_event` builds it (and `seq`, once appended)."""
        cdef PricedLine line
        doc = {"type": "sale", "id": self.id, "source": self.source, "channel": self.channel, "store": self.store,
               "ts_ms": self.ts_ms, "local": {"weekday": self.weekday, "minute": self.minute},
               "ruleset": self.ruleset, "member": self.member, "tier": self.tier, "coupons": self.coupons,
               "lines": [line.event_doc() for line in self.lines], "gross_cents": self.gross_cents,
               "discount_cents": self.discount_cents, "total_cents": self.gross_cents - self.discount_cents,
               "payments": self.payments,
               "points": {"earned": self.earned, "redeemed": self.redeemed, "redeemed_cents": self.redeemed_cents},
               "trace": self.trace, "moves": self.moves}
        if self.lane is not None:
            doc["lane"] = self.lane
        if self.seq is not None:
            doc["seq"] = self.seq
        return doc

    def pack(self):
        """The stored bytes: `_pack(self.to_doc())`, byte for byte."""
        cdef int done
        _event_writer.size = 0
        try:
            done = self._write(&_event_writer)
        except (UnicodeError, OverflowError):
            done = 1
        if done:
            return _pack(self.to_doc())
        return PyBytes_FromStringAndSize(<const char*>_event_writer.buf, _event_writer.size)

    cdef int _write(self, Writer* w) except -1:
        cdef PricedLine line
        _pack_length(w, 19 + (self.lane is not None) + (self.seq is not None), 0x80, 15, 0, 0xde)
        _pack_key(w, b"type")
        _pack_key(w, b"sale")
        _pack_key(w, b"id")
        _pack_str(w, self.id)
        if (_entry(w, b"source", self.source) or _entry(w, b"channel", self.channel) or _entry(w, b"store", self.store)
                or _entry(w, b"ts_ms", self.ts_ms)):
            return 1
        _pack_key(w, b"local")
        _pack_length(w, 2, 0x80, 15, 0, 0xde)
        if _entry(w, b"weekday", self.weekday) or _entry(w, b"minute", self.minute):
            return 1
        if (_entry(w, b"ruleset", self.ruleset) or _entry(w, b"member", self.member) or _entry(w, b"tier", self.tier)
                or _entry(w, b"coupons", self.coupons)):
            return 1
        _pack_key(w, b"lines")
        _pack_length(w, len(self.lines), 0x90, 15, 0, 0xdc)
        for line in self.lines:
            if _write_line(w, line):
                return 1
        _cents(w, self.gross_cents, self.discount_cents, b"total_cents")
        if _entry(w, b"payments", self.payments):
            return 1
        _pack_key(w, b"points")
        _pack_length(w, 3, 0x80, 15, 0, 0xde)
        if (_entry(w, b"earned", self.earned) or _entry(w, b"redeemed", self.redeemed)
                or _entry(w, b"redeemed_cents", self.redeemed_cents)):
            return 1
        _pack_key(w, b"trace")
        if self.priced.write_trace(w) and _value(w, self.priced.trace, 0, False):
            return 1
        if _entry(w, b"moves", self.moves):
            return 1
        if self.lane is not None and _entry(w, b"lane", self.lane):
            return 1
        if self.seq is not None and _entry(w, b"seq", self.seq):
            return 1
        return 0


cdef Writer _event_writer  # reused, as the body digest's is: the bytes are copied out at once


cdef inline int _entry(Writer* w, const char* key, value) except -1:
    _pack_key(w, key)
    return _value(w, value, 0, False)


cdef int _cents(Writer* w, long long gross, long long discount, const char* net_key) except -1:
    # gross_cents, discount_cents, then what is left under `net_key`: a line's and a sale's totals.
    _pack_key(w, b"gross_cents")
    _pack_int(w, gross)
    _pack_key(w, b"discount_cents")
    _pack_int(w, discount)
    _pack_key(w, net_key)
    return _pack_int(w, gross - discount)


cdef int _write_line(Writer* w, PricedLine line) except -1:
    # `PricedLine.event_doc`, entry by entry.
    _pack_length(w, 11, 0x80, 15, 0, 0xde)
    _pack_key(w, b"sku")
    _pack_str(w, line.sku)
    _pack_key(w, b"qty")
    _pack_int(w, line.qty)
    _pack_key(w, b"unit_cents")
    _pack_int(w, line.unit_cents)
    _cents(w, line.gross_cents, line.discount_cents, b"net_cents")
    return (_entry(w, b"promos", line.promos) or _entry(w, b"lot", line.lot) or _entry(w, b"serial", line.serial)
            or _entry(w, b"category", line.category) or _entry(w, b"allocations", line.allocations))


# --- the request's shape ---------------------------------------------------------------------
# Only ever says yes for what `_request_checks.check_request` accepts; every no is answered by it.

cdef bint _text_ok(value, Py_ssize_t max_len, bint allow_gs):
    """`_limits.text_problem(value, max_len, allow_gs=...) is None`."""
    if not isinstance(value, str):
        return False
    cdef str text = <str>value
    cdef Py_ssize_t n = len(text)
    cdef Py_UCS4 ch
    if n == 0 or n > max_len:
        return False
    for ch in text:
        if ch < 0x20:
            if not (allow_gs and ch == 0x1d):
                return False
        elif 0x7f <= ch <= 0x9f or 0x202a <= ch <= 0x202e or 0x2066 <= ch <= 0x2069 or 0xd800 <= ch <= 0xdfff:
            return False
    return True


cdef inline bint _optional_text_ok(value, Py_ssize_t max_len):
    return value is None or _text_ok(value, max_len, False)


cdef inline bint _int_ok(value):
    return isinstance(value, int) and not isinstance(value, bool)


cdef bint _date_ok(value):
    if value is None:
        return True
    if not isinstance(value, str) or len(<str>value) != 10:
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


cdef bint _line_ok(line):
    if not isinstance(line, dict):
        return False
    cdef dict d = _map_of(line)
    if d.get("code") is not None or d.get("sku") is None:
        if not _text_ok(d.get("code"), MAX_CODE, True):
            return False
    elif not _text_ok(d.get("sku"), MAX_CODE, False):
        return False
    return (_int_ok(d.get("qty")) and _optional_text_ok(d.get("lot"), MAX_TEXT)
            and _optional_text_ok(d.get("serial"), MAX_TEXT) and _date_ok(d.get("expiry")))


cdef bint _basket_ok(dict body):
    lines = body.get("lines")
    if not isinstance(lines, list) or not lines or len(<list>lines) > MAX_LINES:
        return False
    for line in <list>lines:
        if not _line_ok(line):
            return False
    coupons = body.get("coupons")
    if coupons is not None:
        if not isinstance(coupons, list) or len(<list>coupons) > MAX_COUPONS:
            return False
        for coupon in <list>coupons:
            if not _text_ok(coupon, MAX_TEXT, False):
                return False
    if not _optional_text_ok(body.get("member"), MAX_TEXT):
        return False
    lane = body.get("lane")
    return not (lane != "") or _optional_text_ok(lane, MAX_TEXT)


cdef bint _payments_ok(dict body):
    cdef dict p
    payments = body.get("payments")
    if not isinstance(payments, list) or not payments:
        return False
    for payment in <list>payments:
        if not isinstance(payment, dict):
            return False
        p = _map_of(payment)
        if not (_text_ok(p.get("method"), MAX_TEXT, False) and _int_ok(p.get("cents"))):
            return False
    return True


def basket_well_formed(str kind, body):
    if not isinstance(body, dict) or not _text_ok(body.get("id"), MAX_ID, False):
        return False
    if not _basket_ok(body):
        return False
    return kind != "sale" or _payments_ok(body)


# --- request identity ------------------------------------------------------------------------
# The reference packs a sorted copy of the body and hashes that; here the same bytes are written
# straight from the body (keys sorted as they are packed), with no copy. Anything the writer does
# not take as it is (a key that is not text, an int beyond 64 bits, a subclass, text that is not
# UTF-8, nesting beyond any device's) goes the reference's way, so the digest, or the refusal's
# words, are the reference's.

cdef int _DEEP = 200


cdef int _value(Writer* w, obj, int depth, bint sort_keys) except -1:
    """Write `obj` as msgpack's packer would (with `sort_keys`: every map's keys in order, as
    `_pack(_salepath_py._sorted(obj))` would); 1 when only msgpack (or the reference) can."""
    cdef object t = type(obj)
    cdef int overflow = 0
    cdef long long v
    cdef double d
    cdef uint64_t bits
    cdef char* data
    cdef Py_ssize_t n
    if depth > _DEEP:
        return 1
    # The commonest first: text, integers, nothing, maps, arrays.
    if t is str:
        return _pack_str(w, <str>obj)
    if t is int:
        v = PyLong_AsLongLongAndOverflow(obj, &overflow)
        return 1 if overflow else _pack_int(w, v)
    if obj is None:
        return _pack_byte(w, 0xc0)
    if t is dict:
        return _map(w, <dict>obj, depth, sort_keys)
    if t is list:
        _pack_length(w, len(<list>obj), 0x90, 15, 0, 0xdc)
        for item in <list>obj:
            if _value(w, item, depth + 1, sort_keys):
                return 1
        return 0
    if t is tuple or t is Move:  # a move (a named tuple) is an array too, walked as a tuple
        _pack_length(w, len(<tuple>obj), 0x90, 15, 0, 0xdc)
        for item in <tuple>obj:
            if _value(w, item, depth + 1, sort_keys):
                return 1
        return 0
    if obj is True:
        return _pack_byte(w, 0xc3)
    if obj is False:
        return _pack_byte(w, 0xc2)
    if t is float:
        d = <double>obj
        memcpy(&bits, &d, 8)
        _reserve(w, 9)
        w.buf[w.size] = 0xcb
        _put_be(w.buf + w.size + 1, bits, 8)
        w.size += 9
        return 0
    if t is bytes:
        PyBytes_AsStringAndSize(obj, &data, &n)
        _pack_length(w, n, 0, -1, 0xc4, 0xc5)
        return _pack_raw(w, data, n)
    return 1


cdef int _map(Writer* w, dict d, int depth, bint sort_keys) except -1:
    cdef list keys
    if not sort_keys:
        _pack_length(w, len(d), 0x80, 15, 0, 0xde)
        for k, value in d.items():
            if _value(w, k, depth + 1, False) or _value(w, value, depth + 1, False):
                return 1
        return 0
    return _sorted_map(w, d, PyDict_Keys(d), depth)


cdef int _sorted_map(Writer* w, dict d, list keys, int depth) except -1:
    # `d`'s entries under `keys`, in key order.
    for k in keys:
        if type(k) is not str:
            return 1
    keys.sort()  # text keys: the reference's (type name, text) order is their own
    _pack_length(w, len(keys), 0x80, 15, 0, 0xde)
    for k in keys:
        if _pack_str(w, <str>k) or _value(w, d[k], depth + 1, True):
            return 1
    return 0


# One buffer, reused: the bytes are copied out before anything could let another thread in.
cdef Writer _body_writer


def body_hash(dict body):
    cdef int done
    _body_writer.size = 0
    try:
        done = _sorted_map(&_body_writer, body, [k for k in body if k != "t"], 0)
    except (UnicodeError, OverflowError):
        done = 1  # the reference's refusal, in its words
    if done:
        return _salepath_py.body_hash(body)
    return _sha256(PyBytes_FromStringAndSize(<const char*>_body_writer.buf, _body_writer.size)).digest()[:16]


# --- a sale's outline, compiled ----------------------------------------------------------------
# `_sales.price`, `sell` and `handle_sale` (the reference: parse, price, decide, persist) in one
# compiled pass over the steps above: the same steps in the same order, the basket kept in C locals
# instead of a record handed from step to step. Anything unusual (a payment the fast check does not
# take as it is, points redeemed) goes to the reference's own function, for its checks and words.

cdef object _S = None


cdef object _sales():
    # `_sales` imports this module (through `_select`), so it is found on first use.
    global _S
    if _S is None:
        from . import _sales
        _S = _sales
    return _S


cdef list _payments(dict body, total, bint implicit):
    """`_sales._payments` for a file's basket paid in money, and for a list of exact maps, each a
    payment method and exact integer cents, that add up to `total`; anything else is the
    reference's to take or refuse."""
    payments = body.get("payments")
    cdef list out = []
    if payments is None and implicit:
        method = body.get("payment") or "cash"
        if type(method) is str and method in _METHODS and method != "points":
            return [{"method": method, "cents": total}]
    elif type(payments) is list and payments:
        paid = 0
        for p in <list>payments:
            if type(p) is not dict:
                break
            method = (<dict>p).get("method")
            cents = (<dict>p).get("cents")
            if type(cents) is not int or cents < 0 or method not in _METHODS:
                break
            paid += cents
            out.append({"method": method, "cents": cents})
        else:
            if paid == total:
                return out
    return _sales()._payments(body, total, implicit=implicit)


cdef class _Sale:
    # What `_sell` leaves for the answer: the reference's `Basket` and `Sold`, as C fields.
    cdef Priced priced
    cdef list resolved
    cdef object member_id, member, engine, policy, weekday, minute, day
    cdef list warnings
    cdef object seq, earned, points_balance

    cdef object basket(self):
        return _sales().Basket(self.priced, self.resolved, self.member_id, self.member, self.engine,
                               self.warnings, self.policy, self.weekday, self.minute, self.day)


cdef _Sale _price(tx, request, ctx, dict body, bint as_happened):
    """`_sales.price`."""
    S = _sales()
    cdef _Sale sale = _Sale.__new__(_Sale)
    cdef list resolved = resolve_lines(tx, basket_lines(body), S.resolve_code)
    coupons = body.get("coupons") or []
    if not isinstance(coupons, list) or not all(isinstance(c, str) for c in coupons):
        raise bad_request("coupons must be a list of strings")
    member_id = body.get("member")
    member = None
    if member_id is not None:
        member_id, member = S._member(tx, body)
    settings = ctx.settings
    now_ms = ctx.now_ms
    weekday, minute, day = S.local_parts(now_ms, settings.timezone)
    view = _view(tx)
    policy = view.policy
    cdef list warnings = check_lots(tx, resolved, day, policy["expiry_warn_days"], request.kind != "quote",
                                    as_happened)
    if member_id is not None and member is None:
        warnings.append("UNKNOWN_MEMBER")
    engine = S.engine_for(tx, view.promotions)
    try:
        priced = engine.price_typed(
            resolved, member={"id": member_id, "tier": member.get("tier")} if member else None,
            coupons=tuple(coupons), store=settings.store_id, channel=request.channel, ts_ms=now_ms,
            weekday=weekday, minute=minute)
    except S.promo.PromoInputError as exc:
        raise bad_request(str(exc)) from None
    mark_lots(priced.lines, resolved)
    sale.priced, sale.resolved, sale.member_id, sale.member, sale.engine = priced, resolved, member_id, member, engine
    sale.warnings, sale.policy, sale.weekday, sale.minute, sale.day = warnings, policy, weekday, minute, day
    return sale


cdef _Sale _sell(tx, request, ctx, dict body, str doc_id, bint implicit_payment, bint as_happened):
    """`_sales.sell`."""
    cdef _Sale sale = _price(tx, request, ctx, body, as_happened)
    cdef Priced priced = sale.priced
    member = sale.member
    total = priced.gross_cents - priced.discount_cents
    cdef list payments = _payments(body, total, implicit_payment)
    points_cents = 0
    for p in payments:
        if p["method"] == "points":
            points_cents += p["cents"]
    redeemed = _sales()._redeemed(sale.basket(), points_cents) if points_cents else 0
    refuse = sale.policy["negative_stock"] == "refuse" and not as_happened
    # Each line in turn, so a later line of the same SKU sees what the earlier ones took.
    cdef list moves = take_stock(tx, sale.resolved, priced.lines, sale.day, refuse)
    tier = member.get("tier") if member else None
    earned = sale.engine.points_earned(total - points_cents, tier, member is not None)
    points_balance = None
    if member is not None:
        points_balance = _master.add_points(tx, sale.member_id, earned - redeemed, ctx.now_ms)
    lane = str(body["lane"]) if body.get("lane") else None
    now_ms = ctx.now_ms
    event = sale_event(doc_id, request.source, request.channel, ctx.settings.store_id, now_ms, sale.weekday,
                       sale.minute, priced, sale.member_id if member else None, tier,
                       list(body.get("coupons") or []), payments, (earned, redeemed, points_cents), moves, lane)
    if lane is not None:
        tx.delete("baskets", lane)
    sale.seq = tx.append_event(event)
    after_moves(tx, moves, sale.day, now_ms)
    sale.earned, sale.points_balance = earned, points_balance
    return sale


def record_sale(tx, request, ctx, dict body, str doc_id):
    """`_sales.record_sale`: no `Sold` or `Basket` is made, a file's basket has no answer to give."""
    cdef _Sale sale = _sell(tx, request, ctx, body, doc_id, True, True)
    return sale.seq, sale.warnings


def handle_sale(tx, request, ctx):
    cdef dict body = request.body
    cdef _Sale sale = _sell(tx, request, ctx, body, f"{request.source}:{body['id']}", False, False)
    cdef Priced priced = sale.priced
    cdef dict answer = {"seq": sale.seq, "ruleset": priced.ruleset, "lines": answer_lines(priced.lines),
                        "gross_cents": priced.gross_cents, "discount_cents": priced.discount_cents,
                        "total_cents": priced.gross_cents - priced.discount_cents, "warnings": sale.warnings}
    if sale.member is not None:
        answer["points_earned"], answer["points_balance"] = sale.earned, sale.points_balance
    return answer
