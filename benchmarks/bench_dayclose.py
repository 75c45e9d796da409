"""Closing a business day of many documents: the close request through the core loop's own group
step, after the day's sales were committed, timed alone. The close reads the running totals the
writer kept as the documents came, so it must not grow with the day's size."""
from __future__ import annotations

import os
import tempfile
import time

from ._common import Figure, at_most, say


def run(ctx) -> list[Figure]:
    from core_ext import Request, Settings, Store
    from gateway._app_core import build_core
    from tests._data import apply_master

    from . import _dataset
    documents = ctx.size(5_000, 100_000)
    skus = 2_000
    say(f"day close: {documents:,} sales in one business day, then the close")
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(os.path.join(tmp, "data"), map_size=8 << 30)
        apply_master(store, "catalog", _dataset.catalog(skus))
        apply_master(store, "policy", {"negative_stock": "allow"})
        # No rules: every basket is priced at its catalog total, so the sales' payments are simple.
        core = build_core(store, Settings(store_id="BENCH", timezone="UTC"), group_budget_s=float("inf"),
                          clock=lambda: 1_800_000_000.0)
        _price_and_sell(core, Request, documents, skus)
        with store.read() as tx:
            committed = tx.last_seq()
        slots = [[Request("day_close", {"day": _open_day(store)}, "erp", "erp"), None, None]]
        started = time.perf_counter()
        core._apply_group(slots)
        elapsed_ms = (time.perf_counter() - started) * 1000
        answer = slots[0][1].body
        store.close()
    if not answer.get("ok"):
        raise RuntimeError(f"the close was refused: {answer}")
    return [Figure("day_close_ms", f"closing a business day of {committed:,} documents (one durable group)",
                   elapsed_ms, "ms", target="milliseconds, whatever the day's size", met=at_most(elapsed_ms, 50.0),
                   extra={"documents": committed})]


def _price_and_sell(core, Request, count: int, skus: int) -> None:
    """Sales paid in full: each basket is quoted first for its total."""
    from . import _dataset
    pool = _dataset.baskets(200, 3, skus, seed=3)
    quotes = [[Request("quote", {"t": "quote", "id": f"q{i}", "lines": lines}, "lane1", "ecr"), None, None]
              for i, lines in enumerate(pool)]
    core._apply_group(quotes)
    totals = [slot[1].body["total_cents"] for slot in quotes]
    group = []
    for i in range(count):
        k = i % len(pool)
        group.append([Request("sale", {"t": "sale", "id": f"d{i}", "lines": pool[k],
                                       "payments": [{"method": "cash", "cents": totals[k]}]}, f"lane{i % 4}", "ecr"),
                      None, None])
        if len(group) == 512 or i == count - 1:
            core._apply_group(group)
            bad = [slot[1].body for slot in group if not slot[1].ok]
            if bad:
                raise RuntimeError(f"{len(bad)} sales refused, e.g. {bad[0]}")
            group = []


def _open_day(store) -> str:
    from core_ext import day_report
    with store.read() as tx:
        return day_report(tx, None)["day"]
