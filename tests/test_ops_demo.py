"""The alerts against a living store: `gateway demo` runs, its /metrics is scraped while it sells, and
every alert of configs/prometheus/gateway-rules.yml is evaluated by promtool over the series scraped.
A healthy store (the demo before its recall) must fire none of them."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ._ops import scrape

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES = os.path.join(ROOT, "configs", "prometheus", "gateway-rules.yml")
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
TARGET = {"job": "gateway", "instance": "demo:9600", "store": "DEMO"}
SCRAPES = 12
# After the scrapes, the last values are held this many more minutes: long enough for every `for:`
# and every range of the rules to pass over what was scraped.
HELD_MINUTES = 45
# Series the demo's store must have shown, or the check below would pass on nothing.
EXPECTED = ("gateway_store_open", "gateway_upstream_unacked_age_seconds", "gateway_upstream_unsealed_age_seconds",
            "gateway_upstream_seal_max_age_seconds", "gateway_ecr_connected", "gateway_scanner_connected",
            "gateway_core_commit_seconds_bucket", "gateway_core_queue_depth_requests", "gateway_store_free_bytes",
            "gateway_store_map_size_bytes", "gateway_store_min_free_bytes", "gateway_master_pending_overdue_seconds",
            "gateway_core_requests_total", "gateway_csv_files_total", "gateway_upstream_acked_seq")

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason=(
    "promtool is not installed and could not be (make test installs Debian's prometheus package when run "
    "as root)"))


def alert_names() -> list[str]:
    with open(RULES, encoding="utf-8") as f:
        groups = yaml.safe_load(f)["groups"]
    return sorted({rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule})


class Demo:
    """`gateway demo` in a folder of its own, its output read on a thread until it names /metrics."""

    def __init__(self, folder):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "demo", "--dir", str(folder), "--for", "30", "--ports", "0,0,0",
             "--pace", "0.2", "--recall-after", "3600"],
            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.output: list[str] = []
        self.url: str | None = None
        self.named = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line)
            found = re.search(r"metrics +: (http://\S+/metrics)", line)
            if found and self.url is None:
                self.url = found.group(1)
                self.named.set()
        self.named.set()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=60)
        self.reader.join(timeout=60)   # the pipe ends with the process
        self.proc.stdout.close()


def samples(text: str) -> dict[tuple, float]:
    """{(name, labels...): value} of the gateway's own series in one scrape."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("gateway_") and not sample.name.endswith("_created"):
                out[(sample.name, *sorted(sample.labels.items()))] = sample.value
    return out


def series_selector(key: tuple) -> str:
    name, *labels = key
    pairs = sorted({**dict(labels), **TARGET}.items())
    return name + "{" + ", ".join(f"{k}={json.dumps(v)}" for k, v in pairs) + "}"


def values_text(key: tuple, scrapes: list[dict]) -> str:
    values = [scrape_.get(key) for scrape_ in scrapes]
    last = next(v for v in reversed(values) if v is not None)
    text = " ".join("_" if v is None else repr(float(v)) for v in values)
    return f"{text} {float(last)!r}x{HELD_MINUTES}"


def promtool_input(scrapes: list[dict]) -> dict:
    """A `promtool test rules` file: each scrape one minute apart, then held; no alert expected."""
    keys = sorted({key for scrape_ in scrapes for key in scrape_})
    series = [{"series": series_selector(key), "values": values_text(key, scrapes)} for key in keys]
    series.append({"series": series_selector(("up",)), "values": f"1x{len(scrapes) + HELD_MINUTES}"})
    times = [f"{m}m" for m in (SCRAPES // 2, SCRAPES, SCRAPES + 10, SCRAPES + 20, SCRAPES + 40)]
    return {"rule_files": [RULES], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series,
        "alert_rule_test": [{"eval_time": t, "alertname": name, "exp_alerts": []}
                            for name in alert_names() for t in times]}]}


@pytest.fixture(scope="module")
def scraped(tmp_path_factory) -> list[dict]:
    """SCRAPES scrapes of a living demo store, one a second (the scraper's pace; nothing is timed)."""
    demo = Demo(tmp_path_factory.mktemp("ops") / "demo")
    try:
        assert demo.named.wait(timeout=120) and demo.url, "".join(demo.output)
        texts = []
        for _ in range(SCRAPES):
            texts.append(scrape(demo.url))
            try:
                demo.proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                continue
            pytest.fail("the demo stopped while being scraped:\n" + "".join(demo.output))
    finally:
        demo.stop()
    return [samples(text) for text in texts]


def test_the_demo_store_shows_every_series_the_alerts_need_and_lives(scraped):
    names = {key[0] for scrape_ in scraped for key in scrape_}
    assert set(EXPECTED) <= names, set(EXPECTED) - names
    sales = [sum(v for k, v in s.items() if k[0] == "gateway_core_requests_total"
                 and ("kind", "sale") in k and ("outcome", "ok") in k) for s in scraped]
    assert sales[-1] > sales[0], sales   # it sold while scraped
    acked = [s[("gateway_upstream_acked_seq",)] for s in scraped]
    assert acked[-1] > acked[0], acked   # and its ERP acknowledged


def test_no_alert_fires_on_the_healthy_demo_store(scraped, tmp_path):
    path = tmp_path / "demo-rules-test.yml"
    path.write_text(yaml.safe_dump(promtool_input(scraped), sort_keys=False), encoding="utf-8")
    done = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "SUCCESS" in done.stdout


def test_an_alert_would_fire_on_the_demos_series_once_the_erp_stopped(scraped, tmp_path):
    # The same series with the ERP gone: the oldest batch ages an hour and more. promtool must see the
    # alert, so the quiet test above is quiet because the store is healthy, not because it reads nothing.
    aged = [dict(s) for s in scraped]
    for i, s in enumerate(aged):
        s[("gateway_upstream_unacked_age_seconds",)] = 3000.0 + 60 * i
    doc = promtool_input(aged)
    doc["tests"][0]["alert_rule_test"] = [{"eval_time": f"{SCRAPES + 10}m", "alertname": "GatewayErpNotAcknowledging",
                                           "exp_alerts": []}]
    path = tmp_path / "demo-rules-test.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    done = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=300)
    report = done.stdout + done.stderr
    assert done.returncode != 0
    assert 'alertname="GatewayErpNotAcknowledging"' in report and 'store="DEMO"' in report, report
