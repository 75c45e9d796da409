"""The metrics registry, the figures read from LMDB at scrape time, and the /metrics + health app.

The exposition is served by the gateway's own HTTP stack (`gateway._http.serve_asgi`), not by
prometheus-client's thread server, so one event loop owns every listener and a scrape cannot race
the shutdown of the store.
"""
from __future__ import annotations

import json
import logging
import time
from collections import Counter
from typing import Callable

import lmdb
import trio
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client import Counter as PromCounter
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core_ext._asgi import EDGE_REASONS, header_problem, lifespan, respond
from core_ext._errors import StoreError

log = logging.getLogger("gateway.metrics")

Probe = Callable[[], "tuple[bool, dict]"]


def make_registry() -> CollectorRegistry:
    """A registry of our own (never the global one) with the process, platform and GC figures."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


# The listeners, by the name of their configuration section: the `listener` label's values.
LISTENERS = ("pos_api", "upstream", "metrics")


class EdgeMetrics:
    """Requests every HTTP listener refused before the core: by listener and reason class.

    Both labels come from fixed lists (LISTENERS, `core_ext._asgi.EDGE_REASONS`), never from what a
    client sent, so the series stay few whatever arrives.
    """

    def __init__(self, registry: CollectorRegistry):
        self.refused = PromCounter(
            "gateway_http_refused", "HTTP requests refused at the edge, before the core, by listener "
            "and reason class", ["listener", "reason"], registry=registry)

    def counter(self, listener: str) -> Callable[[str], None]:
        """`edge(reason)` for one listener's app."""
        if listener not in LISTENERS:
            raise ValueError(f"unknown listener {listener!r}")

        def edge(reason: str) -> None:
            self.refused.labels(listener, reason if reason in EDGE_REASONS else "bad_request").inc()
        return edge


class LedgerCollector(Collector):
    """Ledger and store figures, read in one read transaction at each scrape.

    `read_store` is `Store.read` (or anything returning a `core_ext.Tx`), or returns None while the
    store is not open; then only `gateway_store_open 0` is reported.
    """

    def __init__(self, read_store: Callable, *, clock: Callable[[], float] = time.time):
        self._read_store = read_store
        self._clock = clock

    def describe(self):
        # Names only, so registering does not open a transaction.
        return list(_ledger_families().values())

    def collect(self):
        opened, figures = self._read()
        f = _ledger_families()
        f["gateway_store_open"].add_metric([], 1 if opened else 0)
        if opened:
            f["gateway_ledger_events"].add_metric([], figures["last_seq"])
            if figures["last_ts_ms"] is not None:
                f["gateway_ledger_last_event_timestamp_seconds"].add_metric([], figures["last_ts_ms"] / 1000.0)
            f["gateway_ledger_skus"].add_metric([], figures["skus"])
            for kind, n in sorted(figures["alerts"].items()):
                f["gateway_ledger_alerts"].add_metric([kind], n)
            f["gateway_store_size_bytes"].add_metric([], figures["size"])
            f["gateway_store_free_bytes"].add_metric([], figures["free"])
            f["gateway_store_map_size_bytes"].add_metric([], figures["map_size"])
            f["gateway_store_min_free_bytes"].add_metric([], figures["min_free"])
            for kind, version in sorted(figures["versions"].items()):
                f["gateway_master_version"].add_metric([kind], version)
            for kind, overdue in sorted(figures["overdue"].items()):
                f["gateway_master_pending_overdue_seconds"].add_metric([kind], overdue)
        return [family for family in f.values() if family.samples]

    def _read(self) -> tuple[bool, dict]:
        try:
            tx = self._read_store()
        except (lmdb.Error, StoreError) as exc:
            log.warning("metrics: the store cannot be read: %s", exc)
            return False, {}
        if tx is None:
            return False, {}
        try:
            last_seq = tx.last_seq()
            last = tx.event(last_seq) if last_seq else None
            # Key = sku \0 kind \0 lot (core_ext._alerts.alert_key); the label is the kind, never the SKU.
            alerts = Counter(key.split(b"\x00")[1].decode("utf-8", "replace") for key, _ in tx.items("alerts"))
            rows = {key.decode(): row for key, row in tx.items("master")}
            versions = {kind: row.get("version", 0) for kind, row in rows.items()}
            figures = {
                "last_seq": last_seq,
                "last_ts_ms": last.get("ts_ms") if isinstance(last, dict) else None,
                "skus": tx.meta("skus", 0),
                "alerts": alerts,
                "size": tx.store.file_size(),
                "free": max(0, tx.store.space_left()),
                "map_size": tx.store.map_size,
                "min_free": tx.store.min_free_bytes,
                "versions": versions,
                "overdue": {kind: _overdue_s(row, self._clock()) for kind, row in rows.items()},
            }
        except lmdb.Error as exc:
            log.warning("metrics: the store cannot be read: %s", exc)
            return False, {}
        finally:
            tx.abort()
        return True, figures


def _overdue_s(row: dict, now_s: float) -> float:
    """How long the earliest document of a kind waiting for its `effective_ms` has been due (0: none due).

    The activation timer brings a document into force when it is due, so anything above a few seconds
    means the timer or the writer is not running."""
    due = [p["effective_ms"] for p in row.get("pending") or () if p["effective_ms"] <= now_s * 1000]
    return (now_s * 1000 - min(due)) / 1000.0 if due else 0.0


_LEDGER_GAUGES = (
    ("gateway_store_open", "1 while the LMDB store is open and readable", None),
    ("gateway_ledger_events", "Sequence number of the last ledger event (events ever appended)", None),
    ("gateway_ledger_last_event_timestamp_seconds", "When the last ledger event was recorded (Unix time)", None),
    ("gateway_ledger_skus", "SKUs with a stock balance in the ledger", None),
    ("gateway_ledger_alerts", "Open alerts, by kind", ["kind"]),
    ("gateway_master_version", "Version in force of each master-data kind (promotions: the rule set pricing sales)",
     ["kind"]),
    ("gateway_store_size_bytes", "Size of the LMDB data file", None),
    ("gateway_store_free_bytes", "Bytes the store can still grow by (the smaller of map and file system)", None),
    ("gateway_store_map_size_bytes", "Size of the LMDB map: the most the store can ever hold", None),
    ("gateway_store_min_free_bytes", "The floor: below this much free space new sales are refused", None),
    ("gateway_master_pending_overdue_seconds", "How long the earliest master document waiting for its "
     "effective_ms has been due without coming into force (0: none due), by kind", ["kind"]),
)


def _ledger_families() -> dict[str, GaugeMetricFamily]:
    return {name: GaugeMetricFamily(name, doc, labels=labels) for name, doc, labels in _LEDGER_GAUGES}


def make_app(registry: CollectorRegistry, health: Probe, ready: Probe, *, edge=None, pages=None):
    """ASGI app: GET /metrics, /healthz and /readyz; `edge(reason)` counts what it refuses unanswered.

    `pages` maps further paths to `handle(scope, send)` (the status page, `gateway._status_page`),
    which answer on their own terms (their own token).

    `health()` and `ready()` return `(ok, details)`; ok answers 200, otherwise 503, with the details
    as JSON. /healthz says the process and the core loop run (restart it if not); /readyz says the
    store is open, the core loop runs and every listener and device task is up (send it traffic).
    """
    return MetricsApp(registry, {"/healthz": health, "/readyz": ready}, edge or (lambda reason: None), pages or {})


class MetricsApp:
    """The metrics listener, in layers: ASGI, then header limits, then the route (the pages behind
    their own token, /metrics, the probes), then the method."""

    def __init__(self, registry: CollectorRegistry, probes: dict, count, pages: dict):
        self.registry = registry
        self.probes = probes
        self.count = count
        self.pages = pages

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, send)

    async def _http(self, scope, send) -> None:
        path, method = scope["path"], scope["method"]
        problem = header_problem(scope)
        if problem is not None:
            self.count(problem[0])
            await _respond(send, method, 431, "text/plain; charset=utf-8", problem[1].encode() + b"\n",
                           extra=[(b"connection", b"close")])
        elif path in self.pages:
            await self.pages[path](scope, send)
        elif path != "/metrics" and path not in self.probes:
            self.count("not_found")
            await _respond(send, method, 404, "text/plain; charset=utf-8", b"not found: /metrics, /healthz, /readyz\n")
        elif method not in ("GET", "HEAD"):
            self.count("method_not_allowed")
            await _respond(send, method, 405, "text/plain; charset=utf-8", b"only GET and HEAD\n",
                           extra=[(b"allow", b"GET, HEAD")])
        elif path == "/metrics":
            await self._metrics(scope, send)
        else:
            ok, details = _probe(self.probes[path])
            payload = json.dumps({"ok": ok, "details": details}, default=str, sort_keys=True).encode() + b"\n"
            await _respond(send, method, 200 if ok else 503, "application/json", payload)

    async def _metrics(self, scope, send) -> None:
        encoder, content_type = choose_encoder(_header(scope, b"accept"))
        # Collectors read LMDB and stat files: keep that off the event loop.
        body = await trio.to_thread.run_sync(encoder, self.registry)
        await _respond(send, scope["method"], 200, content_type, body)


def _probe(probe: Probe) -> tuple[bool, dict]:
    try:
        ok, details = probe()
    except Exception as exc:  # a failing check is an unhealthy answer, not a 500
        log.exception("health check failed")
        return False, {"error": repr(exc)}
    return bool(ok), dict(details or {})


def _header(scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


async def _respond(send, method: str, status: int, content_type: str, body: bytes, extra=()) -> None:
    await respond(send, status, content_type, body, extra=extra, head=method == "HEAD")
