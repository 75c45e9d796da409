"""`gateway demo` as a new user runs it: a living store for a few seconds, in a folder of its own, that
leaves batches which verify, a ledger which replays, and something for the inspection commands."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from core_ext import Store, from_u64
from upstream import decode_envelope

from .erp_test_client import ChainChecker, load_public

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def gateway(cwd, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=str(cwd), env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def demo(cwd, *extra: str) -> subprocess.CompletedProcess:
    done = gateway(cwd, "demo", "--for", "6", "--ports", "0,0,0", "--pace", "0.2", "--recall-after", "1", *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def stored(folder) -> tuple[list[dict], list[dict]]:
    """(every event, every batch envelope) of the demo's store, read as a reader."""
    store = Store(str(folder / "data"))
    try:
        with store.read() as tx:
            events = list(tx.events())
            batches = [decode_envelope(tx.get_raw("batches", key)) for key, _ in tx.items("batches")]
            keys = [from_u64(key) for key, _ in tx.items("batches")]
    finally:
        store.close()
    assert keys == sorted(keys)
    return events, batches


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """One demo run, shared by the tests below (it takes a few seconds)."""
    here = tmp_path_factory.mktemp("trial")
    return here, demo(here)


def test_the_demo_prints_where_to_look_and_a_summary(ran):
    _here, done = ran
    out = done.stdout
    assert re.search(r"status page : http://127\.0\.0\.1:\d+/status\?token=\S{16,}", out), out
    assert re.search(r"POS/1 +: http://127\.0\.0\.1:\d+/pos/v1/\.\.\. +Authorization: Bearer \S+", out), out
    assert re.search(r"UP/1 \(ERP\) +: http://127\.0\.0\.1:\d+/upstream/v1/", out), out
    assert re.search(r"metrics +: http://127\.0\.0\.1:\d+/metrics", out), out
    assert re.search(r"lane1 +sales +[1-9]", out) and re.search(r"lane2 +sales +[1-9]", out), out
    assert "RECALLED_LOT" in out and "recall issued" in out, out


def test_the_demo_store_is_driven_through_every_device(ran):
    here, _done = ran
    events, _batches = stored(here / "demo")
    sources = {e.get("source") or str(e.get("id")).partition(":")[0] for e in events}
    assert {"lane1", "lane2", "receiving"} <= sources, sources
    assert any(e["type"] == "refusal" and e.get("err") == "RECALLED_LOT" for e in events)
    assert any(e["type"] == "receipt" and str(e["id"]).startswith("receiving:") for e in events)
    assert any(e["type"] == "sale" and e.get("member") for e in events)
    kinds = {e.get("kind") for e in events if e["type"] == "master_applied"}
    assert {"catalog", "promotions", "members", "policy", "recalls"} <= kinds
    drop = here / "demo" / "drop" / "legacy"
    assert os.listdir(drop / "done") or os.listdir(drop / "rejected")


def test_the_demo_leaves_batches_that_verify_and_a_ledger_that_replays(ran):
    here, _done = ran
    _events, batches = stored(here / "demo")
    assert batches
    checker = ChainChecker(load_public(str(here / "demo" / "keys" / "store.pub.pem")), store="DEMO1")
    checker.accept_all(batches)
    with open(here / "demo" / "erp" / "state.json", encoding="utf-8") as f:
        assert json.load(f)["seq"] >= 1  # the demo ERP pulled, verified and kept its place
    ledger = gateway(here, "verify-ledger", "--config", "demo/gateway.toml")
    assert ledger.returncode == 0, ledger.stdout + ledger.stderr


def test_the_inspection_commands_read_the_demo_store(ran):
    here, _done = ran
    config = ("--config", "demo/gateway.toml")
    status = gateway(here, "status", "--json", *config)
    assert status.returncode == 0, status.stderr
    snap = json.loads(status.stdout)
    assert snap["sales"]["lanes"]["lane1"]["sales"] >= 1 and snap["batches"]["sealed"] >= 1
    assert snap["refusals"] and snap["refusals"][0]["err"] == "RECALLED_LOT"
    stock = gateway(here, "stock", "MD-007", "--json", *config)
    found = json.loads(stock.stdout)
    recalled = [lot for lot in found["lots"] if lot["recall_id"]]
    assert len(recalled) == 1 and recalled[0]["recall_id"] == found["recalls"][0]["recall_id"]
    by_gtin = json.loads(gateway(here, "stock", found_gtin(here), "--json", *config).stdout)
    assert by_gtin["sku"] == "MD-007"
    text = gateway(here, "stock", "MD-007", *config).stdout
    assert "RECALLED" in text and "on hand" in text
    alerts = gateway(here, "alerts", *config)
    assert alerts.returncode == 0 and "RECALLED   MD-007" in alerts.stdout
    assert gateway(here, "stock", "NO-SUCH", *config).returncode == 1
    text = gateway(here, "status", *config).stdout
    assert "today (" in text and "batches:" in text


def found_gtin(here) -> str:
    store = Store(str(here / "demo" / "data"))
    try:
        with store.read() as tx:
            return tx.get("catalog", "MD-007")["gtins"][0]
    finally:
        store.close()


def test_a_second_run_keeps_the_store_and_its_tokens_and_fresh_starts_over(tmp_path):
    first = demo(tmp_path)
    before, _b = stored(tmp_path / "demo")
    token = re.search(r"token=(\S+)", first.stdout).group(1)
    second = demo(tmp_path)
    after, batches = stored(tmp_path / "demo")
    assert len(after) > len(before) and after[:len(before)] == before
    assert re.search(r"token=(\S+)", second.stdout).group(1) == token
    ChainChecker(load_public(str(tmp_path / "demo" / "keys" / "store.pub.pem"))).accept_all(batches)
    demo(tmp_path, "--fresh")
    again, _b = stored(tmp_path / "demo")
    assert again[0]["ts_ms"] > before[-1]["ts_ms"]
