"""Choose the compiled modules or their pure-Python twins, once, at import.

`GATEWAY_PURE_PYTHON=1` forces the twins; `GATEWAY_REQUIRE_EXTENSIONS=1` makes a missing compiled
module an error, so a broken build never passes as a pure-Python run.
"""
from __future__ import annotations

import importlib
import os

PURE = os.environ.get("GATEWAY_PURE_PYTHON") == "1"
REQUIRE = os.environ.get("GATEWAY_REQUIRE_EXTENSIONS") == "1"


def load(name: str):
    """`core_ext._<name>_c` unless forced or missing, else `core_ext._<name>_py`."""
    if not PURE:
        try:
            return importlib.import_module(f"core_ext._{name}_c")
        except ImportError:
            if REQUIRE:
                raise
    return importlib.import_module(f"core_ext._{name}_py")


ledger = load("ledger")


def __getattr__(name: str):
    # The promotion engine, the sale path and the upstream's byte cutting are loaded on first use,
    # like the ledger but lazily (the sale path imports the ledger from here).
    if name in ("promo", "salepath", "docbytes"):
        module = load(name)
        globals()[name] = module
        return module
    raise AttributeError(name)
