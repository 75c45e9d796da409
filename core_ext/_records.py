"""The typed records that cross the core: decoded once where the bytes come in, named fields after.

On disk an event keeps its MessagePack shape (a move is the array `[sku, lot, delta, expiry,
serials]`): `Move` is a named tuple, so it packs as that array and reads back with `Move.of`.
Every ECR/1-shaped answer (`{"t": "res", ...}`) is built here and nowhere else.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


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
        return cls(row["sku"], row.get("name") or "", row["category"], row["unit_cents"],
                   bool(row.get("lot_tracked")), bool(row.get("serial_tracked")), row.get("active", True),
                   row.get("reorder_point") or 0, row.get("reorder_qty") or 0)


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
