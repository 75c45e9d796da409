"""What the reliability tests measure, gathered for docs/reliability.md.

Tests call `fuzzed(way)` once per input tried, `killed(n)` per SIGKILL survived, `flood(...)` with a
flood's latencies and the gateway's memory peak. `make soak` names a file in GATEWAY_RELIABILITY_RECORDS;
conftest's session-finish hook writes the figures there (merged with what an earlier session of the
same run wrote), and tests/_reliability_report.py turns them into docs/reliability.md.
"""
from __future__ import annotations

import json
import math
import os
import statistics

ENV = "GATEWAY_RELIABILITY_RECORDS"

_fuzzed: dict[str, int] = {}
_kills = {"sigkill": 0}
_floods: dict[str, dict] = {}


def fuzzed(way: str, n: int = 1) -> None:
    _fuzzed[way] = _fuzzed.get(way, 0) + n


def killed(n: int = 1) -> None:
    _kills["sigkill"] += n


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def summary(latencies_ms: list[float]) -> dict:
    return {"n": len(latencies_ms), "p50_ms": round(statistics.median(latencies_ms), 2),
            "p99_ms": round(percentile(latencies_ms, 99), 2), "max_ms": round(max(latencies_ms), 2)}


def flood(name: str, *, what: str, latencies_ms: list[float] | None = None, peak_rss_anon_kib: int,
          bound_kib: int, **figures) -> None:
    entry = {"what": what, "peak_rss_anon_kib": peak_rss_anon_kib, "bound_kib": bound_kib, **figures}
    if latencies_ms:
        entry["latency"] = summary(latencies_ms)
    _floods[name] = entry


def snapshot() -> dict:
    return {"fuzzed": dict(_fuzzed), "kills": dict(_kills), "floods": dict(_floods)}


def merge(old: dict, new: dict) -> dict:
    """Counts add up across sessions; a flood measured again replaces its earlier figures."""
    fuzz = dict(old.get("fuzzed", {}))
    for way, n in new["fuzzed"].items():
        fuzz[way] = fuzz.get(way, 0) + n
    kills = {"sigkill": old.get("kills", {}).get("sigkill", 0) + new["kills"]["sigkill"]}
    return {"fuzzed": fuzz, "kills": kills, "floods": {**old.get("floods", {}), **new["floods"]}}


def write(path: str) -> None:
    old = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
    merged = merge(old, snapshot())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(merged, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
