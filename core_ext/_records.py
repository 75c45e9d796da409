"""The typed records that cross the core: decoded once where the bytes come in, named fields after.

On disk an event keeps its MessagePack shape (a move is the array `[sku, lot, delta, expiry,
serials]`): `Move` is a named tuple, so it packs as that array and reads back with `Move.of`.
Every ECR/1-shaped answer (`{"t": "res", ...}`) is built here and nowhere else.
"""
from __future__ import annotations

from dataclasses import dataclass
from sys import intern
from typing import NamedTuple

from ._limits import MAX_STOCK_UNITS


class Move(NamedTuple):
    """One change to stock: `delta` units of `sku` in `lot` (None: not lot-tracked, or the SKU's
    unallocated balance), with the lot's expiry when known and the serials of the units moved."""

    sku: str
    lot: str | None
    delta: int
    expiry: str | None = None
    serials: tuple = ()

    @classmethod
    def of(cls, doc) -> "Move":
        """A move as an event document stores it (a 5-array)."""
        return cls(doc[0], doc[1], doc[2], doc[3], tuple(doc[4] or ()))

    def to_doc(self) -> list:
        return [self.sku, self.lot, self.delta, self.expiry, list(self.serials)]


def moves_of(event: dict) -> list[Move]:
    """The moves of a stored event document."""
    return [Move.of(m) for m in event.get("moves") or ()]


def shared_str(text):
    """One object for every copy of a SKU or category string the writer keeps (`sys.intern`): a map
    looked up with an item's own SKU then matches it by identity, without reading another copy of the
    key, a cache miss over 10,000 SKUs (`docs/performance.md`). A str subclass is kept as it is."""
    return intern(text) if type(text) is str else text


def within(value, low: int, high: int):
    """An integer read from the store, taken at today's bounds: a store an older release wrote, with
    no bounds, may hold one beyond them (beyond a C integer even) which validation now refuses."""
    return min(max(value, low), high) if type(value) is int else value


@dataclass(frozen=True, slots=True)
class Item:
    """A catalog item in force (master data), decoded once per catalog version."""

    sku: str
    name: str
    category: str
    unit_cents: int
    lot_tracked: bool
    serial_tracked: bool
    active: bool
    reorder_point: int
    reorder_qty: int

    @classmethod
    def of(cls, row: dict) -> "Item":
        return cls(shared_str(row["sku"]), row.get("name") or "", shared_str(row["category"]), row["unit_cents"],
                   bool(row.get("lot_tracked")), bool(row.get("serial_tracked")), row.get("active", True),
                   within(row.get("reorder_point") or 0, 0, MAX_STOCK_UNITS),
                   within(row.get("reorder_qty") or 0, 0, MAX_STOCK_UNITS))


@dataclass(slots=True)
class SaleLine:
    """A basket line resolved against the catalog: what it sells, from which lot, which unit."""

    index: int
    code: str
    item: Item
    qty: int
    lot: str | None
    serial: str | None
    expiry: str | None

    @property
    def sku(self) -> str:
        return self.item.sku


@dataclass(slots=True)
class PricedLine:
    """A basket line as the promotion engine priced it; the sale then gives it its lot and serial
    (as resolved), its category and its allocations (as taken from stock).

    `promos` holds `[rule id, rule version, cents]` for each rule that changed the line, in the
    order they were applied: the event's own shape, so the event's line shares it."""

    sku: str
    qty: int
    unit_cents: int
    gross_cents: int
    discount_cents: int
    promos: list
    lot: str | None = None
    serial: str | None = None
    category: str | None = None
    allocations: list | None = None  # [{"lot", "expiry", "qty"}], once taken from stock

    @property
    def net_cents(self) -> int:
        return self.gross_cents - self.discount_cents

    @classmethod
    def of_event(cls, line: dict) -> "PricedLine":
        """A line of a stored sale event, as it was priced and taken."""
        return cls(line["sku"], line["qty"], line["unit_cents"], line["gross_cents"], line["discount_cents"],
                   line["promos"], line.get("lot"), line.get("serial"), line.get("category"),
                   line.get("allocations"))

    def to_doc(self) -> dict:
        """The engine's answer line (PROMO/1): each rule as `{"id", "version", "cents"}`."""
        return {"sku": self.sku, "qty": self.qty, "unit_cents": self.unit_cents, "gross_cents": self.gross_cents,
                "discount_cents": self.discount_cents, "net_cents": self.net_cents,
                "promos": [{"id": p[0], "version": p[1], "cents": p[2]} for p in self.promos]}

    def event_doc(self) -> dict:
        """The sale event's line."""
        return {"sku": self.sku, "qty": self.qty, "unit_cents": self.unit_cents, "gross_cents": self.gross_cents,
                "discount_cents": self.discount_cents, "net_cents": self.net_cents, "promos": self.promos,
                "lot": self.lot, "serial": self.serial, "category": self.category, "allocations": self.allocations}

    def answer_doc(self) -> dict:
        """The ECR/1 answer's line: each rule as `{"id", "cents"}`; a sale's carries its allocations."""
        doc = {"sku": self.sku, "qty": self.qty, "unit_cents": self.unit_cents, "gross_cents": self.gross_cents,
               "discount_cents": self.discount_cents, "net_cents": self.net_cents,
               "promos": [{"id": p[0], "cents": p[2]} for p in self.promos], "lot": self.lot, "serial": self.serial}
        if self.allocations is not None:
            doc["allocations"] = self.allocations
        return doc


@dataclass(slots=True)
class Priced:
    """A basket as the promotion engine priced it: the rule set, the lines and the totals, and the
    trace of the rules that were candidates but did not apply or were clipped."""

    ruleset: int
    lines: list  # PricedLine
    gross_cents: int
    discount_cents: int
    trace: list

    @property
    def total_cents(self) -> int:
        return self.gross_cents - self.discount_cents

    def to_doc(self) -> dict:
        """The engine's answer (PROMO/1)."""
        return {"ruleset": self.ruleset, "lines": [line.to_doc() for line in self.lines],
                "gross_cents": self.gross_cents, "discount_cents": self.discount_cents,
                "total_cents": self.total_cents, "trace": self.trace}


# --- answers ---------------------------------------------------------------------------------

def alert_raised(alert: dict, seq: int, now_ms: int) -> dict:
    """The `alert` event of an alert newly raised, to be appended as event `seq`: an alert may be
    raised, cleared and raised again, so the seq keeps each document's id unique."""
    return {"type": "alert", "id": f"alert:{alert['sku']}:{alert['kind']}:{alert['lot'] or ''}:{seq}",
            "ts_ms": now_ms, "moves": [], **alert}


def refusal_logged(record: dict | None, *, request_id: str, source: str, code: str, message: str, seq: int,
                   now_ms: int, **fields) -> dict:
    """The document of a refusal kept in the log, to be appended as event `seq`: what `record` says
    was refused (a `refusal`, unless it names another type), then the request's identity and the
    refusal's code and words, then `fields`. Its id is its own: the refused request's id may still
    be committed later, and ids are unique upstream."""
    doc = {"type": "refusal", **(record or {})}
    doc.update(request_id=request_id, id=f"{request_id}#refused-{seq}", source=source, err=code, msg=message,
               ts_ms=now_ms, moves=[], **fields)
    return doc


def answer_ok(request_id, fields: dict | None = None) -> dict:
    """The ECR/1 answer of an accepted request: `ok: true` and the handler's fields."""
    answer = {"t": "res", "re": request_id, "ok": True}
    if fields:
        answer.update(fields)
    return answer


def answer_refused(request_id, code: str, message: str, details=None) -> dict:
    """The ECR/1 answer of a refused request: a stable `err` code and words for a person."""
    answer = {"t": "res", "re": request_id, "ok": False, "err": code, "msg": message}
    if details is not None:
        answer["errors"] = details
    return answer
