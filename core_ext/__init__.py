"""What every part of the gateway stands on: requests and responses, errors, the store, the ledger
and the promotion engine (compiled, or their pure-Python twins; see `_select.py`)."""
from . import _errors as errors
from ._errors import GatewayError, Refused, StoreError, bad_request
from ._select import ledger
from ._store import Store, Tx, lot_key, split_lot_key, u64, from_u64
from ._types import Request, Response, Submit, is_int

FLAVOUR = ledger.FLAVOUR

__all__ = [
    "errors", "GatewayError", "Refused", "StoreError", "ledger", "Store", "Tx", "lot_key",
    "split_lot_key", "u64", "from_u64", "Request", "Response", "Submit", "FLAVOUR", "bad_request", "is_int",
]

from ._barcodes import Scan, ScanError, parse_scan  # noqa: E402
from ._handlers import HANDLERS  # noqa: E402  (after the names the handlers import)
from ._types import Settings  # noqa: E402
from ._logs import RateLimitedLog  # noqa: E402

__all__ += ["Scan", "ScanError", "parse_scan", "HANDLERS", "Settings", "RateLimitedLog"]
