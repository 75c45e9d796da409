"""Log lines that a device can repeat at line speed, without letting it fill the disk.

`RateLimitedLog(logger, per_key_interval_s, clock)` logs the first occurrence of each key, then at
most one line per key per interval: the latest message with how many occurrences had no line of
their own and since when ("... (repeated 1,234 times since 12:00:03)"). Nothing is lost from the
count: every occurrence is either a line of its own or counted in the next summary, and
`on_suppressed()` is called once for each one counted. Pending summaries come out
with the next occurrence of their key (that line counts the ones before it), or as a line of
their own (the latest message and its count) from `flush_due(now)` (call it at `next_due()`) or
`flush()` (when the device goes away). `clock` gives monotonic seconds (trio's clock in a task, a
fake in a test); `wall_clock` the time of day the summaries name.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable


@dataclass(slots=True)
class _Key:
    last_logged: float          # clock() when this key last wrote a line
    level: int = logging.INFO   # of the latest suppressed occurrence
    msg: str = ""
    args: tuple = ()
    suppressed: int = 0
    since_wall: float = 0.0     # wall_clock() at the first suppressed occurrence


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, per_key_interval_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, *,
                 wall_clock: Callable[[], float] = time.time,
                 on_suppressed: Callable[[], None] | None = None, max_keys: int = 256):
        if per_key_interval_s <= 0:
            raise ValueError("per_key_interval_s must be positive")
        self.logger = logger
        self.interval = per_key_interval_s
        self.clock = clock
        self.wall_clock = wall_clock
        self.on_suppressed = on_suppressed
        self.max_keys = max_keys
        self._keys: dict = {}  # insertion order = least recently logged first

    def debug(self, key, msg: str, *args) -> None:
        self.log(logging.DEBUG, key, msg, *args)

    def info(self, key, msg: str, *args) -> None:
        self.log(logging.INFO, key, msg, *args)

    def warning(self, key, msg: str, *args) -> None:
        self.log(logging.WARNING, key, msg, *args)

    def error(self, key, msg: str, *args, exc_info: bool = False) -> None:
        self.log(logging.ERROR, key, msg, *args, exc_info=exc_info)

    def log(self, level: int, key, msg: str, *args, exc_info: bool = False) -> None:
        """`exc_info`: the traceback goes with a line written now (a summary carries none)."""
        if not self.logger.isEnabledFor(level):
            return
        now = self.clock()
        entry = self._keys.get(key)
        if entry is None:
            self._make_room()
            self._keys[key] = _Key(now)
            self.logger.log(level, msg, *args, exc_info=exc_info)
        elif now - entry.last_logged >= self.interval:
            self._write(key, entry, now, level, msg, args, exc_info)
        else:
            if not entry.suppressed:
                entry.since_wall = self.wall_clock()
            entry.suppressed += 1
            entry.level, entry.msg, entry.args = level, msg, args
            if self.on_suppressed is not None:
                self.on_suppressed()

    def next_due(self) -> float | None:
        """When the earliest pending summary may be written (None: nothing pending)."""
        due = [e.last_logged + self.interval for e in self._keys.values() if e.suppressed]
        return min(due) if due else None

    def flush_due(self, now: float | None = None) -> None:
        """Write the summaries whose interval has passed."""
        now = self.clock() if now is None else now
        for key, entry in list(self._keys.items()):
            if entry.suppressed and now - entry.last_logged >= self.interval:
                self._write(key, entry, now, entry.level, entry.msg, entry.args)

    def flush(self) -> None:
        """Write every pending summary now."""
        now = self.clock()
        for key, entry in list(self._keys.items()):
            if entry.suppressed:
                self._write(key, entry, now, entry.level, entry.msg, entry.args)

    def _write(self, key, entry: _Key, now: float, level: int, msg: str, args: tuple,
               exc_info: bool = False) -> None:
        """One line: `msg`, with the count of occurrences that had no line since the last one."""
        if entry.suppressed:
            stamp = time.strftime("%H:%M:%S", time.localtime(entry.since_wall))
            self.logger.log(level, msg + " (repeated %s times since %s)", *args,
                            f"{entry.suppressed:,}", stamp, exc_info=exc_info)
        else:
            self.logger.log(level, msg, *args, exc_info=exc_info)
        entry.suppressed = 0
        entry.last_logged = now
        self._keys[key] = self._keys.pop(key)  # now the most recently logged

    def _make_room(self) -> None:
        while len(self._keys) >= self.max_keys:
            key = next(iter(self._keys))
            entry = self._keys[key]
            if entry.suppressed:
                self._write(key, entry, self.clock(), entry.level, entry.msg, entry.args)
            del self._keys[key]
