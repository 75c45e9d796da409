"""The ledger collector on a real LMDB store, and /metrics, /healthz, /readyz served over real HTTP."""
from __future__ import annotations

import http.client
import json
import os
from urllib.parse import urlsplit

import lmdb
import pytest
import trio
from prometheus_client import CollectorRegistry, Counter

from core_ext._alerts import alert_key
from core_ext._store import Store, lot_key, total_key
from gateway._http import serve_asgi
from gateway._metrics import LedgerCollector, make_app, make_registry


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "data"), map_size=64 << 20)
    yield s
    s.close()


def fill(store: Store, *, events: int, skus: list[str], alerts: list[tuple[str, str, str]]) -> None:
    with store.begin(write=True) as tx:
        for n in range(events):
            tx.append_event({"type": "receipt", "id": f"t:{n}", "ts_ms": 1_700_000_000_000 + n * 1000,
                             "source": "t", "moves": []})
        for sku in skus:
            tx.put("lots", total_key(sku), 5)
            tx.put("lots", lot_key(sku, "L1"), {"qty": 5, "expiry": None, "serials": []})
        tx.put("meta", "skus", len(skus))  # as the writer counts them
        for kind, sku, lot in alerts:
            tx.put("alerts", alert_key(sku, kind, lot), {"kind": kind, "sku": sku, "lot": lot})


def test_ledger_collector_reads_the_store_at_scrape_time(store):
    registry = CollectorRegistry()
    registry.register(LedgerCollector(store.read))
    assert registry.get_sample_value("gateway_store_open") == 1
    assert registry.get_sample_value("gateway_ledger_events") == 0
    assert registry.get_sample_value("gateway_ledger_last_event_timestamp_seconds") is None

    fill(store, events=7, skus=["A", "B", "C"],
         alerts=[("recall", "A", "L1"), ("recall", "B", ""), ("expiry", "C", "L1")])
    # No new registration: the same collector sees the new figures on the next scrape.
    assert registry.get_sample_value("gateway_ledger_events") == 7
    assert registry.get_sample_value("gateway_ledger_last_event_timestamp_seconds") == 1_700_000_006.0
    assert registry.get_sample_value("gateway_ledger_skus") == 3
    assert registry.get_sample_value("gateway_ledger_alerts", {"kind": "recall"}) == 2
    assert registry.get_sample_value("gateway_ledger_alerts", {"kind": "expiry"}) == 1
    assert registry.get_sample_value("gateway_ledger_alerts", {"kind": "A"}) is None  # never a SKU as a label
    assert registry.get_sample_value("gateway_master_version", {"kind": "promotions"}) is None
    with store.begin(write=True) as tx:
        tx.put("master", "promotions", {"version": 17, "issued_ms": 0, "effective_ms": None})
    assert registry.get_sample_value("gateway_master_version", {"kind": "promotions"}) == 17
    assert registry.get_sample_value("gateway_store_size_bytes") == os.path.getsize(
        os.path.join(store.path, "data.mdb"))
    free = registry.get_sample_value("gateway_store_free_bytes")
    assert free == pytest.approx(store.space_left(), rel=0.01)
    assert 0 < free < store.map_size


def test_ledger_collector_ends_its_read_transaction(store):
    held = []

    def read():
        held.append(store.read())
        return held[-1]

    registry = CollectorRegistry()
    registry.register(LedgerCollector(read))
    for _ in range(3):
        assert registry.get_sample_value("gateway_store_open") == 1
    assert len(held) == 3
    for tx in held:  # ended, not left for the garbage collector: an open reader pins old pages
        with pytest.raises(lmdb.Error):
            tx.txn.get(b"last_seq")


def test_ledger_collector_without_a_store_reports_it_closed(tmp_path):
    registry = CollectorRegistry()
    registry.register(LedgerCollector(lambda: None))
    assert registry.get_sample_value("gateway_store_open") == 0
    assert registry.get_sample_value("gateway_ledger_events") is None

    s = Store(str(tmp_path / "data"), map_size=16 << 20)
    s.close()
    closed = CollectorRegistry()
    closed.register(LedgerCollector(s.read))  # lmdb raises on a closed environment
    assert closed.get_sample_value("gateway_store_open") == 0


def test_make_registry_is_fresh_and_has_process_figures():
    first, second = make_registry(), make_registry()
    Counter("gateway_test_things_total", "things", registry=first).inc(3)
    assert first.get_sample_value("gateway_test_things_total") == 3
    assert second.get_sample_value("gateway_test_things_total") is None
    assert first.get_sample_value("python_info", {
        "implementation": "CPython", "major": "3", "minor": "11",
        "patchlevel": __import__("platform").python_version_tuple()[2],
        "version": __import__("platform").python_version()}) == 1
    assert first.get_sample_value("process_start_time_seconds") > 0


def fetch(url: str, path: str, method: str = "GET", headers: dict | None = None):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


async def get(url, path, method="GET", headers=None):
    return await trio.to_thread.run_sync(fetch, url, path, method, headers)


class Probes:
    """What the composition root would report: flipped by the test as parts start and stop."""

    def __init__(self):
        self.core_running = True
        self.store_open = False
        self.core_started = False

    def health(self):
        return self.core_running, {"core_loop": "running" if self.core_running else "stopped"}

    def ready(self):
        return self.store_open and self.core_started, {"store": self.store_open, "core_loop": self.core_started}


async def test_metrics_health_and_ready_over_http(store):
    fill(store, events=3, skus=["A"], alerts=[("recall", "A", "L1")])
    registry = CollectorRegistry()
    registry.register(LedgerCollector(store.read))
    probes = Probes()
    app = make_app(registry, probes.health, probes.ready)
    async with trio.open_nursery() as nursery:
        [url] = await nursery.start(serve_asgi, app, "127.0.0.1:0")

        status, headers, body = await get(url, "/metrics")
        assert status == 200
        assert headers["content-type"].startswith("text/plain; version=0.0.4")
        text = body.decode()
        assert "gateway_ledger_events 3.0" in text
        assert 'gateway_ledger_alerts{kind="recall"} 1.0' in text
        assert "# TYPE gateway_store_free_bytes gauge" in text

        fill(store, events=2, skus=[], alerts=[])
        status, _, body = await get(url, "/metrics")
        assert "gateway_ledger_events 5.0" in body.decode()  # read at scrape time, not cached

        status, headers, body = await get(url, "/metrics", headers={"Accept": "application/openmetrics-text"})
        assert status == 200 and headers["content-type"].startswith("application/openmetrics-text")
        assert body.decode().endswith("# EOF\n")

        status, headers, body = await get(url, "/healthz")
        assert (status, json.loads(body)) == (200, {"ok": True, "details": {"core_loop": "running"}})
        assert headers["content-type"] == "application/json"

        status, _, body = await get(url, "/readyz")
        assert status == 503
        assert json.loads(body) == {"ok": False, "details": {"store": False, "core_loop": False}}

        probes.store_open = True
        assert (await get(url, "/readyz"))[0] == 503  # store open, core loop not yet started
        probes.core_started = True
        status, _, body = await get(url, "/readyz")
        assert (status, json.loads(body)["ok"]) == (200, True)

        probes.core_running = False
        status, _, body = await get(url, "/healthz")
        assert (status, json.loads(body)["details"]) == (503, {"core_loop": "stopped"})
        nursery.cancel_scope.cancel()


async def test_http_edges(store):
    def broken():
        raise RuntimeError("the core loop object is gone")

    registry = CollectorRegistry()
    registry.register(LedgerCollector(store.read))
    app = make_app(registry, broken, lambda: (True, {}))
    async with trio.open_nursery() as nursery:
        [url] = await nursery.start(serve_asgi, app, "127.0.0.1:0")

        status, _, body = await get(url, "/healthz")
        assert status == 503
        assert "the core loop object is gone" in json.loads(body)["details"]["error"]

        status, _, body = await get(url, "/nope")
        assert status == 404 and b"/metrics" in body

        status, headers, _ = await get(url, "/metrics", method="POST")
        assert status == 405 and headers["allow"] == "GET, HEAD"

        status, headers, body = await get(url, "/metrics", method="HEAD")
        assert status == 200 and body == b"" and int(headers["content-length"]) > 0

        status, _, body = await get(url, "/readyz?verbose=1")  # a query string does not change the route
        assert status == 200 and json.loads(body) == {"ok": True, "details": {}}
        nursery.cancel_scope.cancel()
