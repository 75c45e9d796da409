"""The sale handler path: priced 3-line sales (1,000 rules, 10,000 SKUs) applied in groups through
the core loop's own group step (nested transaction per sale, idempotency record, pricing, FEFO, one
durable commit per group), compiled and pure-Python twin side by side, each in a child process (the
flavour is chosen at import)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from ._common import Figure, at_least, say
from ._flavours import run_both

GROUP = 256
# The flavours take turns this many times (a full run), and each figure is its flavour's median.
ROUNDS = 5


def _apply(core, requests) -> list:
    """Apply `requests` as one group; the answers, each checked to be ok."""
    slots = [[r, None, None] for r in requests]
    core._apply_group(slots)
    answers = [slot[1].body for slot in slots]
    bad = [a for a in answers if not a.get("ok")]
    if bad:
        raise RuntimeError(f"{len(bad)} of {len(answers)} refused, e.g. {bad[0]}")
    return answers


def _child(sales: int, skus: int, rules: int) -> dict:
    import core_ext
    from core_ext import Request, Settings, Store
    from gateway._app_core import build_core
    from tests._data import apply_master

    from . import _dataset
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(os.path.join(tmp, "data"), map_size=4 << 30)
        apply_master(store, "catalog", _dataset.catalog(skus))
        apply_master(store, "promotions", _dataset.promotions(rules, skus))
        # Whole groups: this figure is the handlers' cost, not the fairness cut.
        core = build_core(store, Settings(store_id="BENCH", timezone="UTC"), group_budget_s=float("inf"))
        receipts = [Request("receipt", {"id": f"r{i}", "sku": _dataset.sku(i), "lot": None, "expiry": None,
                                        "qty": 1_000_000}, "erp", "erp") for i in range(skus)]
        for i in range(0, skus, 1000):
            _apply(core, receipts[i:i + 1000])
        pool = _dataset.baskets(200, 3, skus, seed=2)
        quotes = _apply(core, [Request("quote", {"t": "quote", "id": f"q{i}", "lines": lines}, "lane1", "ecr")
                               for i, lines in enumerate(pool)])
        priced = [(lines, q["total_cents"]) for lines, q in zip(pool, quotes)]
        requests = [Request("sale", {"t": "sale", "id": f"s{i}", "lines": priced[i % len(priced)][0],
                                     "payments": [{"method": "cash", "cents": priced[i % len(priced)][1]}]},
                            "lane1", "ecr") for i in range(sales)]
        # As `gateway run` does once its state is loaded (both flavours alike).
        core_ext.freeze_loaded_state()
        started = time.perf_counter()
        for i in range(0, sales, GROUP):
            _apply(core, requests[i:i + GROUP])
        elapsed = time.perf_counter() - started
        handler_s = _handler_alone(store, [Request("sale", {**r.body, "id": "h" + r.body["id"]}, r.source, r.channel)
                                           for r in requests])
        store.close()
    return {"flavour": core_ext.FLAVOUR, "sales_per_s": sales / elapsed, "handler_alone_per_s": sales / handler_s}


def _handler_alone(store, requests) -> float:
    """Seconds spent in the sale handler itself (price, decide, persist into the transaction), without
    the core loop's step around it (idempotency record, the nested transaction's begin and commit) or
    the commits: a diagnostic of where the ratio comes from, not the target's figure. Each sale runs
    in a nested transaction of its own, as the core loop runs it (its day document is folded when
    that commits, outside the timing)."""
    from core_ext import Settings
    from core_ext._sales import HANDLE_SALE as handle_sale
    from gateway._core_loop import Context

    ctx = Context(now_ms=int(time.time() * 1000), settings=Settings(store_id="BENCH", timezone="UTC"))
    spent = 0.0
    for i in range(0, len(requests), GROUP):
        tx = store.begin(write=True)
        for request in requests[i:i + GROUP]:
            child = tx.child()
            started = time.perf_counter()
            handle_sale(child, request, ctx)
            spent += time.perf_counter() - started
            child.commit()
        tx.commit()
    return spent


def run(ctx) -> list[Figure]:
    sales = ctx.size(512, 10_240)
    skus, rules = 10_000, 1_000
    rounds = ctx.size(1, ROUNDS)
    say(f"sale: {sales:,} priced 3-line sales, {rules:,} rules, {skus:,} SKUs, groups of {GROUP}, both flavours"
        + (f", taking turns {rounds} times (medians)" if rounds > 1 else ""))
    results = run_both("benchmarks.bench_sale", [str(sales), str(skus), str(rules)], rounds=rounds)
    if results is None:
        raise RuntimeError("a flavour's child failed (its error is above)")
    compiled, pure = results["cython"]["sales_per_s"], results["python"]["sales_per_s"]
    rounds_seen = {f"{name}_rounds_per_s": results[name]["rounds"]["sales_per_s"]
                   for name in ("cython", "python") if "rounds" in results[name]}
    return [Figure("sale_handler_path", f"sale handler path, 3-line priced sale, {rules:,} rules, {skus:,} SKUs",
                   compiled, "events/s", target=">= 5x the pure twin", met=at_least(compiled / pure, 5.0),
                   baseline=pure, baseline_of="pure-Python twin",
                   extra={"sales": sales, "group": GROUP,
                          "handler_alone_per_s": results["cython"]["handler_alone_per_s"],
                          "handler_alone_pure_per_s": results["python"]["handler_alone_per_s"],
                          "handler_alone_ratio": results["cython"]["handler_alone_per_s"]
                          / results["python"]["handler_alone_per_s"], **rounds_seen})]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=3, type=int, required=True)
    print(json.dumps(_child(*parser.parse_args().child)))
    sys.exit(0)
