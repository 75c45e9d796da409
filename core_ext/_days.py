"""The store's business day (CLOSE/1): running totals kept by the single writer, drawer counts,
the close, and reports.

Every event appended to the log is taken into the open day's running totals (`observe`, called by
`Tx.append_event`), in memory with an undo log like the ledger's balances, so a rolled-back request
takes its figures with it. A document is only queued when appended; the queue is folded when the
group commits (`flush`, once, with no undo log: compiled for sales) or earlier when something reads
the totals mid-group (a drawer count, a close: `settle`, logged). The totals are written to the
`days` table at most every `WRITE_EVERY_EVENTS` documents, and at once when the row itself changes (a
day named, closed or turned), always in the same transaction as events they count: the stored row
says up to which event it counts (`folded`), and whoever reads it folds the few documents after that
from the log (`load` after a restart or `kill -9`, and the readers: the UP/1 report, `gateway report
day`, metrics), so every reader sees the day so far, exact, without the writer. Writing the row and
its rules with every group cost a small group (a tick of the serial lanes) about a tenth of its time:
packing, keying and putting the row and the rules its sales used.

`days` rows: `"open"` -> the open day's running totals and where it started, but its promotion
rules' figures; `"open\x00<digest of a rule id>"` -> `{"rule", "figures"}`, one rule's figures of the
open day (a commit rewrites only the rules its documents used); `"YYYY-MM-DD"` -> the seq of that
day's `day_close` document.
"""
from __future__ import annotations

import datetime
import hashlib
import logging
from functools import lru_cache

import lmdb

from ._day_figures import (
    FIGURES, REFUND_METHODS, empty_totals, finish, fold, promotion_rules, split_refund,
)
from ._errors import BAD_REQUEST, Refused, bad_request
from . import _select
from ._localtime import _zone

log = logging.getLogger("gateway.core")

ALREADY_CLOSED = "ALREADY_CLOSED"
OPEN_KEY = b"open"
# Each promotion rule's figures of the open day under a key of its own: the open row stays small,
# and a write rewrites only the rules used since the last (a day may use thousands of rules). The key
# holds a digest of the rule's id (ids have no length limit, LMDB keys do); the value, the id.
RULE_PREFIX = b"open\x00"


# The open row is written when this many documents were folded since it was last written (or when
# the row changes): a reader folds at most about this many from the log (990 sales: 10 ms compiled,
# 15 ms pure; metrics read it in a worker thread).
WRITE_EVERY_EVENTS = 1000


def _rule_key(rule: str) -> bytes:
    return RULE_PREFIX + hashlib.sha256(rule.encode()).digest()[:16]


_MISSING = object()
# An undo-log entry meaning "the last queued document was never appended" (see DayTotals.observe).
_QUEUED = (None, None, None)


# --- the calendar ----------------------------------------------------------------------------

def parse_day_start(text: str) -> tuple[int, int]:
    """(hour, minute) of a `"HH:MM"` day start; raises ValueError."""
    if not isinstance(text, str) or len(text) != 5 or text[2] != ":" or not (text[:2] + text[3:]).isdigit():
        raise ValueError(f"{text!r} is not a time of day HH:MM")
    hour, minute = int(text[:2]), int(text[3:])
    if hour > 23 or minute > 59:
        raise ValueError(f"{text!r} is not a time of day HH:MM (00:00 to 23:59)")
    return hour, minute


@lru_cache(maxsize=4096)
def day_start_ms(day: str, tz: str, starts_at: str) -> int:
    """When business day `day` starts: `starts_at` local time on that date in `tz`.

    A start that a daylight-saving change skips (02:30 on the spring-forward night) is read with the
    offset before the change, so it falls just after the gap; one that occurs twice (autumn) is the
    first of the two. Either way days stay contiguous: each ends where the next starts.
    """
    hour, minute = parse_day_start(starts_at)
    local = datetime.datetime.combine(datetime.date.fromisoformat(day), datetime.time(hour, minute),
                                      tzinfo=_zone(tz))
    return int(local.timestamp() * 1000)


def next_day(day: str) -> str:
    return (datetime.date.fromisoformat(day) + datetime.timedelta(days=1)).isoformat()


def day_of(ts_ms: int, tz: str, starts_at: str) -> str:
    """The business day in which instant `ts_ms` falls."""
    local = datetime.datetime.fromtimestamp(ts_ms / 1000, datetime.timezone.utc).astimezone(_zone(tz))
    day = local.date().isoformat()
    while day_start_ms(day, tz, starts_at) > ts_ms:
        day = (datetime.date.fromisoformat(day) - datetime.timedelta(days=1)).isoformat()
    while day_start_ms(next_day(day), tz, starts_at) <= ts_ms:
        day = next_day(day)
    return day


def _calendar(settings) -> tuple[str, str]:
    return settings.timezone, getattr(settings, "day_starts_at", "00:00") or "00:00"


# --- the writer's running totals -------------------------------------------------------------

def _new_row(day, from_seq: int, opened_ms, last_close=None) -> dict:
    return {"day": day, "from_seq": from_seq, "opened_ms": opened_ms, "first_ms": None, "folded": from_seq - 1,
            "last_close": last_close, **empty_totals()}


class Undo:
    """The fold's accumulator for the writer: every change is logged so a rollback can undo it."""

    __slots__ = ("log",)

    def __init__(self, undo_log: list):
        self.log = undo_log

    def at(self, d: dict, key) -> dict:
        sub = d.get(key)
        if sub is None:
            sub = d[key] = {}
            self.log.append((d, key, _MISSING))
        return sub

    def add(self, d: dict, key, n: int) -> None:
        if n:
            old = d.get(key, _MISSING)
            self.log.append((d, key, old))
            d[key] = n if old is _MISSING else old + n

    def put(self, d: dict, key, value) -> None:
        self.log.append((d, key, d.get(key, _MISSING)))
        d[key] = value


class DayTotals:
    """The open day's running totals, in memory (a `Tx.state`): loaded from the `days` table,
    changed by every appended event, written back every `WRITE_EVERY_EVENTS` documents or when it changes."""

    def __init__(self, row: dict, written: dict | None = None):
        # Replaced whole when a day closes, and the queue when it is folded: through the undo log.
        self.holder = {"row": row, "queued": []}
        self._undo: list = []
        self.acc = Undo(self._undo)
        self.dirty = False
        # Undo-log entries below this are folded without a log (see `_fold_queue`): a rollback
        # to before them means the group's transaction itself is gone.
        self._folded_below = 0
        self.seq = 0  # the last event these totals include, as `Tx` keeps it for every state
        # The row whose rules the table holds (None: none of them yet), and the rules changed since;
        # the day it was written with and the last event it counted then.
        self._written = written
        self._touched: set = set()
        self._written_day = row["day"]
        self._written_folded = row["folded"]
        # Folds what has committed into the group; the compiled one keeps the sales' figures back
        # until `merge`, which comes before anything reads or writes the totals.
        self._folder = _select.salepath.DayFolder()

    @property
    def row(self) -> dict:
        """The totals with every appended document in them."""
        if self.holder["queued"]:
            self.settle()
        else:
            self._folder.merge(self.holder["row"], self._touched)
        return self.holder["row"]

    @classmethod
    def load(cls, tx) -> "DayTotals":
        row, inline = _stored_open_row(tx)
        if row is None:
            # A new store, or one from before days were kept: the first day starts with the next event.
            return cls(_new_row(None, tx.last_seq() + 1, None))
        stored_folded = row["folded"]
        touched = _fold_from_log(tx, row)
        # The table holds the rules as of the stored row (unless they were kept inside it, as before
        # they had keys of their own: then all are written again); those the log's documents after
        # it changed are written with the row, when it is next written.
        state = cls(row, None if inline else row)
        state._touched = touched
        state._written_folded = stored_folded
        state.dirty = row["folded"] != stored_folded or inline
        return state

    # The `Tx.state` protocol.
    def mark(self) -> int:
        return len(self._undo)

    def rollback(self, mark: int) -> None:
        if mark < self._folded_below:
            # The group's transaction rolled back after documents were folded into the totals for
            # it: what was folded cannot be undone, so these totals are stale and the next write
            # transaction loads them again from the table.
            self.seq = -1
            return
        undo = self._undo
        while len(undo) > mark:
            entry = undo.pop()
            if entry is _QUEUED:
                self.holder["queued"].pop()
                continue
            d, key, old = entry
            if old is _MISSING:
                d.pop(key, None)
            else:
                d[key] = old

    def forget(self) -> None:
        self._undo.clear()
        self._folded_below = 0

    def committed_into_group(self) -> None:
        """A request's own transaction has committed into the group's (the `Tx.state` protocol):
        what it queued is folded now, so each document is folded while it is fresh and freed at
        once rather than a group's worth kept for the commit."""
        self._fold_queue(len(self._undo))

    def flush(self, tx) -> None:
        """Fold what is still queued and, when due, write the totals into the transaction about to
        commit (the top-level one); nothing can roll back between here and the commit but the commit
        itself."""
        self._fold_queue(max(len(self._undo), 1))  # above the group's own mark (0)
        row = self.holder["row"]
        self._folder.merge(row, self._touched)
        if self.dirty and self._write_due(row):
            self._write(tx, row)
            self.dirty = False

    def _write_due(self, row: dict) -> bool:
        """Whether the open row is to be written now: it is another row than the table's (a day
        closed, a store's first), its day was named, or enough documents were folded since."""
        return (self._written is not row or row["day"] != self._written_day
                or row["folded"] - self._written_folded >= WRITE_EVERY_EVENTS)

    def _fold_queue(self, folded_below: int) -> None:
        """Fold what is queued, without an undo log: only a rollback to below `folded_below` (the
        group's own) can take these documents back out, and that reloads the totals."""
        queued = self.holder["queued"]
        if queued:
            self._folded_below = folded_below
            fold, row, touched = self._folder.fold, self.holder["row"], self._touched
            for doc in queued:
                fold(doc, row, touched)
            self.holder["queued"] = []

    def _write(self, tx, row: dict) -> None:
        """The open row without its rules, and the rules changed since they were last written (all
        of them, the old day's gone, when the day was closed meanwhile)."""
        tx.put("days", OPEN_KEY, {k: v for k, v in row.items() if k != "promotions"})
        promotions = row["promotions"]
        if self._written is not row:
            for key, _figures in list(tx.items("days", prefix=RULE_PREFIX)):
                tx.delete("days", key)
            changed = promotions
        else:
            changed = self._touched
        for rule in changed:
            figures = promotions.get(rule)
            if figures is not None:  # a rule whose first use was rolled back was never written
                tx.put("days", _rule_key(rule), {"rule": rule, "figures": figures})
        self._written = row
        self._touched = set()
        self._written_day = row["day"]
        self._written_folded = row["folded"]

    # Folding.
    def observe(self, tx, doc) -> None:
        """Queue `doc` (a document, or a record such as the compiled `SaleEvent`) to be folded."""
        queued = self.holder["queued"]
        last = _seq(queued[-1]) if queued else self.holder["row"]["folded"]
        seq = _seq(doc)
        if seq != last + 1:
            row = self.row
            for missed in tx.events(row["folded"] + 1, seq - 1):
                self._fold(row, missed)
        queued.append(doc)
        self._undo.append(_QUEUED)
        self.dirty = True

    def settle(self) -> None:
        """Fold what is queued now, logged, so that a rollback takes it back out."""
        queued = self.holder["queued"]
        self.acc.put(self.holder, "queued", [])
        row = self.holder["row"]
        self._folder.merge(row, self._touched)  # what committed before these, unlogged as it was folded
        for doc in queued:
            self._fold(row, doc)

    def _fold(self, row: dict, doc) -> None:
        if type(doc) is not dict:
            doc = doc.to_doc()  # a record's document, for the reference's fold and its undo log
        acc = self.acc
        if row["first_ms"] is None and doc.get("ts_ms") is not None:
            acc.put(row, "first_ms", doc["ts_ms"])
        fold(doc, row, acc)
        acc.put(row, "folded", doc["seq"])
        self._touched.update(promotion_rules(doc))
        self.dirty = True


def _fold_from_log(tx, row: dict) -> set:
    """Fold into the stored open `row` the documents the log holds after it (`folded`), as the
    writer folded them; the rules whose figures they changed."""
    touched: set = set()
    fold_day = _select.salepath.fold_day
    for doc in tx.events(row["folded"] + 1, tx.last_seq()):
        fold_day(doc, row, touched)
    return touched


def _seq(doc) -> int:
    return doc["seq"] if type(doc) is dict else doc.seq


def observe(tx, doc) -> None:
    """Fold a document just appended into the open day (`Tx.append_event` calls this)."""
    tx.state(DayTotals).observe(tx, doc)


# --- turning the day -------------------------------------------------------------------------

def _name_day(state: DayTotals, tz: str, starts_at: str, now_ms: int) -> None:
    """Give the first open day its name: the day of its first document, else of now."""
    row = state.row
    if row["day"] is None:
        day = day_of(row["first_ms"] if row["first_ms"] is not None else now_ms, tz, starts_at)
        state.acc.put(row, "day", day)
        state.acc.put(row, "opened_ms", day_start_ms(day, tz, starts_at))
        # Not written on its own: a refused request must leave the store byte for byte as it was.
        # The name is written with the first document or close, and found again the same way.


def _close(tx, state: DayTotals, closed_ms: int, now_ms: int) -> int:
    """Append the open day's `day_close` and open the next day; returns the close's seq."""
    row = state.row
    day = row["day"]
    seq = tx.last_seq() + 1
    doc = {"type": "day_close", "id": f"close:{day}", "ts_ms": now_ms, "day": day, "from_seq": row["from_seq"],
           "to_seq": seq, "opened_ms": row["opened_ms"], "closed_ms": closed_ms, **finish(row), "moves": []}
    tx.append_event(doc)  # folded into the day it closes: it adds no figure, but ends the range
    tx.put("days", day, seq)
    nxt = _new_row(next_day(day), seq + 1, closed_ms, {"day": day, "seq": seq})
    state.acc.put(state.holder, "row", nxt)
    state.dirty = True
    return seq


def _roll(tx, state: DayTotals, now_ms: int, tz: str, starts_at: str) -> list[str]:
    """Close every day that has ended by `now_ms`, in order, each once."""
    _name_day(state, tz, starts_at, now_ms)
    closed = []
    while True:
        day = state.row["day"]
        end = day_start_ms(next_day(day), tz, starts_at)
        if end > now_ms:
            return closed
        _close(tx, state, end, now_ms)
        closed.append(day)


def roll_due(tx, ctx) -> None:
    """Before a group of requests: close the days that have ended, so that every document of the
    group falls into the day of its ledger time. A failure here is logged and the group goes on (the
    store keeps selling; the close is tried again with the next group)."""
    tz, starts_at = _calendar(ctx.settings)
    state = tx.state(DayTotals)
    row = state.row
    if row["day"] is not None and day_start_ms(next_day(row["day"]), tz, starts_at) > ctx.now_ms:
        return
    child = tx.child()
    try:
        _roll(child, state, ctx.now_ms, tz, starts_at)
        child.commit()
    except lmdb.Error:
        child.abort()
        raise
    except Exception:
        child.abort()
        log.exception("closing the business day failed; retried with the next group")


# --- the handlers ----------------------------------------------------------------------------

def handle_day_close(tx, request, ctx) -> dict:
    """`{}` (the timer): close the days that have ended. `{"day": D}` (the ERP): close the current
    day D now; its later documents fall into the next day."""
    tz, starts_at = _calendar(ctx.settings)
    state = tx.state(DayTotals)
    closed = _roll(tx, state, ctx.now_ms, tz, starts_at)
    day = request.body.get("day")
    answer = {"closed": closed}
    if day is not None:
        current = state.row["day"]
        if not isinstance(day, str) or len(day) != 10:
            raise bad_request("day must be a date YYYY-MM-DD")
        close_seq = tx.get("days", day)
        if close_seq is not None:
            raise Refused(ALREADY_CLOSED, f"business day {day} is closed already (event {close_seq})")
        if day != current:
            raise Refused(BAD_REQUEST, f"only the current business day ({current}) can be closed early, not {day}")
        answer["seq"] = _close(tx, state, ctx.now_ms, ctx.now_ms)
        answer["closed"] = closed + [day]
        answer["day"] = day
    answer["open_day"] = state.row["day"]
    answer["open_until_ms"] = day_start_ms(next_day(state.row["day"]), tz, starts_at)
    return answer


def handle_drawer_count(tx, request, ctx) -> dict:
    """ECR/1 `drawer_count`: what a lane counted, answered with what the ledger expects so far."""
    tz, starts_at = _calendar(ctx.settings)
    state = tx.state(DayTotals)
    _roll(tx, state, ctx.now_ms, tz, starts_at)
    body = request.body
    counted = {method: cents for method, cents in body["counted"].items()}
    seq = tx.append_event({"type": "drawer_count", "id": f"{request.source}:{body['id']}",
                           "source": request.source, "ts_ms": ctx.now_ms, "counted": counted, "moves": []})
    lane = state.row["lanes"].get(request.source) or {}
    taken, refunded = lane.get("taken") or {}, lane.get("refunded") or {}
    expected = {method: taken.get(method, 0) - refunded.get(method, 0) for method in counted}
    return {"seq": seq, "day": state.row["day"], "expected": expected}


def refunds_of_return(tx, sale_key: str, sale: dict, cents: int, named: str | None) -> dict:
    """The money methods that pay back a return of `cents` on sale `sale_key` (CLOSE/1), and what
    each has given back through it so far, kept in the sale's `returns` row."""
    row = tx.get("returns", sale_key) or {}
    given = row.get("by_method") or {}
    paid: dict = {}
    for payment in sale.get("payments") or ():
        paid[payment["method"]] = paid.get(payment["method"], 0) + payment["cents"]
    parts = split_refund(paid, given, cents, named)
    if parts:
        for method, part in parts.items():
            given[method] = given.get(method, 0) + part
        row["by_method"] = given
        tx.put("returns", sale_key, row)
    return parts


# --- reading ---------------------------------------------------------------------------------

def report(tx, day: str | None = None) -> dict | None:
    """The close of a closed `day`, or the open day's figures so far (an X report, `"open": true`);
    None when `day` is neither. Reads only: safe in any read transaction."""
    if "days" not in tx.db:
        return None
    row, _inline = _stored_open_row(tx)
    if day is None:
        day = row["day"] if row else None
        if day is None:
            return None
    seq = tx.get("days", day)
    if seq is not None:
        doc = tx.event(seq)
        return None if doc is None else {**doc, "open": False}
    if row is None or row["day"] != day:
        return None
    _fold_from_log(tx, row)  # what the stored row does not count yet
    return {"type": "day_close", "id": None, "day": day, "from_seq": row["from_seq"], "to_seq": row["folded"],
            "opened_ms": row["opened_ms"], "closed_ms": None, **finish(row), "open": True}


def open_totals(tx) -> dict | None:
    """The open day's running totals (for metrics), or None."""
    if "days" not in tx.db:
        return None
    row, _inline = _stored_open_row(tx)
    if row is not None:
        _fold_from_log(tx, row)  # what the stored row does not count yet
    return row


def _stored_open_row(tx) -> tuple[dict | None, bool]:
    """The open row with its rules' figures put back in, and whether the row held them itself
    (written before they had keys of their own)."""
    row = tx.get("days", OPEN_KEY)
    if row is None:
        return None, False
    if "promotions" in row:
        return row, True
    row["promotions"] = {stored["rule"]: stored["figures"] for _key, stored in tx.items("days", prefix=RULE_PREFIX)}
    return row, False


__all__ = ["ALREADY_CLOSED", "FIGURES", "REFUND_METHODS", "DayTotals", "day_of", "day_start_ms", "handle_day_close",
           "handle_drawer_count", "next_day", "observe", "open_totals", "parse_day_start", "refunds_of_return",
           "report", "roll_due"]
