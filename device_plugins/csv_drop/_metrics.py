"""Counters of the CSV file drops."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class Metrics:
    """One set per registry; every `csv_drop` device labels its own series with its name."""

    def __init__(self, registry: CollectorRegistry):
        self.files = Counter(
            "gateway_csv_files_total", "CSV files taken, by outcome "
            "(applied, replayed, empty, rejected, retry)",
            ["device", "outcome"], registry=registry)
        self.rows = Counter(
            "gateway_csv_rows_total", "Data rows of CSV files applied",
            ["device"], registry=registry)
        self.rejects = Counter(
            "gateway_csv_rejects_total", "Reasons CSV rows were refused: a mapper check "
            "(qty, expiry, header, ...) or the core's error code",
            ["device", "reason"], registry=registry)
