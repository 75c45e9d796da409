"""The upstream's metrics: counters kept in process, chain positions read from LMDB at scrape time."""
from __future__ import annotations

import time

import msgpack
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily

from core_ext import u64

from ._sealer import ACKED, Settings, read_head


def disk_pressure(store) -> bool:
    """True when the store is nearly full: new sales are then refused (UNAVAILABLE) so that nothing
    already accepted, unacknowledged batches above all, has to be dropped to make room."""
    return store.nearly_full()


class _ChainCollector:
    """Reads the chain's positions in one read transaction per scrape, so they never disagree."""

    def __init__(self, store, settings: Settings, clock):
        self.store = store
        self.settings = settings
        self.clock = clock

    def describe(self):
        # Described up front without reading the store (registering must not touch LMDB).
        return [GaugeMetricFamily(name, doc) for name, doc in _GAUGES]

    def collect(self):
        now_ms = self.clock() * 1000
        with self.store.read() as tx:
            head = read_head(tx)
            acked = tx.meta(ACKED, 0)
            values = {
                "gateway_upstream_last_seq": head.seq,
                "gateway_upstream_acked_seq": acked,
                "gateway_upstream_backlog_events": tx.last_seq() - head.last_event,
                "gateway_upstream_unacked_age_seconds": _age_s(now_ms, _oldest_unacked_ms(tx, head, acked)),
                "gateway_upstream_unsealed_age_seconds": _age_s(now_ms, _oldest_unsealed_ms(tx, head)),
                "gateway_upstream_seal_max_age_seconds": _seal_max_age_s(tx, self.settings),
            }
        values["gateway_upstream_disk_full"] = 1 if disk_pressure(self.store) else 0
        for name, doc in _GAUGES:
            yield GaugeMetricFamily(name, doc, value=values[name])


def _oldest_unacked_ms(tx, head, acked: int):
    """When the oldest batch the ERP has not acknowledged was sealed, or None when all are."""
    if acked >= head.seq:
        return None
    # Unacknowledged batches are not pruned (with [nats] trust_stream, one the stream holds may be: then
    # the ERP's acknowledgement is not what this store watches, and the age reads 0).
    raw = tx.get_raw("batches", u64(acked + 1))
    # The envelope is a map; its body stays compressed bytes, so reading the header costs little.
    return msgpack.unpackb(raw, raw=False)["created_ms"] if raw is not None else None


def _oldest_unsealed_ms(tx, head):
    """When the oldest committed event not yet in a batch was recorded, or None when none waits."""
    if tx.last_seq() <= head.last_event:
        return None
    event = tx.event(head.last_event + 1)
    return event.get("ts_ms") if isinstance(event, dict) else None


def _seal_max_age_s(tx, settings: Settings) -> float:
    """batch_max_age_s in force, as `_sealer.limits` decides it, from the policy document alone (the
    stored policy, `core_ext._master.apply`): a reader's `master.policy` would decode the whole catalog
    at every scrape."""
    return float((tx.meta("policy") or {}).get("batch_max_age_s") or settings.batch_max_age_s)


def _age_s(now_ms: float, then_ms) -> float:
    return 0.0 if then_ms is None else max(0.0, (now_ms - then_ms) / 1000.0)


_GAUGES = (
    ("gateway_upstream_last_seq", "Seq of the last sealed batch."),
    ("gateway_upstream_acked_seq", "Highest batch seq the ERP acknowledged."),
    ("gateway_upstream_backlog_events", "Committed ledger events not yet sealed into a batch."),
    ("gateway_upstream_unacked_age_seconds", "Age of the oldest sealed batch the ERP has not acknowledged "
     "(0 when every batch is acknowledged)."),
    ("gateway_upstream_unsealed_age_seconds", "Age of the oldest committed event not yet sealed into a batch "
     "(0 when none waits)."),
    ("gateway_upstream_seal_max_age_seconds", "batch_max_age_s in force: waiting events are sealed once the "
     "oldest is this old."),
    ("gateway_upstream_disk_full", "1 while the store is nearly full and new sales are refused."),
)


class Metrics:
    """The upstream's metrics in `registry`; with `store`, the chain gauges are read from it at scrape."""

    def __init__(self, registry: CollectorRegistry, store=None, *, settings=None, clock=time.time):
        self.batches_sealed = Counter("gateway_upstream_batches_sealed", "Batches sealed.", registry=registry)
        self.requests = Counter("gateway_upstream_requests", "UP/1 requests answered, by route and status.",
                                ["route", "status"], registry=registry)
        self.push_failures = Counter("gateway_upstream_push_failures",
                                     "Push attempts that failed (no answer or not 2xx).", registry=registry)
        if store is not None:
            # `settings`: the [upstream] section (or Settings), for batch_max_age_s when the policy sets none.
            registry.register(_ChainCollector(store, Settings.from_config(settings), clock))

    def sealed(self, n: int) -> None:
        if n:
            self.batches_sealed.inc(n)

    def request(self, route: str, status: int) -> None:
        self.requests.labels(route=route, status=str(status)).inc()
