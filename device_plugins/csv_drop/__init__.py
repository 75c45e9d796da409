"""Legacy POS CSV file drops: a watched directory whose settled `*.csv` files become sales."""
from ._index import BasketIndex
from ._mapper import FIELDS, CsvMapping, CsvResult, ErrorList, RowError, Scanned, map_csv, scan
from ._metrics import Metrics
from ._options import CsvDropError, check_options
from ._watcher import CsvDrop, SettleTracker, serve

__all__ = [
    "FIELDS", "BasketIndex", "CsvDrop", "CsvDropError", "CsvMapping", "CsvResult", "ErrorList", "Metrics",
    "RowError", "Scanned", "SettleTracker", "check_options", "map_csv", "scan", "serve",
]
