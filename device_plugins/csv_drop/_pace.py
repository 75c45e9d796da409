"""How big each slice of a file is: sized by the writer's time, not by a count tuned to one machine.

A slice of a fixed number of lines holds the writer for longer on a slower box, or in the pure-Python
flavour, and for needlessly short on a fast one (every slice pays a commit). `SlicePace` aims each
slice at `slice_ms` of the writer's time instead, judged by what the slices before it took (the
core's `held_ms` in each `csv_slice` answer), within the device's `slice_baskets` and `slice_lines`.
No I/O and no clock of its own: it learns only from the answers it is shown.
"""
from __future__ import annotations

# The first slice of a file is small: it is sent before anything is known of this file's pace.
FIRST_LINES = 32
# A slice may carry at most this many times the lines of the one before, so one slice that ran
# quick by chance (a warm cache, a basket of duplicates) does not make the next one huge.
GROWTH = 4


class SlicePace:
    """(max baskets, max lines) of the next slice: `pace()` before each slice is cut, `observe`
    after each answer."""

    def __init__(self, target_ms: float, max_baskets: int, max_lines: int):
        self.target_ms = target_ms
        self.max_baskets = max_baskets
        self.max_lines = max_lines
        self.lines = min(FIRST_LINES, max_lines)
        self.ms_per_line: float | None = None  # smoothed over the slices answered so far

    def __call__(self) -> tuple[int, int]:
        return self.max_baskets, self.lines

    def observe(self, lines: int, held_ms) -> None:
        """A slice of `lines` lines held the writer `held_ms` milliseconds (None when the answer
        does not say, which leaves the size as it is)."""
        if lines <= 0 or not isinstance(held_ms, (int, float)) or held_ms < 0:
            return
        pace = held_ms / lines
        self.ms_per_line = pace if self.ms_per_line is None else (self.ms_per_line + pace) / 2
        fits = int(self.target_ms / self.ms_per_line) if self.ms_per_line > 0 else self.max_lines
        self.lines = max(1, min(fits, self.lines * GROWTH, self.max_lines))
