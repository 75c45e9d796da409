"""The gauges the ops kit's alerts read, on a real LMDB store: the ERP backlog's age, sealing's age and
limit, master data overdue, the map and its floor. Each is read at scrape time, on the collector's clock."""
from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry

import upstream
from core_ext import Store
from gateway._metrics import LedgerCollector
from upstream._sealer import ACKED, Settings, seal_pending

from ._data import apply_master

T0_MS = 1_700_000_000_000


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "data"), map_size=64 << 20, min_free_bytes=1 << 20)
    yield s
    s.close()


def append(store: Store, n: int, *, first_ms: int) -> None:
    with store.begin(write=True) as tx:
        for i in range(n):
            tx.append_event({"type": "receipt", "id": f"t:{first_ms}:{i}", "ts_ms": first_ms + i * 1000,
                             "source": "t", "moves": []})


def seal(store: Store, *, now_ms: int, settings: Settings) -> None:
    with store.begin(write=True) as tx:
        seal_pending(tx, store_id="S1", private_key=Ed25519PrivateKey.generate(), now_ms=now_ms, settings=settings,
                     flush=False)


def ack(store: Store, seq: int) -> None:
    with store.begin(write=True) as tx:
        tx.set_meta(ACKED, seq)


def test_the_backlog_ages_are_read_from_the_store_at_scrape_time(store):
    settings = Settings(batch_max_events=2, batch_max_age_s=7.5)
    clock = Clock(T0_MS / 1000)
    registry = CollectorRegistry()
    upstream.Metrics(registry, store, settings=settings, clock=clock)
    value = registry.get_sample_value
    assert value("gateway_upstream_unacked_age_seconds") == 0      # nothing sealed: nothing waits
    assert value("gateway_upstream_unsealed_age_seconds") == 0
    assert value("gateway_upstream_seal_max_age_seconds") == 7.5

    append(store, 5, first_ms=T0_MS)                  # events at T0 .. T0+4 s
    clock.t = T0_MS / 1000 + 10
    assert value("gateway_upstream_unsealed_age_seconds") == 10.0
    seal(store, now_ms=T0_MS + 20_000, settings=settings)   # batches 1 and 2 (events 1-4); event 5 waits
    clock.t = T0_MS / 1000 + 80
    assert value("gateway_upstream_unacked_age_seconds") == 60.0   # batch 1, sealed at T0+20 s
    assert value("gateway_upstream_unsealed_age_seconds") == 76.0  # event 5, recorded at T0+4 s

    ack(store, 1)
    seal(store, now_ms=T0_MS + 50_000, settings=Settings(batch_max_events=1))  # event 5 as batch 3
    assert value("gateway_upstream_unacked_age_seconds") == 60.0   # batch 2, same seal as batch 1
    assert value("gateway_upstream_unsealed_age_seconds") == 0
    ack(store, 3)
    assert value("gateway_upstream_unacked_age_seconds") == 0


def test_the_seal_age_limit_is_the_policys_when_it_sets_one(store):
    registry = CollectorRegistry()
    upstream.Metrics(registry, store, settings={"batch_max_age_s": 5.0})
    assert registry.get_sample_value("gateway_upstream_seal_max_age_seconds") == 5.0
    apply_master(store, "policy", {"negative_stock": "allow", "expiry_warn_days": 30, "points_offline_cap": 500,
                                   "points_value_cents": 1, "batch_max_age_s": 900})
    assert registry.get_sample_value("gateway_upstream_seal_max_age_seconds") == 900


def test_master_data_overdue_counts_from_the_earliest_due_document(store):
    clock = Clock(T0_MS / 1000)
    registry = CollectorRegistry()
    registry.register(LedgerCollector(store.read, clock=clock))
    with store.begin(write=True) as tx:
        tx.put("master", "policy", {"version": 3, "issued_ms": 0, "effective_ms": None, "pending": [
            {"version": 5, "issued_ms": 0, "effective_ms": T0_MS + 60_000},
            {"version": 4, "issued_ms": 0, "effective_ms": T0_MS + 30_000}]})
        tx.put("master", "catalog", {"version": 2, "issued_ms": 0, "effective_ms": None, "pending": []})
    value = registry.get_sample_value
    assert value("gateway_master_pending_overdue_seconds", {"kind": "policy"}) == 0   # sent ahead, not yet due
    clock.t += 45
    assert value("gateway_master_pending_overdue_seconds", {"kind": "policy"}) == 15.0
    clock.t += 100
    assert value("gateway_master_pending_overdue_seconds", {"kind": "policy"}) == 115.0
    assert value("gateway_master_pending_overdue_seconds", {"kind": "catalog"}) == 0


def test_the_map_and_its_floor_are_exported_beside_the_free_space(store):
    registry = CollectorRegistry()
    registry.register(LedgerCollector(store.read))
    assert registry.get_sample_value("gateway_store_map_size_bytes") == 64 << 20
    assert registry.get_sample_value("gateway_store_min_free_bytes") == 1 << 20
    assert 0 < registry.get_sample_value("gateway_store_free_bytes") <= 64 << 20
