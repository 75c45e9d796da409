"""Both flavours of a compiled core module, for fixtures parametrised over them."""
from __future__ import annotations

import importlib
import os

import pytest


def twins(name: str) -> list:
    """`pytest.param`s of `core_ext._<name>_py` and, when built, `core_ext._<name>_c`.

    The compiled one may be missing only in a pure-Python run: anywhere else that is a broken build.
    """
    params = [pytest.param(importlib.import_module(f"core_ext._{name}_py"), id="python")]
    try:
        params.append(pytest.param(importlib.import_module(f"core_ext._{name}_c"), id="cython"))
    except ImportError:
        if os.environ.get("GATEWAY_PURE_PYTHON") != "1":
            raise RuntimeError(f"the compiled core_ext._{name}_c is missing; build it with `pip install -e .`")
    return params
