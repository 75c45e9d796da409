"""The upstream's metrics: counters kept in process, chain positions read from LMDB at scrape time."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily

from ._sealer import ACKED, read_head


def disk_pressure(store) -> bool:
    """True when the store is nearly full: new sales are then refused (UNAVAILABLE) so that nothing
    already accepted, unacknowledged batches above all, has to be dropped to make room."""
    return store.space_left() < store.min_free_bytes


class _ChainCollector:
    """Reads the chain's positions in one read transaction per scrape, so they never disagree."""

    def __init__(self, store):
        self.store = store

    def describe(self):
        # Described up front without reading the store (registering must not touch LMDB).
        return [GaugeMetricFamily(name, doc) for name, doc in _GAUGES]

    def collect(self):
        with self.store.read() as tx:
            head = read_head(tx)
            values = {
                "gateway_upstream_last_seq": head.seq,
                "gateway_upstream_acked_seq": tx.meta(ACKED, 0),
                "gateway_upstream_backlog_events": tx.last_seq() - head.last_event,
            }
        values["gateway_upstream_disk_full"] = 1 if disk_pressure(self.store) else 0
        for name, doc in _GAUGES:
            yield GaugeMetricFamily(name, doc, value=values[name])


_GAUGES = (
    ("gateway_upstream_last_seq", "Seq of the last sealed batch."),
    ("gateway_upstream_acked_seq", "Highest batch seq the ERP acknowledged."),
    ("gateway_upstream_backlog_events", "Committed ledger events not yet sealed into a batch."),
    ("gateway_upstream_disk_full", "1 while the store is nearly full and new sales are refused."),
)


class Metrics:
    """The upstream's metrics in `registry`; with `store`, the chain gauges are read from it at scrape."""

    def __init__(self, registry: CollectorRegistry, store=None):
        self.batches_sealed = Counter("gateway_upstream_batches_sealed", "Batches sealed.", registry=registry)
        self.requests = Counter("gateway_upstream_requests", "UP/1 requests answered, by route and status.",
                                ["route", "status"], registry=registry)
        self.push_failures = Counter("gateway_upstream_push_failures",
                                     "Push attempts that failed (no answer or not 2xx).", registry=registry)
        if store is not None:
            registry.register(_ChainCollector(store))

    def sealed(self, n: int) -> None:
        if n:
            self.batches_sealed.inc(n)

    def request(self, route: str, status: int) -> None:
        self.requests.labels(route=route, status=str(status)).inc()
