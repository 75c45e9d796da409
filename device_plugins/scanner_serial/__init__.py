"""Barcode scanners on a serial line (shared/spec/scanners-and-files.md).

`serve(device, submit, metrics)` is the trio task for one scanner; `ScannerConnection` splits its
bytes into parsed scans without I/O; `Metrics(registry)` holds the plugin's counters.
"""
from ._events import NEED_DATA, ConnectionClosed, Rejected, Scanned
from ._metrics import Metrics
from ._protocol import TERMINATORS, ScannerConnection
from ._task import ROLES, serve

__all__ = ["NEED_DATA", "ConnectionClosed", "Rejected", "Scanned", "Metrics", "TERMINATORS",
           "ScannerConnection", "ROLES", "serve"]
