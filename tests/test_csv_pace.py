"""How big each slice of a file is (`device_plugins/csv_drop/_pace.py`): no I/O, no clock."""
from __future__ import annotations

from device_plugins.csv_drop._pace import FIRST_LINES, GROWTH, SlicePace


def test_the_first_slice_is_small_and_within_the_caps():
    assert SlicePace(5.0, 1000, 3000)() == (1000, FIRST_LINES)
    assert SlicePace(5.0, 10, 3)() == (10, 3)


def test_a_slice_aims_at_the_target_time_growing_at_most_fourfold_a_step():
    pace = SlicePace(5.0, 1000, 3000)
    pace.observe(FIRST_LINES, 0.01 * FIRST_LINES)  # 0.01 ms a line: 500 lines fit in 5 ms
    assert pace.lines == FIRST_LINES * GROWTH
    pace.observe(pace.lines, 0.01 * pace.lines)
    assert pace.lines == 500
    pace.observe(500, 5.0)
    assert pace() == (1000, 500)


def test_a_slice_that_overran_shrinks_the_next_at_once_and_never_below_one_line():
    pace = SlicePace(5.0, 1000, 3000)
    pace.observe(FIRST_LINES, 0.01 * FIRST_LINES)
    pace.observe(128, 128 * 0.19)  # the writer slowed down: the mean pace is 0.1 ms a line
    assert pace.lines == 50
    pace.observe(50, 10_000.0)
    assert pace.lines == 1


def test_the_caps_bound_it_and_an_answer_without_a_time_changes_nothing():
    pace = SlicePace(1000.0, 1000, 200)
    pace.observe(FIRST_LINES, 0.001)
    assert pace.lines == FIRST_LINES * GROWTH
    pace.observe(128, 0.001)
    assert pace.lines == 200
    for held in (None, "3", -1.0):
        pace.observe(200, held)
        assert pace.lines == 200
    pace.observe(0, 1.0)
    assert pace.lines == 200
