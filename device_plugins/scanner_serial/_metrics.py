"""The serial scanner plugin's metrics, registered in the registry the gateway passes in."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class Metrics:
    def __init__(self, registry: CollectorRegistry):
        self.scans = Counter(
            "gateway_scanner_scans_total", "Scans read and submitted", ["device"],
            registry=registry)
        self.rejects = Counter(
            "gateway_scanner_rejects_total", "Scans that could not be read, by reason",
            ["device", "reason"], registry=registry)
        self.refused = Counter(
            "gateway_scanner_refused_total", "Scans the core refused, by error code",
            ["device", "err"], registry=registry)
        self.log_suppressed = Counter(
            "gateway_scanner_log_lines_suppressed_total",
            "Log lines not written because the same message repeated within a minute (summarised)",
            ["device"], registry=registry)
        self.connected = Gauge(
            "gateway_scanner_connected", "1 while the scanner's port is open", ["device"],
            registry=registry)
