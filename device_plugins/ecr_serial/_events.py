"""What the ECR/1 link layer reports, and what it is asked to send."""
from __future__ import annotations

from dataclasses import dataclass

from .._need_data import NEED_DATA  # noqa: F401  (re-exported with the events)




@dataclass(frozen=True, slots=True)
class Message:
    """One frame's MessagePack map: a request received, or a response to send. `escaped`: a string
    of a received map held bytes that are not UTF-8 (see `decode_body`)."""

    body: dict
    escaped: bool = False


@dataclass(frozen=True, slots=True)
class Ack:
    """The peer acknowledged the frame we sent."""


@dataclass(frozen=True, slots=True)
class Nak:
    """The peer refused the frame we sent; `resent` says it went out again."""

    resent: bool


@dataclass(frozen=True, slots=True)
class AckTimeout:
    """No ACK or NAK came in time for the frame we sent; `resent` says it went out again."""

    resent: bool


@dataclass(frozen=True, slots=True)
class LinkError:
    """The frame carrying `body` was given up after `attempts` sends without an ACK."""

    body: dict
    attempts: int
    reason: str  # "nak" | "timeout" | "closed"


@dataclass(frozen=True, slots=True)
class Dropped:
    """The frame carrying `body` was dropped without being sent: it waited longer than all its sends
    would have taken ("stale"), too many waited ("full"), or the stream ended ("closed")."""

    body: dict
    reason: str


@dataclass(frozen=True, slots=True)
class GarbageSkipped:
    """`count` bytes outside any frame were skipped (line noise, a terminal booting)."""

    count: int


@dataclass(frozen=True, slots=True)
class FrameRejected:
    """A frame was discarded; `reason` is "length", "crc", "etx", "body", "timeout" or "eof".
    All but the last two were answered with NAK."""

    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The byte stream ended (`receive_data(b"")`)."""
