"""What every part of the gateway stands on: requests and responses, errors, the store, the ledger
and the promotion engine (compiled, or their pure-Python twins; see `_select.py`)."""
from . import _errors as errors
from . import _limits as limits
from ._errors import GatewayError, Refused, StoreError, bad_request
from ._limits import text_problem
from ._select import ledger
from ._store import Store, Tx, lot_key, split_lot_key, u64, from_u64
from ._types import Request, Response, Submit, is_int

FLAVOUR = ledger.FLAVOUR

__all__ = [
    "errors", "limits", "text_problem", "GatewayError", "Refused", "StoreError", "ledger", "Store", "Tx", "lot_key",
    "split_lot_key", "u64", "from_u64", "Request", "Response", "Submit", "FLAVOUR", "bad_request", "is_int",
]

from ._barcodes import Scan, ScanError, parse_scan  # noqa: E402
from ._handlers import HANDLERS  # noqa: E402  (after the names the handlers import)
from ._csv_files import MAX_SLICE_DOCS, MAX_SLICE_LINES  # noqa: E402
from ._types import Settings  # noqa: E402
from ._request_checks import check_request  # noqa: E402

from ._day_figures import differences as day_differences, recompute_day  # noqa: E402
from ._days import report as day_report  # noqa: E402

__all__ += ["Scan", "ScanError", "parse_scan", "HANDLERS", "Settings", "check_request",
            "MAX_SLICE_DOCS", "MAX_SLICE_LINES", "day_differences", "recompute_day", "day_report"]
