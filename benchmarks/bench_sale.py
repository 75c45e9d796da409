"""The sale handler path: priced 3-line sales (1,000 rules, 10,000 SKUs) applied in groups through
the core loop's own group step (each sale in the group's transaction, idempotency record, pricing,
FEFO, one durable commit per group), compiled and pure-Python twin side by side, each in a child process (the
flavour is chosen at import). The two children set up once and then take turns, a block of sales
each, one at a time."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from ._common import Figure, at_least, say
from ._flavours import paired_ratios, run_in_turns, turn_rates

GROUP = 256
# Sales a flavour applies in one turn, and the turns each takes in a full run: turns a fraction of a
# second to a few seconds long, so that the machine's drift (by a fifth over minutes, by half within
# minutes in its slow hours) falls on the two flavours alike.
TURN_SALES = 1_024
TURNS = 24
# The handler alone, timed once at the end over this many turns' worth of sales.
HANDLER_TURNS = 4


def _apply(core, requests) -> list:
    """Apply `requests` as one group; the answers, each checked to be ok."""
    slots = [[r, None, None] for r in requests]
    core._apply_group(slots)
    answers = [slot[1].body for slot in slots]
    bad = [a for a in answers if not a.get("ok")]
    if bad:
        raise RuntimeError(f"{len(bad)} of {len(answers)} refused, e.g. {bad[0]}")
    return answers


def _serve(turn_sales: int, skus: int, rules: int) -> None:
    """The child: set a store up, say so, then apply `turn_sales` sales in groups for each `turn`
    asked on standard input, and time the handler alone at `end`; one JSON line per answer."""
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

        def sales(prefix: str) -> list:
            return [Request("sale", {"t": "sale", "id": f"{prefix}{i}", "lines": priced[i % len(priced)][0],
                                     "payments": [{"method": "cash", "cents": priced[i % len(priced)][1]}]},
                            "lane1", "ecr") for i in range(turn_sales)]

        # As `gateway run` does once its state is loaded (both flavours alike).
        core_ext.freeze_loaded_state()
        _say({"flavour": core_ext.FLAVOUR})
        turn = 0
        for command in sys.stdin:
            if command.strip() == "end":
                alone = [request for block in range(HANDLER_TURNS) for request in sales(f"h{block}-")]
                _say({"handler_alone_per_s": len(alone) / _handler_alone(store, alone)})
                break
            requests = sales(f"t{turn}-")
            turn += 1
            started = time.perf_counter()
            for i in range(0, turn_sales, GROUP):
                _apply(core, requests[i:i + GROUP])
            _say({"done": turn_sales, "seconds": time.perf_counter() - started})
        store.close()


def _say(reply: dict) -> None:
    print(json.dumps(reply), flush=True)


def _handler_alone(store, requests) -> float:
    """Seconds spent in the sale handler itself (price, decide, persist into the transaction), without
    the core loop's step around it (shape check, body hash, idempotency record) or the commits: a
    diagnostic of where the ratio comes from, not the target's figure. Each sale runs in the group's
    transaction, as the core loop runs a sale (`DECIDES_FIRST`: a request's transaction without an
    LMDB one of its own); its day document is folded when that commits, outside the timing."""
    from core_ext import Settings
    from core_ext._sales import HANDLE_SALE as handle_sale
    from gateway._core_loop import Context

    ctx = Context(now_ms=int(time.time() * 1000), settings=Settings(store_id="BENCH", timezone="UTC"))
    spent = 0.0
    for i in range(0, len(requests), GROUP):
        tx = store.begin(write=True)
        for request in requests[i:i + GROUP]:
            child = tx.child(shared=True)
            started = time.perf_counter()
            handle_sale(child, request, ctx)
            spent += time.perf_counter() - started
            child.commit()
        tx.commit()
    return spent


def run(ctx) -> list[Figure]:
    turn_sales = ctx.size(256, TURN_SALES)
    turns = ctx.size(2, TURNS)
    skus, rules = 10_000, 1_000
    say(f"sale: priced 3-line sales, {rules:,} rules, {skus:,} SKUs, groups of {GROUP}, both flavours "
        f"taking {turns} turns of {turn_sales:,} sales each")
    results = run_in_turns("benchmarks.bench_sale", [str(turn_sales), str(skus), str(rules)], turns=turns)
    if results is None:
        raise RuntimeError("a flavour's child failed (its error is above)")
    compiled, compiled_turns = turn_rates(results["cython"]["turns"])
    pure, pure_turns = turn_rates(results["python"]["turns"])
    alone, alone_pure = (results[name]["end"]["handler_alone_per_s"] for name in ("cython", "python"))
    return [Figure("sale_handler_path", f"sale handler path, 3-line priced sale, {rules:,} rules, {skus:,} SKUs",
                   compiled, "events/s", target=">= 5x the pure twin", met=at_least(compiled / pure, 5.0),
                   baseline=pure, baseline_of="pure-Python twin",
                   extra={"sales": turn_sales * turns, "turns": turns, "group": GROUP,
                          **paired_ratios(compiled_turns, pure_turns),
                          "handler_alone_per_s": alone, "handler_alone_pure_per_s": alone_pure,
                          "handler_alone_ratio": alone / alone_pure})]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", nargs=3, type=int, required=True, metavar=("TURN_SALES", "SKUS", "RULES"))
    _serve(*parser.parse_args().serve)
    sys.exit(0)
