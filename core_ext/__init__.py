"""What every part of the gateway stands on: requests and responses, errors, the store, the ledger
and the promotion engine (compiled, or their pure-Python twins; see `_select.py`)."""
from . import _errors as errors
from . import _limits as limits
from ._errors import GatewayError, Refused, StoreError, bad_request
from ._limits import text_problem
from ._select import ledger
from ._store import Store, Tx, is_total_key, lot_key, split_lot_key, total_key, u64, from_u64
from ._types import Request, Response, Submit, is_int

FLAVOUR = ledger.FLAVOUR

__all__ = [
    "errors", "limits", "text_problem", "GatewayError", "Refused", "StoreError", "ledger", "Store", "Tx", "lot_key",
    "split_lot_key", "total_key", "is_total_key", "u64", "from_u64", "Request", "Response", "Submit", "FLAVOUR", "bad_request", "is_int",
]

from ._barcodes import Scan, ScanError, parse_scan  # noqa: E402
from ._handlers import HANDLERS  # noqa: E402  (after the names the handlers import)
from ._csv_files import MAX_SLICE_DOCS, MAX_SLICE_LINES  # noqa: E402
from ._types import Settings  # noqa: E402
from ._request_checks import check_request  # noqa: E402
from ._logs import RateLimitedLog  # noqa: E402

__all__ += ["Scan", "ScanError", "parse_scan", "HANDLERS", "Settings", "check_request", "RateLimitedLog",
            "MAX_SLICE_DOCS", "MAX_SLICE_LINES"]

# The public faces of the parts other packages use: HTTP steps the apps share, barcode parsing,
# master data, alerts, ERP movements and the typed records.
from . import _alerts as alerts  # noqa: E402
from . import _asgi as asgi  # noqa: E402
from . import _barcodes as barcodes  # noqa: E402
from . import _master as master  # noqa: E402
from . import _peer as peer  # noqa: E402
from . import _tokens as tokens  # noqa: E402
from ._records import Item, Move, SaleLine, answer_ok, answer_refused  # noqa: E402
from ._stock import post_movement  # noqa: E402

__all__ += ["alerts", "asgi", "barcodes", "master", "peer", "tokens", "Item", "Move", "SaleLine", "answer_ok", "answer_refused",
            "post_movement"]

from ._inspect import (day_sales, events_backwards, latest_refusals, ledger_head, master_versions,  # noqa: E402
                       stock_alerts, stock_of)

__all__ += ["day_sales", "events_backwards", "latest_refusals", "ledger_head", "master_versions", "stock_alerts",
            "stock_of"]

from ._day_figures import differences as day_differences, recompute_day  # noqa: E402
from ._days import report as day_report  # noqa: E402

__all__ += ["day_differences", "recompute_day", "day_report"]

from ._writer_state import freeze_loaded_state, load_writer_state  # noqa: E402

__all__ += ["freeze_loaded_state", "load_writer_state"]

# Stored events cut into upstream documents, sealed bodies counted (compiled, or the pure twin).
from ._select import docbytes  # noqa: E402

__all__ += ["docbytes"]
