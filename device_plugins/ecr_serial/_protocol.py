"""ECR/1 link layer without I/O: frames in and out, ACK/NAK, retransmission, timeouts.

Feed it bytes with `receive_data(data, now)` (`b""` = end of stream), take events with
`next_event()` until `NEED_DATA`, write whatever `data_to_send()` returns (ACK/NAK bytes, frames,
resends). `send(Message(body), now)` frames a message; only one frame is in flight at a time, the rest
wait their turn, but not forever: a frame whose sends could all have happened while it waited
(`(1 + max_retries) * ack_timeout`) is dropped unsent (`Dropped`, "stale"), and at most `max_queued`
wait (beyond that the oldest is dropped, "full"), so a peer that stops ACKing cannot pile frames up.
Time only moves when the caller says so: call `tick(now)` at `next_deadline()`.
Garbage never raises: it is counted, NAKed where the spec says so, and skipped. While a partial frame
waits for its bytes, a complete good frame that starts at an STX inside it is taken at once (the
partial one was noise); candidate STXs are found and checked once each, so a 16 KiB partial frame
of garbage costs linear time, not a rescan per byte.
"""
from __future__ import annotations

import binascii
import heapq
import re
from collections import deque

import msgpack

from ._events import (
    NEED_DATA, Ack, AckTimeout, ConnectionClosed, Dropped, FrameRejected, GarbageSkipped, LinkError,
    Message, Nak,
)

STX = 0x02
ETX = 0x03
ACK = 0x06
NAK = 0x15
MAX_LEN = 16384
ACK_TIMEOUT_S = 1.0
MAX_RETRIES = 3
FRAME_TIMEOUT_S = 2.0
# Frames waiting their turn to be sent. Far more than a terminal that takes its answers ever leaves
# waiting; the bound only matters for one that stopped ACKing and keeps sending requests.
MAX_QUEUED = 1024


class EcrProtocolError(ValueError):
    """A message this side was asked to send cannot be framed."""


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF)."""
    return binascii.crc_hqx(data, 0xFFFF)


def encode_frame(body: dict) -> bytes:
    """STX, LEN, BODY, CRC, ETX for one MessagePack map."""
    if not isinstance(body, dict):
        raise EcrProtocolError("an ECR/1 message is a map")
    try:
        packed = msgpack.packb(body, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise EcrProtocolError(f"the message cannot be packed as MessagePack: {exc}") from None
    if len(packed) > MAX_LEN:
        raise EcrProtocolError(f"the message packs to {len(packed)} bytes, at most {MAX_LEN}")
    head = len(packed).to_bytes(2, "big")
    return bytes([STX]) + head + packed + crc16(head + packed).to_bytes(2, "big") + bytes([ETX])


def decode_body(body: bytes) -> dict | None:
    """The MessagePack map in `body` with string keys, or None when it is anything else.

    A string that is not valid UTF-8 is still a string of a well-formed map (the frame is ACKed and
    the request answered): its bad bytes come through as lone surrogates U+DC80..U+DCFF, which valid
    UTF-8 never decodes to; `invalid_utf8(body)` names the first one.
    """
    return decode_request(body)[0]


def decode_request(body: bytes) -> tuple[dict | None, bool]:
    """`decode_body`, and whether some string of the map held bytes that are not UTF-8: decoded
    strictly first, so a request whose text is all good (nearly every one) needs no walk of its
    strings to find out."""
    try:
        return _map_of(body, "strict"), False
    except UnicodeDecodeError:
        pass
    except Exception:  # msgpack raises many types (ExtraData, FormatError, StackError, ...)
        return None, False
    try:
        return _map_of(body, "surrogateescape"), True
    except Exception:
        return None, False


def _map_of(body: bytes, unicode_errors: str) -> dict | None:
    value = msgpack.unpackb(body, raw=False, strict_map_key=True, unicode_errors=unicode_errors)
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        return None
    return value


def invalid_utf8(value) -> str | None:
    """Where the decoded `value` held bytes that are not UTF-8, for a person; None if nowhere.

    One walk; the path to a string is a linked (parent, key, index?) chain, spelled out only for the
    string that is bad, so a good request (nearly every one) costs no path text."""
    stack = [(value, None)]
    while stack:
        item, node = stack.pop()
        if isinstance(item, str):
            problem = _escaped_byte(item)
            if problem:
                return f"{_path(node) or 'a string'} is not valid UTF-8 ({problem})"
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                problem = _escaped_byte(key) if isinstance(key, str) else None
                if problem:
                    return f"a key of {_path(node) or 'the request'} is not valid UTF-8 ({problem})"
                stack.append((child, (node, key, False)))
        elif isinstance(item, list):
            stack.extend((child, (node, i, True)) for i, child in reversed(list(enumerate(item))))
    return None


def _path(node) -> str:
    """`lines[2].lot` of a (parent, key, is an index) chain."""
    parts = []
    while node is not None:
        node, key, index = node
        parts.append(f"[{key}]" if index else (f".{_name(key)}" if node is not None else _name(key)))
    return "".join(reversed(parts))


_ESCAPED = re.compile("[\udc80-\udcff]")


def _escaped_byte(text: str) -> str | None:
    found = None if text.isascii() else _ESCAPED.search(text)
    if found is None:
        return None
    return f"the byte 0x{ord(found.group()) - 0xDC00:02X} at character {found.start()}"


def _name(key) -> str:
    text = str(key)
    return text if text.isprintable() and len(text) <= 32 else ascii(text[:32])


class EcrConnection:
    """One end of an ECR/1 link (the gateway uses it as the host; it is symmetric)."""

    def __init__(self, *, ack_timeout: float = ACK_TIMEOUT_S, max_retries: int = MAX_RETRIES,
                 frame_timeout: float = FRAME_TIMEOUT_S, max_queued: int = MAX_QUEUED):
        self.ack_timeout = ack_timeout
        self.max_retries = max_retries
        self.frame_timeout = frame_timeout
        self.max_queued = max_queued
        # A queued frame is stale once all its sends could have happened while it waited.
        self.stale_after = (1 + max_retries) * ack_timeout
        self._buf = bytearray()
        # Bytes at the head of _buf that belong to a bad frame already NAKed: a frame starting in
        # them and failing too is the same fault, answered by that one NAK (one resend per fault).
        self._quiet = 0
        self._frame_started: float | None = None  # when the STX at _buf[0] was seen
        # STXs inside the partial frame at _buf[0]: the next index to look at, and a heap of
        # (index its frame would end at, index) for those whose LEN is plausible.
        self._scan = 1
        self._inner: list[tuple[int, int]] = []
        self._events: deque = deque()
        self._out = bytearray()
        self._queue: deque[tuple[bytes, dict, float]] = deque()
        self._inflight: tuple[bytes, dict] | None = None
        self._sends = 0
        self._ack_deadline: float | None = None
        self._garbage = 0
        self._closed = False

    # Receiving.
    def receive_data(self, data: bytes, now: float) -> None:
        if self._closed:
            return
        self._expire_partial(now)
        if not data:
            self._closed = True
            if self._frame_started is not None:
                self._events.append(FrameRejected("eof"))
            self._buf.clear()
            self._frame_started = None
            self._flush_garbage()
            if self._inflight is not None:
                frame, body = self._inflight
                self._events.append(LinkError(body, self._sends, "closed"))
                self._inflight = None
            while self._queue:
                self._events.append(Dropped(self._queue.popleft()[1], "closed"))
            self._events.append(ConnectionClosed())
            return
        self._buf += data
        self._parse(now)

    def next_event(self):
        if self._events:
            return self._events.popleft()
        return NEED_DATA

    # Sending.
    def send(self, event: Message, now: float) -> bytes:
        """Frame `event` (queued behind a frame awaiting its ACK); returns all bytes to write now."""
        if not isinstance(event, Message):
            raise EcrProtocolError(f"only a Message can be sent, not {type(event).__name__}")
        if self._closed:
            raise EcrProtocolError("the link is closed")
        frame = encode_frame(event.body)
        self._drop_stale(now)
        if len(self._queue) >= self.max_queued:
            self._events.append(Dropped(self._queue.popleft()[1], "full"))
        self._queue.append((frame, event.body, now))
        self._start_next(now)
        return self.data_to_send()

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def awaiting_ack(self) -> bool:
        return self._inflight is not None

    # Time.
    def next_deadline(self) -> float | None:
        deadlines = [d for d in (self._ack_deadline,
                                 None if self._frame_started is None
                                 else self._frame_started + self.frame_timeout) if d is not None]
        return min(deadlines) if deadlines else None

    def tick(self, now: float) -> None:
        if self._closed:
            return
        if self._expire_partial(now):
            self._parse(now)
        if self._ack_deadline is not None and now >= self._ack_deadline:
            self._retry(now, "timeout")

    # Internals.
    def _expire_partial(self, now: float) -> bool:
        if self._frame_started is None or now < self._frame_started + self.frame_timeout:
            return False
        # Drop only the STX: a real frame may start within the bytes that followed it.
        self._events.append(FrameRejected("timeout"))
        self._consume(1)
        self._frame_started = None
        self._reset_inner()
        return True

    def _parse(self, now: float) -> None:
        buf = self._buf
        while buf:
            if self._frame_started is None:
                start = self._hunt(now)
                if start is None:
                    self._consume(len(buf))
                    break
                self._consume(start)
                self._flush_garbage()
                self._frame_started = now
                self._reset_inner()
            if len(buf) < 3:
                break
            length = int.from_bytes(buf[1:3], "big")
            if not 1 <= length <= MAX_LEN:
                self._reject("length", 1)
                continue
            end = 3 + length + 3
            if len(buf) < end:
                inner = self._inner_frame()
                if inner is None:
                    break
                # The partial frame was noise: the good frame inside it is taken (spec, link layer).
                self._garbage += inner
                self._consume(inner)
                self._flush_garbage()
                self._frame_started = now
                self._reset_inner()
                continue
            head_body = bytes(buf[1:3 + length])
            if buf[end - 1] != ETX:
                self._reject("etx", self._bad_frame_end(end), end)
            elif crc16(head_body) != int.from_bytes(buf[end - 3:end - 1], "big"):
                self._reject("crc", self._bad_frame_end(end), end)
            else:
                body, escaped = decode_request(head_body[2:])
                if body is None:
                    self._reject("body", end)
                else:
                    self._consume(end)
                    self._frame_started = None
                    self._reset_inner()
                    self._out.append(ACK)
                    self._events.append(Message(body, escaped))
        self._flush_garbage()

    def _bad_frame_end(self, end: int) -> int:
        """How much of a bad frame at _buf[0] to discard: up to the next STX inside it, where a real
        frame may begin (stray bytes before a frame must not take the frame down with them)."""
        inner = self._buf.find(STX, 1, end)
        return end if inner < 0 else inner

    def _consume(self, n: int) -> None:
        del self._buf[:n]
        self._quiet = max(0, self._quiet - n)

    def _reset_inner(self) -> None:
        self._scan = 1
        self._inner.clear()

    def _inner_frame(self) -> int | None:
        """Where a complete frame with a good ETX and CRC starts inside the partial one at _buf[0].

        Each STX is looked at once (when its LEN has arrived) and its frame checked once (when its
        last byte has), so bytes arriving one by one never make the scan start over.
        """
        buf, inner = self._buf, self._inner
        size = len(buf)
        pos = self._scan
        while (at := buf.find(STX, pos, size - 2)) >= 0:
            length = int.from_bytes(buf[at + 1:at + 3], "big")
            if 1 <= length <= MAX_LEN:
                heapq.heappush(inner, (at + 6 + length, at))
            pos = at + 1
        self._scan = max(pos, size - 2)
        while inner and inner[0][0] <= size:
            end, at = heapq.heappop(inner)
            if buf[end - 1] == ETX and crc16(bytes(buf[at + 1:end - 3])) == int.from_bytes(
                    buf[end - 3:end - 1], "big"):
                return at
        return None

    def _hunt(self, now: float) -> int | None:
        """Index of the next STX; ACK/NAK bytes on the way answer our frame in flight."""
        for i, byte in enumerate(self._buf):
            if byte == STX:
                return i
            if byte == ACK and self._inflight is not None:
                self._flush_garbage()
                self._inflight = None
                self._ack_deadline = None
                self._events.append(Ack())
                self._start_next(now)
            elif byte == NAK and self._inflight is not None:
                self._flush_garbage()
                self._retry(now, "nak")
            else:
                self._garbage += 1
        return None

    def _reject(self, reason: str, drop: int, frame_end: int = 0) -> None:
        self._events.append(FrameRejected(reason))
        if self._quiet <= 0:
            self._out.append(NAK)
        if reason == "length":
            self._garbage += drop
        self._consume(drop)
        if frame_end > drop:
            # The rest of this bad frame is still in _buf (a real frame may start in it).
            self._quiet = max(self._quiet, frame_end - drop)
        self._frame_started = None
        self._reset_inner()

    def _retry(self, now: float, reason: str) -> None:
        frame, body = self._inflight
        resend = self._sends <= self.max_retries
        self._events.append(Nak(resend) if reason == "nak" else AckTimeout(resend))
        if resend:
            self._sends += 1
            self._out += frame
            self._ack_deadline = now + self.ack_timeout
            return
        self._events.append(LinkError(body, self._sends, reason))
        self._inflight = None
        self._ack_deadline = None
        self._start_next(now)

    def _start_next(self, now: float) -> None:
        if self._inflight is not None:
            return
        self._drop_stale(now)
        if not self._queue:
            return
        frame, body, _queued = self._queue.popleft()
        self._inflight = (frame, body)
        self._sends = 1
        self._out += self._inflight[0]
        self._ack_deadline = now + self.ack_timeout

    def _drop_stale(self, now: float) -> None:
        while self._queue and now - self._queue[0][2] >= self.stale_after:
            self._events.append(Dropped(self._queue.popleft()[1], "stale"))

    def _flush_garbage(self) -> None:
        if self._garbage:
            self._events.append(GarbageSkipped(self._garbage))
            self._garbage = 0
