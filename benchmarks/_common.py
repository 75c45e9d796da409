"""What every benchmark shares: a figure with its baseline, the run's context, progress lines."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class Figure:
    """One measured figure; `baseline` is measured in the same run, never typed in.

    `ratio` is always value / baseline. `met` is decided by the benchmark from the target (None when
    the figure has no target of its own, such as a cell of the pricing grid).
    """

    name: str
    title: str
    value: float | None
    unit: str
    target: str = ""
    met: bool | None = None
    baseline: float | None = None
    baseline_of: str = ""  # what the baseline is: "pure-Python twin", "raw LMDB", ...
    extra: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    def as_json(self) -> dict:
        out = {"value": self.value, "unit": self.unit, "baseline": self.baseline, "ratio": self.ratio,
               "target": self.target, "met": self.met, "title": self.title, "baseline_of": self.baseline_of}
        out.update(self.extra)
        return out


def at_least(value: float | None, bound: float) -> bool | None:
    return None if value is None else value >= bound


def at_most(value: float | None, bound: float) -> bool | None:
    return None if value is None else value <= bound


@dataclass(slots=True)
class Context:
    """One run: its size, where it may keep data, and what the gateway processes used (RssAnon)."""

    quick: bool
    data_dir: str  # cached inputs (the big ledger), kept between runs
    gateway_peaks_mb: list = field(default_factory=list)  # (benchmark, peak RssAnon MB) per gateway run

    def size(self, quick, full):
        return quick if self.quick else full


_started = time.monotonic()


def say(message: str) -> None:
    """A progress line on standard error, with the time since the run began."""
    print(f"  [{time.monotonic() - _started:6.1f}s] {message}", file=sys.stderr, flush=True)


def percentile(sorted_values: list, fraction: float) -> float:
    """The value below which `fraction` of the samples fall (nearest rank on a sorted list)."""
    if not sorted_values:
        raise ValueError("no samples")
    rank = max(0, min(len(sorted_values) - 1, int(round(fraction * len(sorted_values))) - 1))
    return sorted_values[rank]


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
