"""Hypothesis, two sizes: a quick profile in `make test`, a large one under `make soak`.

A fuzz test takes the `examples` fixture-like parameter from `PROFILES` and hands its property to
`run`, which counts every input tried under the way-in's name (tests/_records.py).
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from . import _records
from ._data import stored_lot_rows, stored_totals

QUICK = 30
SOAK = 1000

# Parametrise a fuzz test with this: the soak size runs only under `-m soak`.
PROFILES = pytest.mark.parametrize("examples", [
    pytest.param(QUICK, id="quick"),
    pytest.param(SOAK, id="soak", marks=pytest.mark.soak),
])


def run(way: str, examples: int, check, *strategies) -> int:
    """Check the property `check(*values)` on `examples` inputs drawn from `strategies`; returns
    how many inputs were tried (shrinking included)."""
    tried = 0

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.tuples(*strategies))
    def prop(values):
        nonlocal tried
        tried += 1
        _records.fuzzed(way)
        check(*values)

    prop()
    return tried


# --- what a refusal must leave alone -------------------------------------------------------------

CODES = frozenset({"BAD_REQUEST", "UNKNOWN_ITEM", "RECALLED_LOT", "EXPIRED_LOT", "INSUFFICIENT_STOCK",
                   "PAYMENT_MISMATCH", "POINTS_INSUFFICIENT", "UNKNOWN_SALE", "RETURN_EXCEEDS_SALE",
                   "DUPLICATE_ID_CONFLICT", "UNAVAILABLE"})


def ledger_state(store) -> dict:
    """Balances and business events: what a refused request must not change. A refusal may add
    its record (a recalled lot offered is recorded; the core loop marks it with `request_id`), so
    those are left out of the count."""
    with store.read() as tx:
        return {"lots": {k: v["qty"] for k, v in stored_lot_rows(tx).items()},
                "skus": stored_totals(tx),
                "members": {bytes(k): v.get("points") for k, v in tx.items("members")},
                "events": sum(1 for e in tx.events() if "request_id" not in e)}


def assert_refusal(answer: dict) -> None:
    """A refusal an ECR/1 or POS/1 terminal can act on: a stable code and words for a person."""
    assert answer.get("ok") is False, answer
    assert answer.get("err") in CODES, answer
    assert isinstance(answer.get("msg"), str) and answer["msg"].strip(), answer
