"""The ops kit: the alerting rules (promtool's own checks and unit tests), their runbook, the fleet
dashboard, all held against the metric families a real gateway with every part running exports."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import trio
import yaml

from core_ext import Store
from core_ext._alerts import alert_key
from gateway._app import Gateway
from gateway._config import load_config

from ._data import seed
from ._ops import exported_names, full_config, promql_names, scrape

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES = os.path.join(ROOT, "configs", "prometheus", "gateway-rules.yml")
RULES_TESTS = os.path.join(ROOT, "configs", "prometheus", "gateway-rules.test.yml")
DASHBOARD = os.path.join(ROOT, "configs", "grafana", "gateway-fleet.json")
RUNBOOK = os.path.join(ROOT, "docs", "runbook.md")
# Series Prometheus makes itself, not the gateway: the scrape's health and the alerts' own.
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}
SEVERITIES = {"critical", "warning"}

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason=(
    "promtool is not installed and could not be (make test installs Debian's prometheus package when run "
    "as root)"))


def rules() -> list[dict]:
    with open(RULES, encoding="utf-8") as f:
        return [rule for group in yaml.safe_load(f)["groups"] for rule in group["rules"]]


def alerts() -> list[dict]:
    return [rule for rule in rules() if "alert" in rule]


def records() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def dashboard_exprs() -> list[str]:
    with open(DASHBOARD, encoding="utf-8") as f:
        board = json.load(f)
    exprs = [target["expr"] for panel in board["panels"] for target in panel.get("targets", ())]
    for var in board["templating"]["list"]:
        if var.get("type") == "query":
            # Grafana's label_values(METRIC, LABEL): the metric is the first argument.
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            exprs.append(re.fullmatch(r"label_values\((.+),\s*\w+\)", query).group(1))
    return exprs


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], input=stdin, capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(RULES))


@pytest.fixture(scope="module")
def exposition(tmp_path_factory) -> str:
    """/metrics of a real gateway with every part that has metrics configured, once it is ready."""
    root = tmp_path_factory.mktemp("full")
    config = load_config(full_config(root))
    # A store with a catalog, stock and an open alert: the families read from LMDB that have a series
    # only once there is something to count (alerts by kind, versions by kind) are there too.
    store = Store(config.store.data_dir)
    try:
        seed(store)
        with store.begin(write=True) as tx:
            tx.put("alerts", alert_key("SKU-1", "recalled", "L1"), {"kind": "recalled", "sku": "SKU-1", "lot": "L1"})
    finally:
        store.close()

    async def main() -> str:
        async with trio.open_nursery() as nursery:
            gateway = await nursery.start(Gateway(config).run)
            text = await trio.to_thread.run_sync(scrape, gateway.urls["metrics"][0] + "/metrics")
            nursery.cancel_scope.cancel()
        return text

    return trio.run(main)


@pytest.fixture(scope="module")
def names(exposition) -> set[str]:
    return exported_names(exposition)


# --- promtool --------------------------------------------------------------------------------

@needs_promtool
def test_promtool_accepts_the_rules():
    done = promtool("check", "rules", RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


@needs_promtool
def test_the_rules_unit_tests_pass():
    # Each alert fires on its series at its time and not on its healthy twin (gateway-rules.test.yml).
    done = promtool("test", "rules", RULES_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not():
    with open(RULES_TESTS, encoding="utf-8") as f:
        cases = [case for test in yaml.safe_load(f)["tests"] for case in test["alert_rule_test"]]
    fired = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    names_ = {rule["alert"] for rule in alerts()}
    assert names_ - fired == set(), "alerts no test sees firing"
    assert names_ - quiet == set(), "alerts no test sees quiet"


@needs_promtool
def test_promtool_lints_the_gateways_real_exposition_clean(exposition):
    done = promtool("check", "metrics", stdin=exposition)
    assert done.returncode == 0, done.stdout + done.stderr


# --- rules, runbook, families ----------------------------------------------------------------

def test_every_alert_has_a_severity_a_summary_and_a_runbook_section_that_exists():
    with open(RUNBOOK, encoding="utf-8") as f:
        anchors = {heading.strip().lower() for heading in re.findall(r"^## (\S+)\s*$", f.read(), re.M)}
    for rule in alerts():
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        link = rule["annotations"]["runbook_url"]
        assert link == f"docs/runbook.md#{rule['alert'].lower()}", link
        assert rule["alert"].lower() in anchors, f"docs/runbook.md has no section ## {rule['alert']}"


def test_the_gateway_with_every_part_exports_the_families_the_ops_kit_reads(names):
    # A few landmarks from each part, so a gateway that failed to register one cannot pass quietly.
    for name in ("gateway_store_open", "gateway_core_commit_seconds_bucket", "gateway_upstream_unacked_age_seconds",
                 "gateway_upstream_unsealed_age_seconds", "gateway_store_map_size_bytes", "gateway_ecr_connected",
                 "gateway_scanner_connected", "gateway_csv_alerts_total", "gateway_pos_requests_total",
                 "gateway_nats_hub_reachable", "gateway_nats_publish_lag_batches", "gateway_http_refused_total"):
        assert name in names, name


def test_every_metric_a_rule_reads_is_exported(names):
    known = names | PROMETHEUS_SERIES | records()
    for rule in rules():
        missing = promql_names(rule["expr"]) - known
        assert not missing, f"{rule.get('alert') or rule.get('record')} reads {missing}, which nothing exports"


def test_the_dashboard_is_for_a_chain_with_a_store_variable_every_panel_filters_on():
    with open(DASHBOARD, encoding="utf-8") as f:
        board = json.load(f)
    assert "store" in {var["name"] for var in board["templating"]["list"]}
    exprs = [target["expr"] for panel in board["panels"] for target in panel.get("targets", ())]
    for expr in exprs:
        assert 'store=~"$store"' in expr, expr
    titles = " ".join(panel["title"].lower() for panel in board["panels"])
    for topic in ("sales", "refusals", "erp", "unacknowledged", "devices", "alerts", "commit latency", "nats"):
        assert topic in titles, topic


def test_every_metric_a_dashboard_panel_reads_is_exported(names):
    known = names | PROMETHEUS_SERIES | records()
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    for expr in exprs:
        assert promql_names(expr), expr
        missing = promql_names(expr) - known
        assert not missing, f"a panel reads {missing}, which nothing exports: {expr}"


def test_the_reader_of_promql_names_finds_what_an_expression_reads():
    # The checks above are only as good as this reader: names in, labels, functions and keywords out.
    expr = ('sum without (kind) (rate(a_total{code=~"X|Y", store=~"$store"}[$__rate_interval])) '
            '/ on (job, instance) group_left b_bytes unless c offset 15m > 0.1 * 1e3')
    assert promql_names(expr) == {"a_total", "b_bytes", "c"}
