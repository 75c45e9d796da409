"""Metrics of the core loop: requests by kind and outcome, refusals by code, group sizes, commit and sync
times."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


# Fine below 10 ms, where a healthy disk's syncs fall and a till's answer is decided.
SYNC_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class CoreMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter("gateway_core_requests_total", "Requests handled by the core loop",
                                ["kind", "outcome"], registry=registry)
        self.refusals = Counter("gateway_core_refusals_total", "Requests refused, by stable error code",
                                ["kind", "code"], registry=registry)
        self.group_size = Histogram("gateway_core_group_size_requests", "Requests committed together",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=registry)
        self.commit_seconds = Histogram("gateway_core_commit_seconds", "Time to apply and durably commit a group",
                                        registry=registry)
        # The disk's own part of every answer, apart from the applying: a tail here is the disk's.
        self.sync_seconds = Histogram("gateway_core_sync_seconds",
                                      "Time of a group's durable commit alone: LMDB writing its pages and syncing them",
                                      buckets=SYNC_BUCKETS, registry=registry)
        self.groups_cut = Counter("gateway_core_groups_cut_total",
                                  "Groups that used their time budget; the requests left wait for the next group",
                                  registry=registry)
        self.hold_offs_ended = Counter("gateway_core_hold_offs_ended_total",
                                       "Groups still being applied when the event loop stopped holding off for "
                                       "them (after 50 ms); it served the devices beside them",
                                       registry=registry)
        self.queue_depth = Gauge("gateway_core_queue_depth_requests", "Requests waiting for the writer",
                                 registry=registry)
        # Each (kind, outcome)'s counter, looked up once: `labels()` costs about 1 µs of the writer's
        # time a request (its checks and lock), where the counter's own increment costs 0.4.
        self._requests_by: dict[tuple[str, str], object] = {}

    def count(self, request, response) -> None:
        body = response.body
        if body.get("ok"):
            outcome = "replayed" if response.replayed else "ok"
        else:
            outcome = "refused"
            self.refusals.labels(request.kind, body.get("err", "")).inc()
        key = (request.kind, outcome)
        counter = self._requests_by.get(key)
        if counter is None:
            counter = self._requests_by[key] = self.requests.labels(*key)
        counter.inc()

    def observe_group(self, size: int, seconds: float) -> None:
        self.group_size.observe(size)
        self.commit_seconds.observe(seconds)
