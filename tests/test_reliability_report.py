"""The reliability report keeps its hand-written part and rewrites the measured one."""
from __future__ import annotations

from . import _records
from ._reliability_report import MARK, render


RECORDS = {"fuzzed": {"POS/1 bodies (HTTP)": 30, "scans: parse_scan": 12}, "kills": {"sigkill": 45},
           "floods": {"500 concurrent POS/1 connections": {
               "what": "500 connections", "peak_rss_anon_kib": 51200, "bound_kib": 262144,
               "latency": {"n": 500, "p50_ms": 12.0, "p99_ms": 40.5, "max_ms": 50.0}}}}


def test_the_hand_written_part_is_kept_and_the_figures_replaced():
    first = render(None, RECORDS, "2026-01-01")
    assert "## Guaranteed" in first and "**45**" in first and "| **all** | **42** |" in first
    edited = first.replace("## Guaranteed", "## Guaranteed\n\nA sentence a maintainer added.")
    again = render(edited, {**RECORDS, "kills": {"sigkill": 7}}, "2026-02-02")
    assert "A sentence a maintainer added." in again
    assert "**7**" in again and "**45**" not in again and again.count(MARK) == 1
    assert "| 500 concurrent POS/1 connections | 12.0 ms | 40.5 ms | 50.0 ms | 50.0 MiB | 256.0 MiB |" in again


def test_counts_add_up_across_sessions_and_a_flood_measured_again_replaces_its_figures():
    old = {"fuzzed": {"a": 2}, "kills": {"sigkill": 5}, "floods": {"f": {"x": 1}, "g": {"y": 1}}}
    new = {"fuzzed": {"a": 3, "b": 1}, "kills": {"sigkill": 40}, "floods": {"f": {"x": 2}}}
    assert _records.merge(old, new) == {"fuzzed": {"a": 5, "b": 1}, "kills": {"sigkill": 45},
                                        "floods": {"f": {"x": 2}, "g": {"y": 1}}}


def test_percentiles_are_nearest_rank():
    values = list(range(1, 101))
    assert _records.percentile(values, 50) == 50 and _records.percentile(values, 99) == 99
    assert _records.percentile([7.0], 99) == 7.0
