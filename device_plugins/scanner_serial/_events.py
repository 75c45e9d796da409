"""What the serial scanner's line protocol reports."""
from __future__ import annotations

from dataclasses import dataclass

from .._need_data import NEED_DATA  # noqa: F401  (re-exported with the events)

from core_ext import Scan




@dataclass(frozen=True, slots=True)
class Scanned:
    """A scan read with certainty (an HIBC primary and its linked secondary count as one)."""

    scan: Scan


@dataclass(frozen=True, slots=True)
class Rejected:
    """A line that cannot be read: `code` is short and stable, `reason` is for a person."""

    raw: bytes
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The byte stream ended; a line without its terminator was dropped (`partial` bytes)."""

    partial: int
