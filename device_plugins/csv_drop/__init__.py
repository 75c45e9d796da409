"""Legacy POS CSV file drops: a watched directory whose settled `*.csv` files become sales."""
from ._mapper import FIELDS, CsvMapping, CsvResult, RowError, map_csv
from ._metrics import Metrics
from ._options import CsvDropError, check_options
from ._watcher import CsvDrop, SettleTracker, serve

__all__ = [
    "FIELDS", "CsvDrop", "CsvDropError", "CsvMapping", "CsvResult", "Metrics", "RowError",
    "SettleTracker", "check_options", "map_csv", "serve",
]
