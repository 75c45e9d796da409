"""The benchmark suite runs end to end in its quick mode and writes results.json and the performance
page in their documented shapes. Speeds are never asserted: the figures are the suite's business."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchmarks._report import TEMPLATE, render_doc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FIGURES = {
    "sale_handler_path", "core_loop_durable", "core_loop_durable_vs_sqlite", "pricing_p99_10_lines_10k_rules",
    *(f"pricing_{lines}_lines_{rules}_rules" for lines in (1, 10, 100) for rules in (10, 1000, 10000)),
    "pos_api_16_connections", "ecr_8_lanes_p99", "ecr_8_lanes_random_p99", "csv_drop_rows_per_s", "csv_drop_heap_growth",
    "csv_drop_lane_sale_p99", "csv_drop_lane_sale_max", "csv_bulk_lane_sale_p99", "csv_bulk_lane_sale_max",
    "startup_to_readyz", "erp_catch_up", "gateway_peak_rss",
    "day_close_ms",
}
# Figures whose target is relative: their baseline is measured in the same run.
WITH_BASELINE = {"sale_handler_path", "core_loop_durable", "core_loop_durable_vs_sqlite", "pos_api_16_connections",
                 "pricing_p99_10_lines_10k_rules"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    results, doc = tmp / "results.json", tmp / "performance.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--results", str(results), "--doc", str(doc),
                           "--data-dir", str(tmp / "data")], cwd=ROOT, env={**env, "PYTHONPATH": ROOT},
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return json.loads(results.read_text()), doc.read_text(), done.stdout


def test_every_figure_has_a_value_in_the_documented_shape(quick_run):
    results, _doc, _out = quick_run
    assert set(results) == FIGURES
    for name, e in results.items():
        assert isinstance(e["value"], float) and e["value"] == e["value"], name
        assert isinstance(e["unit"], str) and e["unit"], name
        assert e["mode"] == "quick" and "error" not in e, name
        assert e["met"] in (True, False, None) and isinstance(e["target"], str), name
        if e["baseline"] is None:
            assert e["ratio"] is None, name
        else:
            assert isinstance(e["baseline"], float) and e["baseline"] > 0, name
            assert e["ratio"] == pytest.approx(e["value"] / e["baseline"]), name
    for name in WITH_BASELINE:
        assert results[name]["baseline"] is not None and results[name]["met"] is not None, name
    assert results["pos_api_16_connections"]["load_tool"] in ("wrk", "python")
    # The bulk figures are reported beside their load: the file and the flooding terminals both ran.
    load = results["csv_bulk_lane_sale_p99"]
    assert load["pos_terminals"] >= 1 and load["pos_sales_per_s"] > 0 and load["file_rows_per_s"] > 0
    # The core loop's figure carries the loop's own ceiling (requests that write nothing) and trio's
    # floor under it (bare tasks woken a group at a time), same run, and how its baselines compare.
    loop = results["core_loop_durable"]
    assert loop["loop_alone_per_s"] > 0 and loop["task_floor_per_s"] > 0
    assert loop["loop_alone_vs_raw_lmdb"] == pytest.approx(loop["loop_alone_per_s"] / loop["baseline"])
    assert loop["task_floor_vs_raw_lmdb"] == pytest.approx(loop["task_floor_per_s"] / loop["baseline"])
    sqlite = results["core_loop_durable_vs_sqlite"]["baseline"]
    assert loop["raw_lmdb_vs_sqlite"] == pytest.approx(loop["baseline"] / sqlite)
    # The ECR/1 tick is split beside its figure: pings through the gateway, and through a minimal responder.
    tick = results["ecr_8_lanes_p99"]
    assert 0 < tick["ping_p50_ms"] <= tick["ping_p99_ms"] and 0 < tick["floor_p50_ms"] <= tick["floor_p99_ms"]


def test_the_table_is_printed_as_figures_come(quick_run):
    results, _doc, out = quick_run
    printed = [line.split()[0] for line in out.splitlines()[2:] if line.strip()]
    assert set(printed) == set(results)


def test_the_page_is_filled_and_keeps_the_templates_prose(quick_run):
    _results, doc, _out = quick_run
    assert "{{" not in doc and "not measured in this run" not in doc
    with open(TEMPLATE, encoding="utf-8") as f:
        prose = [line for line in f.read().splitlines() if line.strip() and "{{" not in line]
    at = 0
    for line in prose:  # every hand-written line, in order
        at = doc.index(line, at) + len(line)
    assert "- cores: " in doc and "- mode: quick" in doc


def test_a_figure_missing_from_the_results_is_said_to_be_missing():
    page = render_doc("Intro.\n\n{{figure nope}}\n\nWhat limits it: words.\n", {}, {"cores": 2})
    assert page == "Intro.\n\n`nope`: not measured in this run.\n\nWhat limits it: words.\n"


def test_the_prose_quotes_this_runs_values_and_ratios():
    results = {"sale": {"value": 12517.3, "unit": "events/s", "ratio": 4.7575}, "erp": {"value": 249589.0,
                                                                                         "unit": "events/s"}}
    page = render_doc("Sale {{value sale}} ({{ratio sale}}); ERP {{value erp}}, {{ratio erp}}; {{value gone}}.",
                      results, {})
    assert page == "Sale 12,517 events/s (4.76x); ERP 249,589 events/s, `erp` not measured; `gone` not measured."


def test_flavours_taking_turns_are_rated_over_all_their_turns_and_each_turn_paired_with_the_other():
    from benchmarks._flavours import paired_ratios, turn_rates
    fast, fast_turns = turn_rates([{"done": 100, "seconds": 1.0}, {"done": 100, "seconds": 3.0}])
    slow, slow_turns = turn_rates([{"done": 100, "seconds": 4.0}, {"done": 100, "seconds": 12.0}])
    assert fast == 50.0 and fast_turns == [100.0, 100 / 3]
    assert slow == 12.5 and fast / slow == 4.0
    # The second turn ran in a slow spell for both: paired, each turn still says 4x.
    assert paired_ratios(fast_turns, slow_turns) == {"turn_ratio_median": 4.0, "turn_ratio_min": 4.0,
                                                     "turn_ratio_max": 4.0}
    assert paired_ratios([10.0, 30.0, 20.0], [10.0, 10.0, 10.0])["turn_ratio_median"] == 2.0
