"""The rate-limited log: a device repeating itself at line speed writes a bounded number of lines,
and the summaries account for every occurrence."""
from __future__ import annotations

import logging
import re
import time

import pytest

from core_ext import RateLimitedLog

SUMMARY = re.compile(r"\(repeated ([\d,]+) times since (\d\d:\d\d:\d\d)\)$")


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


WALL = 1_700_000_000.0  # the wall clock at FakeClock's 1000.0


def make(caplog, interval=60.0):
    clock = FakeClock()
    suppressed = []
    log = RateLimitedLog(logging.getLogger("test.ratelimit"), interval, clock,
                         wall_clock=lambda: WALL + clock.t - 1000.0,
                         on_suppressed=lambda: suppressed.append(1))
    caplog.set_level(logging.INFO, logger="test.ratelimit")
    return log, clock, suppressed


def counted(records) -> int:
    """Occurrences the lines account for: one per line of its own, plus each summary's count."""
    total = 0
    for record in records:
        total += 1
        match = SUMMARY.search(record.getMessage())
        if match:
            total += int(match.group(1).replace(",", ""))
    return total


def test_100000_bad_frames_write_a_bounded_number_of_lines_and_the_counts_add_up(caplog):
    log, clock, suppressed = make(caplog)
    for i in range(100_000):
        clock.t = 1000.0005 + i / 1000  # 100 s of frames, one a millisecond
        log.warning("crc", "ecr %s: frame discarded (%s)", "lane1", "crc")
    log.flush()
    lines = caplog.records
    assert len(lines) == 3  # the first, one summary after 60 s, the rest when flushed
    assert counted(lines) - 1 == 100_000  # the flush line repeats the last message, counted in it
    assert len(suppressed) == 100_000 - 2
    first, second, last = (r.getMessage() for r in lines)
    assert first == "ecr lane1: frame discarded (crc)"
    # 60 s after the first line: the 60,000 frames since the second, and this one.
    assert second == ("ecr lane1: frame discarded (crc) (repeated 59,999 times since "
                      + time.strftime("%H:%M:%S", time.localtime(WALL + 0.0015)) + ")")
    assert SUMMARY.search(last).group(1) == "39,999"
    assert all(r.levelno == logging.WARNING for r in lines)


def test_keys_are_limited_apart_and_a_quiet_key_logs_plainly_again(caplog):
    log, clock, suppressed = make(caplog, interval=10.0)
    log.warning("a", "A %d", 1)
    log.warning("b", "B %d", 1)
    log.warning("a", "A %d", 2)
    assert [r.getMessage() for r in caplog.records] == ["A 1", "B 1"]
    clock.t += 10.0
    log.warning("b", "B %d", 2)  # nothing was suppressed for b: a plain line
    log.warning("a", "A %d", 3)
    assert [r.getMessage() for r in caplog.records][2:] == [
        "B 2", "A 3 (repeated 1 times since %s)" % time.strftime("%H:%M:%S", time.localtime(WALL))]
    assert len(suppressed) == 1


def test_a_pending_summary_comes_out_when_due_without_a_new_occurrence(caplog):
    log, clock, suppressed = make(caplog, interval=5.0)
    for _ in range(4):
        log.info("k", "noise on %s", "lane1")
    assert log.next_due() == pytest.approx(1005.0)
    log.flush_due(1004.9)
    assert len(caplog.records) == 1
    clock.t = 1005.0
    log.flush_due()
    assert SUMMARY.search(caplog.records[-1].getMessage()).group(1) == "3"
    assert log.next_due() is None
    assert len(suppressed) == 3


def test_keys_beyond_the_limit_are_evicted_with_their_summary(caplog):
    clock = FakeClock()
    log = RateLimitedLog(logging.getLogger("test.ratelimit"), 60.0, clock, max_keys=2)
    caplog.set_level(logging.INFO, logger="test.ratelimit")
    log.info("a", "A")
    log.info("a", "A")
    log.info("b", "B")
    log.info("c", "C")  # evicts a, whose one suppressed occurrence is summarised first
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == ["A", "B", "A", "C"]
    assert counted(caplog.records) - 1 == 4


def test_a_disabled_level_costs_nothing_and_counts_nothing(caplog):
    log, clock, suppressed = make(caplog)
    caplog.set_level(logging.WARNING, logger="test.ratelimit")
    for _ in range(10):
        log.info("k", "quiet")
    assert caplog.records == [] and suppressed == []


def test_a_traceback_goes_with_a_line_written_and_never_with_a_suppressed_one(caplog):
    log, clock, suppressed = make(caplog)
    for _ in range(3):
        try:
            raise RuntimeError("the core failed")
        except RuntimeError:
            log.error("core", "request %s failed", "S-1", exc_info=True)
    log.flush()
    first, summary = caplog.records
    assert first.exc_info and first.exc_info[0] is RuntimeError
    assert not summary.exc_info and SUMMARY.search(summary.getMessage()).group(1) == "2"
