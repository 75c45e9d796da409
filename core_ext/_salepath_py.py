"""The sale path's work per line, pure Python: the readable reference of `_salepath_c.pyx`.

`_sales.py` keeps a sale's outline (parse, price, decide, persist); what it does for every line of
every basket is here: resolve the line against the catalog, check the lot it names, take its units
from stock (the named lot, else FEFO) and apply the moves, build the event's and the answer's lines,
and keep the alerts of what moved current. The request's body hash (its idempotency record) is here
too. The compiled twin does the same over the ledger's C fields; both give the same answers and
write the same rows, byte for byte.

The open alerts are kept in memory by the writer (`OpenAlerts`, the `Tx.state` protocol), so
a sale that changes no alert reads and writes no alert row.
"""
from __future__ import annotations

import hashlib

import msgpack

from . import _errors as E, _master
from ._day_figures import fold, promotion_rules
from ._errors import Refused, bad_request
from ._localtime import days_between
from ._records import Move, SaleLine, alert_raised
from ._select import ledger
from ._store import alert_key
from ._types import is_int

FLAVOUR = "python"


# --- resolving and checking the lines --------------------------------------------------------

def basket_lines(body: dict) -> list:
    """The basket's `lines`, each checked for what the sale path relies on."""
    lines = body.get("lines")
    if not isinstance(lines, list) or not lines:
        raise bad_request("lines must be a non-empty list")
    for i, line in enumerate(lines):
        if not isinstance(line, dict):
            raise bad_request(f"lines[{i}] must be a map")
        code = line.get("code", line.get("sku"))
        if not isinstance(code, str) or not code:
            raise bad_request(f"lines[{i}].code must be a non-empty string")
        qty = line.get("qty")
        if not is_int(qty) or not 0 < qty <= 1_000_000:
            raise bad_request(f"lines[{i}].qty must be a positive integer, got {qty!r}")
        for opt in ("lot", "serial"):
            if line.get(opt) is not None and (not isinstance(line[opt], str) or not line[opt]):
                raise bad_request(f"lines[{i}].{opt} must be a non-empty string")
    return lines


def resolve_lines(tx, lines: list, resolve_code) -> list:
    """`SaleLine`s of the basket's lines; `resolve_code(tx, code)` gives (item, facts) for a code."""
    out = []
    for i, line in enumerate(lines):
        code = line.get("code", line.get("sku"))
        item, facts = resolve_code(tx, code)
        if item is None or not item.active:
            raise Refused(E.UNKNOWN_ITEM, f"lines[{i}]: {code!r} matches nothing sellable in the catalog")
        qty = line["qty"]
        serial = line.get("serial") or facts.get("serial")
        lot = (line.get("lot") or facts.get("lot")) if item.lot_tracked else None
        if serial and abs(qty) != 1:
            raise bad_request(f"lines[{i}].qty must be 1 with a serial (a serial names one unit), got {qty}")
        if serial and item.lot_tracked:
            holder = ledger.serial_holders(tx, item.sku).get(serial)  # a serial names its unit, and so its lot
            if holder is not None and lot is not None and holder != lot:
                raise bad_request(f"lines[{i}].lot: serial {serial} of {item.sku} is in lot {holder}, not {lot}")
            lot = lot if holder is None else holder
        out.append(SaleLine(i, code, item, qty, lot, serial, line.get("expiry") or facts.get("expiry")))
    return out


def check_lots(tx, resolved: list, day: str, warn_days: int, record: bool, as_happened: bool) -> list:
    """Refuse recalled and expired lots a line names; returns warnings for lots expiring soon."""
    warnings = []
    view = _master.view(tx)
    for line in resolved:
        sku, lot = line.sku, line.lot
        # With no lot named, only a recall of every lot matches: then whatever lot the unit came
        # from is recalled, so it must not go out (not even as unallocated stock).
        recall = view.recall_of(sku, lot)
        if recall is not None and as_happened:  # sold at the counter already: reported, not refused
            warnings.append({"kind": E.RECALLED_LOT_SOLD, "sku": sku, "lot": lot, "recall_id": recall["recall_id"]})
        elif recall is not None:
            doc = {"type": "refusal", "request": "sale", "sku": sku, "lot": lot, "recall_id": recall["recall_id"],
                   "reason": recall.get("reason", "")} if record else None
            raise Refused(E.RECALLED_LOT, f"{sku} lot {lot or '(all lots)'} is recalled ({recall['recall_id']}): "
                                          "it must not be sold", record=doc)
        if lot is None:
            continue
        expiry = ledger.lot_expiry(tx, sku, lot) or line.expiry
        line.expiry = expiry
        if expiry is not None and expiry < day and as_happened:  # as above
            warnings.append({"kind": E.EXPIRED_LOT_SOLD, "sku": sku, "lot": lot, "expiry": expiry})
        elif expiry is not None and expiry < day:
            doc = {"type": "refusal", "request": "sale", "sku": sku, "lot": lot, "expiry": expiry} if record else None
            raise Refused(E.EXPIRED_LOT, f"{sku} lot {lot} expired on {expiry}: it must not be sold", record=doc)
        if expiry is not None and days_between(day, expiry) <= warn_days and "LOT_EXPIRES_SOON" not in warnings:
            warnings.append("LOT_EXPIRES_SOON")
    return warnings


def engine_lines(resolved: list) -> list:
    """The lines as the promotion engine prices them."""
    return [{"sku": r.sku, "qty": r.qty, "unit_cents": r.item.unit_cents, "category": r.item.category}
            for r in resolved]


def mark_lots(priced_lines: list, resolved: list) -> None:
    """Give each priced line (`PricedLine`) the lot and serial it was resolved to."""
    for line, r in zip(priced_lines, resolved):
        line.lot = r.lot
        line.serial = r.serial


# --- taking the units from stock -------------------------------------------------------------

def allocate(tx, line: SaleLine, day: str, refuse_negative: bool) -> list:
    """Moves taking `line` out of stock: the named lot, else FEFO; the rest per the negative-stock policy."""
    sku, qty, item = line.sku, line.qty, line.item
    serials = (line.serial,) if line.serial else ()
    if serials and item.serial_tracked and serials[0] not in ledger.serial_holders(tx, sku):
        # The ledger does not hold this unit (sold already, or never received with its serial):
        # no lot can give it, so it is all shortfall, for the policy to decide.
        if refuse_negative:
            raise Refused(E.INSUFFICIENT_STOCK, f"{sku}: serial {serials[0]} is not in stock")
        return [Move(sku, None, -qty, None, serials)]
    if not item.lot_tracked:
        have = ledger.lot_qty(tx, sku, None)
        if refuse_negative and have < qty:
            raise Refused(E.INSUFFICIENT_STOCK, f"{sku}: {max(have, 0)} on hand, {qty} asked")
        return [Move(sku, None, -qty, None, serials)]
    if line.lot is not None:
        take = min(max(ledger.lot_qty(tx, sku, line.lot), 0), qty)
        chosen = [(line.lot, ledger.lot_expiry(tx, sku, line.lot), take)] if take else []
        short = qty - take
    else:
        chosen, short = ledger.fefo_allocate(ledger.lots_of(tx, sku, _master.recalls_of(tx, sku)), qty, day)
    if short and refuse_negative:
        raise Refused(E.INSUFFICIENT_STOCK, f"{sku}: sellable stock covers {qty - short} of {qty}")
    moves = [Move(sku, lot, -take, expiry, serials if i == 0 else ()) for i, (lot, expiry, take) in enumerate(chosen)]
    if short:
        # Policy `allow`: the goods left the store, so the ledger is what is wrong; the uncovered
        # units wait on the SKU's unallocated balance until a receipt or count reconciles them.
        moves.append(Move(sku, None, -short, None, () if chosen else serials))
    return moves


def take_stock(tx, resolved: list, priced_lines: list, day: str, refuse_negative: bool) -> list:
    """Allocate and apply every line in turn; each priced line gets its category and allocations.
    Returns the moves, in line order."""
    moves = []
    for line, priced_line in zip(resolved, priced_lines):
        line_moves = allocate(tx, line, day, refuse_negative)
        ledger.apply_moves(tx, line_moves)  # now, so a later line of the same SKU sees what this one took
        moves.extend(line_moves)
        priced_line.category = line.item.category
        priced_line.allocations = [{"lot": m.lot, "expiry": m.expiry, "qty": -m.delta} for m in line_moves]
    return moves


# --- the lines of the event and of the answer ------------------------------------------------

def event_lines(priced_lines: list) -> list:
    """The sale event's lines (`PricedLine.event_doc`)."""
    return [line.event_doc() for line in priced_lines]


def sale_event(doc_id: str, source: str, channel: str, store: str, ts_ms: int, weekday: int, minute: int, priced,
               member: str | None, tier, coupons: list, payments: list, points: tuple, moves: list,
               lane: str | None) -> dict:
    """The sale's event document (`docs/ledger.md`); `points` is (earned, redeemed, redeemed_cents).
    The compiled twin gives a typed record that packs to the same bytes and folds into the same
    day figures."""
    doc = {"type": "sale", "id": doc_id, "source": source, "channel": channel, "store": store, "ts_ms": ts_ms,
           "local": {"weekday": weekday, "minute": minute}, "ruleset": priced.ruleset, "member": member,
           "tier": tier, "coupons": coupons, "lines": event_lines(priced.lines),
           "gross_cents": priced.gross_cents, "discount_cents": priced.discount_cents,
           "total_cents": priced.total_cents, "payments": payments,
           "points": {"earned": points[0], "redeemed": points[1], "redeemed_cents": points[2]},
           "trace": priced.trace, "moves": moves}
    if lane is not None:
        doc["lane"] = lane
    return doc


def answer_lines(priced_lines: list) -> list:
    """The ECR/1 answer's lines (`PricedLine.answer_doc`; a sale's carry their allocations)."""
    return [line.answer_doc() for line in priced_lines]


# --- alerts ----------------------------------------------------------------------------------

class OpenAlerts:
    """The `alerts` table, in memory, with an undo log (the protocol of `Tx.state`).

    Every change to the table goes through `put` and `delete`, so the memory holds each open alert
    as stored (raising an alert appends an event, so another writer's change makes this state stale
    and reloaded), and keeping an alert current reads nothing.
    """

    def __init__(self):
        self.alerts: dict = {}  # key -> the alert as stored
        self._undo: list = []
        self.seq = 0

    @property
    def keys(self):
        return self.alerts.keys()

    @classmethod
    def load(cls, tx) -> "OpenAlerts":
        state = cls()
        state.alerts.update(tx.items("alerts"))
        return state

    def mark(self) -> int:
        return len(self._undo)

    def rollback(self, mark: int) -> None:
        while len(self._undo) > mark:
            key, old = self._undo.pop()
            if old is None:
                self.alerts.pop(key, None)
            else:
                self.alerts[key] = old

    def forget(self) -> None:
        self._undo.clear()

    def put(self, tx, key: bytes, alert: dict) -> None:
        self._undo.append((key, self.alerts.get(key)))
        self.alerts[key] = alert
        tx.put("alerts", key, alert)

    def delete(self, tx, key: bytes) -> None:
        self._undo.append((key, self.alerts.pop(key)))
        tx.delete("alerts", key)


def open_alerts(tx) -> OpenAlerts:
    return tx.state(OpenAlerts)


def sync_alerts(tx, want: dict, have_keys, now_ms: int) -> int:
    """Make the stored alerts among `have_keys` exactly `want`; returns how many were newly raised."""
    state = open_alerts(tx)
    raised = 0
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


def sku_alerts(tx, sku: str) -> dict:
    """The alerts of the SKU as a whole: low stock, units sold beyond the ledger's stock."""
    out = {}
    item = _master.item(tx, sku)
    on_hand = ledger.on_hand(tx, sku)
    if item is not None and item.reorder_point > 0 and on_hand <= item.reorder_point:
        suggested = item.reorder_point - on_hand + max(item.reorder_qty, 1)
        out[alert_key(sku, "low_stock", None)] = {"kind": "low_stock", "sku": sku, "lot": None, "on_hand": on_hand,
                                                  "reorder_point": item.reorder_point, "suggested_qty": suggested}
    unallocated = ledger.lot_qty(tx, sku, None)
    if unallocated < 0:
        out[alert_key(sku, "unallocated", None)] = {"kind": "unallocated", "sku": sku, "lot": None, "qty": unallocated}
    return out


def after_moves(tx, moves, today: str, now_ms: int) -> int:
    """Bring up to date what `moves` can have changed: their SKUs' totals and the lots they touched.

    Lots not moved keep their alerts; dates and master data moving are `_alerts.refresh`'s business.
    """
    warn_days = _master.policy(tx)["expiry_warn_days"]
    raised = 0
    touched = {}  # sku -> {lot: None}: the lots in the order the moves name them
    for move in moves:
        touched.setdefault(move.sku, {})[move.lot] = None
    for sku, lots in touched.items():
        want = sku_alerts(tx, sku)
        want.update(ledger.lot_alerts(tx, sku, lots, today, warn_days, _master.recalls_of(tx, sku)))
        have = [alert_key(sku, "low_stock", None), alert_key(sku, "unallocated", None)]
        for lot in lots:
            have += [alert_key(sku, "expiring", lot), alert_key(sku, "recalled", lot)]
        # One sync per SKU: the keys are distinct per lot and kind, so the alerts and the `alert`
        # events come out as they would lot by lot (SKU-wide first, then each lot in turn).
        raised += sync_alerts(tx, want, have, now_ms)
    return raised


# --- the business day ------------------------------------------------------------------------

def fold_day(doc: dict, row: dict, touched: set) -> None:
    """Fold one document into the open day's totals `row`, in place, with no undo log (the writer,
    for what has committed into its group; a reader, for the log after the stored row); the rules
    whose figures it changed go into `touched`."""
    if row["first_ms"] is None and doc.get("ts_ms") is not None:
        row["first_ms"] = doc["ts_ms"]
    fold(doc, row)
    touched.update(promotion_rules(doc))
    row["folded"] = doc["seq"]


class DayFolder:
    """Folds each document into the open day's totals as it comes (`fold_day`), for the writer's
    documents committed into its group. The compiled twin keeps a group's sales back in C fields and
    adds them to the totals at `merge`, which whoever reads or writes the totals calls first."""

    __slots__ = ()

    def fold(self, doc, row: dict, touched: set) -> None:
        fold_day(doc, row, touched)

    def merge(self, row: dict, touched: set) -> None:
        pass  # nothing kept back


# --- the request's shape ---------------------------------------------------------------------

def basket_well_formed(kind: str, body) -> bool:
    """Whether `check_request` accepts this `quote` or `sale` (here: it is asked). The compiled twin
    answers from a typed walk of the body; a False sends the request to `check_request` for its
    words either way."""
    from ._request_checks import check_request
    try:
        check_request(kind, body)
    except Refused:
        return False
    return True


# --- request identity ------------------------------------------------------------------------

def _sorted(obj):
    # Key order must not make a repeat look different; MessagePack keeps maps and arrays apart and
    # every item length-delimited, so no two different bodies share an encoding.
    if isinstance(obj, dict):
        return {k: _sorted(obj[k]) for k in sorted(obj, key=lambda k: (type(k).__name__, str(k)))}
    if isinstance(obj, (list, tuple)):
        return [_sorted(v) for v in obj]
    return obj


def body_hash(body: dict) -> bytes:
    """A digest of the request's content, the transport's `t` left out; refuses what cannot be stored."""
    try:
        packed = msgpack.packb(_sorted({k: v for k, v in body.items() if k != "t"}), use_bin_type=True)
    except (OverflowError, TypeError, ValueError) as exc:
        raise bad_request(f"the request holds a value that cannot be stored ({exc}); numbers must fit in 64 bits") from None
    return hashlib.sha256(packed).digest()[:16]


# --- a sale's outline ------------------------------------------------------------------------
# This flavour runs `_sales.handle_sale` and `_sales.record_sale`, the reference outline, as they
# are; the compiled twin brings them compiled.
handle_sale = record_sale = None
