"""Counters and timings of the POS/1 LAN API."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class Metrics:
    """Labels stay bounded: terminals come from the configuration, routes from the route table."""

    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter(
            "gateway_pos_requests_total", "POS/1 requests answered, by terminal, route and status",
            ["terminal", "route", "status"], registry=registry)
        self.rejects = Counter(
            "gateway_pos_rejects_total", "POS/1 requests answered ok: false, by error code",
            ["reason"], registry=registry)
        self.seconds = Histogram(
            "gateway_pos_request_seconds", "Time from a POS/1 request's arrival to its answer",
            ["route"], registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
