"""A serial barcode scanner's byte stream, without I/O: lines in, parsed scans out.

One scan per line, ended by CR, LF or CR LF (`terminator` = "any", the default), or only by the
configured one ("cr", "lf", "crlf"). Each line goes to `parse_scan` (AIM identifier and GS separators
included). An HIBC primary symbol is held for `link_window` seconds: when the next line is its
secondary (the link character matches), the two count as one scan; otherwise the primary goes on
alone. Call `tick(now)` at `next_deadline()`.
"""
from __future__ import annotations

import re
from collections import deque

from core_ext import Scan, ScanError, barcodes, limits, parse_scan

from ._events import NEED_DATA, ConnectionClosed, Rejected, Scanned

TERMINATORS = {"any": re.compile(rb"\r\n?|\n"), "cr": re.compile(rb"\r"), "lf": re.compile(rb"\n"),
               "crlf": re.compile(rb"\r\n")}
HIBC_LINK_WINDOW_S = 3.0


class ScannerConnection:
    def __init__(self, *, terminator: str = "any", link_window: float = HIBC_LINK_WINDOW_S,
                 max_line: int = barcodes.MAX_SCAN_CHARS):
        if terminator not in TERMINATORS:
            raise ValueError(f"terminator must be one of {', '.join(TERMINATORS)}, not {terminator!r}")
        self._term = TERMINATORS[terminator]
        self._any = terminator == "any"
        self.link_window = link_window
        self.max_line = max_line
        self._buf = bytearray()
        self._skip_lf = False      # "any": a CR ended the last chunk; a LF next belongs to it
        self._discarding = False   # inside a line already rejected as too long
        self._held: tuple[bytes, float] | None = None
        self._events: deque = deque()
        self._closed = False

    def receive_data(self, data: bytes, now: float) -> None:
        if self._closed:
            return
        self.tick(now)
        if not data:
            self._closed = True
            self._flush_held()
            partial = 0 if self._discarding else len(self._buf)
            self._buf.clear()
            self._events.append(ConnectionClosed(partial))
            return
        if self._skip_lf and data[:1] == b"\n":
            data = data[1:]
        self._skip_lf = False
        self._buf += data
        while True:
            match = self._term.search(self._buf)
            if match is None:
                break
            line = bytes(self._buf[:match.start()])
            if self._any and match.group() == b"\r" and match.end() == len(self._buf):
                self._skip_lf = True
            del self._buf[:match.end()]
            if self._discarding:
                self._discarding = False
            elif line:
                self._line(line, now)
        if len(self._buf) > self.max_line:
            if not self._discarding:
                self._events.append(Rejected(bytes(self._buf[:64]), "too_long",
                                             f"a line of more than {self.max_line} bytes"))
            self._discarding = True
            self._buf.clear()

    def next_event(self):
        if self._events:
            return self._events.popleft()
        return NEED_DATA

    def next_deadline(self) -> float | None:
        return None if self._held is None else self._held[1] + self.link_window

    def tick(self, now: float) -> None:
        if self._held is not None and now >= self._held[1] + self.link_window:
            self._flush_held()

    def _line(self, line: bytes, now: float) -> None:
        part = barcodes.hibc_part(line)
        if self._held is not None:
            primary = self._held[0]
            if part == "secondary":
                self._held = None
                try:
                    self._events.append(Scanned(within_limits(barcodes.parse_hibc_pair(primary, line))))
                except ScanError as exc:
                    self._scanned(primary)
                    self._events.append(Rejected(line, exc.code, exc.reason))
                return
            self._flush_held()
        if part == "primary":
            self._held = (line, now)
            return
        self._scanned(line)

    def _scanned(self, line: bytes) -> None:
        try:
            self._events.append(Scanned(within_limits(parse_scan(line))))
        except ScanError as exc:
            self._events.append(Rejected(line, exc.code, exc.reason))

    def _flush_held(self) -> None:
        if self._held is not None:
            # hibc_part said it parses as primary data; only the limits may still refuse it.
            line, self._held = self._held[0], None
            self._scanned(line)


def within_limits(scan: Scan) -> Scan:
    """`scan` if what it would put on a sale line fits ECR/1's limits, else ScanError.

    A code, lot or serial longer than a terminal may send would make every sale of that basket a
    `BAD_REQUEST`: refused here, at the scanner, it is one clear rejection instead.
    """
    if len(scan.raw) > limits.MAX_CODE:
        raise ScanError("too_long", f"the scan is {len(scan.raw)} characters, at most {limits.MAX_CODE} "
                                    "fit on a sale line")
    for name in ("lot", "serial"):
        value = getattr(scan, name)
        if value is not None and len(value) > limits.MAX_TEXT:
            raise ScanError(f"{name}_too_long", f"the {name} is {len(value)} characters, "
                                                f"at most {limits.MAX_TEXT} are allowed")
    return scan
