"""Promotion engine speed: baskets priced per second and p99 latency, compiled and pure Python side by
side, for baskets of 1, 10 and 100 lines against rule sets of 10, 1,000 and 10,000 rules.

Rule sets and baskets are generated from the seed, so runs compare. Both flavours are imported
directly (`core_ext._promo_c` and `core_ext._promo_py`) and run one after the other on the same
baskets; their answers are checked to be equal while timing.
"""
from __future__ import annotations

import importlib
import random
import time

from ._common import Figure, at_most, say

RULE_COUNTS = (10, 1_000, 10_000)
BASKET_LINES = (1, 10, 100)
SKUS = 5_000
CATEGORIES = 50


def _sku(i: int) -> str:
    return f"SKU-{i:05d}"


def _category(i: int) -> str:
    return f"cat-{i % CATEGORIES:02d}"


def make_rules(n: int, seed: int, skus: int = SKUS) -> dict:
    """A promotions body of `n` rules over SKUs 0..`skus`-1, mostly on a few SKUs or a category, as an
    ERP would send."""
    rnd = random.Random(seed * 1_000_003 + n)
    kinds = (["percent_off"] * 30 + ["amount_off"] * 10 + ["fixed_price"] * 5 + ["qty_tier"] * 10
             + ["bundle"] * 10 + ["buy_x_get_y"] * 10 + ["threshold"] * 15 + ["order_percent_off"] * 10)
    rules = []
    every_left = max(1, min(20, n // 200))  # rules on every item are few in practice: each is a candidate always
    for i in range(n):
        kind = rnd.choice(kinds)
        if kind in ("percent_off", "order_percent_off"):
            params = {"pct_bp": rnd.randrange(100, 3000)}
            if kind == "order_percent_off":
                params["min_cents"] = rnd.randrange(0, 20_000)
        elif kind == "amount_off":
            params = {"cents": rnd.randrange(10, 500)}
        elif kind == "fixed_price":
            params = {"unit_cents": rnd.randrange(100, 5_000)}
        elif kind == "qty_tier":
            params = {"mode": rnd.choice(["all_units", "incremental"]), "tiers": [[2, 500], [5, 1000], [10, 1500]]}
        elif kind == "bundle":
            items = rnd.sample(range(skus), rnd.randrange(2, 4))
            params = {"items": [[_sku(s), rnd.randrange(1, 3)] for s in items], "price_cents": rnd.randrange(500, 5_000)}
        elif kind == "buy_x_get_y":
            params = {"buy": rnd.randrange(1, 4), "get": 1, "pct_bp": rnd.choice([5000, 10000])}
        elif rnd.random() < 0.5:
            params = {"ladder": [[5_000, 300], [10_000, 800], [20_000, 2_000]]}
        else:
            params = {"every_cents": 5_000, "off_cents": 250, "max_times": 4}
        r = {"id": f"P-{i:05d}", "version": 1, "kind": kind, "params": params, "priority": rnd.randrange(0, 5),
             "stackable": rnd.random() < 0.8}
        roll = rnd.random()
        if kind != "bundle":
            if roll < 0.6:
                r["target"] = {"skus": [_sku(rnd.randrange(skus)) for _ in range(rnd.randrange(1, 6))]}
            elif roll < 0.97 or every_left == 0:
                r["target"] = {"categories": [_category(rnd.randrange(CATEGORIES))]}
            else:
                every_left -= 1
        if rnd.random() < 0.15:
            r["exclusive_group"] = f"{'i' if kind not in ('threshold', 'order_percent_off') else 'o'}{rnd.randrange(20)}"
        if rnd.random() < 0.2:
            r["max_discount_cents"] = rnd.randrange(100, 2_000)
        if rnd.random() < 0.2:
            r["coupon"] = f"C{rnd.randrange(10)}"
        if rnd.random() < 0.2:
            r["who"] = {"members_only": True}
        if rnd.random() < 0.2:
            r["when"] = {"weekdays": rnd.sample(range(1, 8), 4)}
        rules.append(r)
    return {"ceiling": {"default_max_pct_bp": 5000, "by_category": {"cat-00": 0}},
            "points": {"earn_per_cents": 100, "earn_points": 1}, "rules": rules}


def make_baskets(lines: int, count: int, seed: int) -> list[list[dict]]:
    rnd = random.Random(seed * 7_919 + lines)
    hot = [rnd.randrange(SKUS) for _ in range(200)]  # shoppers favour some items, as promotions do
    out = []
    for _ in range(count):
        basket = []
        for _ in range(lines):
            s = rnd.choice(hot) if rnd.random() < 0.5 else rnd.randrange(SKUS)
            basket.append({"sku": _sku(s), "qty": rnd.randrange(1, 4), "unit_cents": 100 + (s * 37) % 9_900,
                           "category": _category(s)})
        out.append(basket)
    return out


def _time(engine, baskets, seconds: float, min_samples: int):
    """(baskets per second, p99 seconds, answers of the first pass); at least `min_samples` timings,
    so the p99 is not simply the slowest one. What is timed is `price_typed`, the engine as the sale
    path calls it; the answers compared are PROMO/1's documents (`price`)."""
    kw = {"member": {"id": "M1", "tier": "gold"}, "coupons": ("C1", "C2"), "store": "S001", "ts_ms": 1_700_000_000_000,
          "weekday": 3, "minute": 600}
    answers = [engine.price(b, **kw) for b in baskets[:20]]  # warm up and keep some answers to compare
    latencies = []
    deadline = time.perf_counter() + seconds
    i = 0
    start = time.perf_counter()
    while True:
        b = baskets[i % len(baskets)]
        t = time.perf_counter()
        engine.price_typed(b, **kw)
        latencies.append(time.perf_counter() - t)
        i += 1
        if i >= min_samples and time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    latencies.sort()
    return i / elapsed, latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], answers


def _engines() -> list:
    """(name, module) of each flavour of the engine, imported directly so both run in one process."""
    return [("cython", importlib.import_module("core_ext._promo_c")),
            ("python", importlib.import_module("core_ext._promo_py"))]


def measure(seconds: float, min_samples: int, seed: int = 1) -> list:
    """(rules, lines, {flavour: (baskets/s, p99 s, load s)}) for every cell of the grid; the two
    flavours' answers are checked to be equal on the same baskets."""
    rows = []
    for n_rules in RULE_COUNTS:
        say(f"pricing: generating {n_rules:,} rules")
        body = make_rules(n_rules, seed)
        for n_lines in BASKET_LINES:
            baskets = make_baskets(n_lines, 200, seed)
            figures, answers = {}, []
            for name, module in _engines():
                t = time.perf_counter()
                engine = module.PromoEngine(body, 1)
                load_s = time.perf_counter() - t
                rate, p99, first = _time(engine, baskets, seconds, min_samples)
                figures[name] = (rate, p99, load_s)
                answers.append(first)
            if answers[0] != answers[1]:
                raise RuntimeError(f"the flavours price differently at {n_rules} rules x {n_lines} lines")
            rows.append((n_rules, n_lines, figures))
    return rows


def run(ctx) -> list[Figure]:
    rows = measure(ctx.size(0.05, 1.0), ctx.size(50, 300))
    out = []
    for n_rules, n_lines, f in rows:
        (c_rate, c_p99, c_load), (p_rate, p_p99, _) = f["cython"], f["python"]
        if (n_rules, n_lines) == (10_000, 10):
            out.append(Figure("pricing_p99_10_lines_10k_rules", "pricing alone, 10 lines, 10,000 rules, p99 (compiled)",
                              c_p99 * 1000, "ms", target="<= 0.5 ms", met=at_most(c_p99 * 1000, 0.5),
                              baseline=p_p99 * 1000, baseline_of="pure-Python twin",
                              extra={"load_10k_rules_ms": c_load * 1000}))
        out.append(Figure(f"pricing_{n_lines}_lines_{n_rules}_rules", f"pricing alone, {n_lines} lines, "
                          f"{n_rules:,} rules, compiled", c_rate, "baskets/s", baseline=p_rate,
                          baseline_of="pure-Python twin", extra={"p99_ms": c_p99 * 1000}))
    return out
