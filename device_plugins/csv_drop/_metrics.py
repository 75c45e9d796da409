"""Counters and gauges of the CSV file drops."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class Metrics:
    """One set per registry; every `csv_drop` device labels its own series with its name."""

    def __init__(self, registry: CollectorRegistry):
        self.files = Counter(
            "gateway_csv_files_total", "CSV files taken, by outcome "
            "(applied, replayed, empty, rejected, retry)",
            ["device", "outcome"], registry=registry)
        self.rows = Counter(
            "gateway_csv_rows_total", "Data rows of CSV files applied (as each slice commits)",
            ["device"], registry=registry)
        self.baskets = Counter(
            "gateway_csv_baskets_total", "Baskets of CSV files applied (as each slice commits)",
            ["device"], registry=registry)
        self.slices = Counter(
            "gateway_csv_slices_total", "Slices of CSV files committed",
            ["device"], registry=registry)
        self.rejects = Counter(
            "gateway_csv_rejects_total", "Reasons CSV rows were refused: a mapper check "
            "(qty, expiry, header, ...) or the core's error code",
            ["device", "reason"], registry=registry)
        self.alerts = Counter(
            "gateway_csv_alerts_total", "Recalled or expired lots a CSV file sold, applied and alerted",
            ["device", "kind"], registry=registry)
        self.in_progress = Gauge(
            "gateway_csv_files_in_progress", "CSV files being applied now (0 or 1 per device)",
            ["device"], registry=registry)
        self.slice_lines = Gauge(
            "gateway_csv_slice_lines", "Lines the next slice of the current file may carry, sized "
            "to hold the writer about slice_ms", ["device"], registry=registry)
        self.progress = Gauge(
            "gateway_csv_file_progress_ratio", "Share of the current file's baskets applied "
            "(0 to 1; 1 once done)", ["device"], registry=registry)
