"""The master data and baskets the benchmarks use, generated from a seed so runs compare."""
from __future__ import annotations

import random

from .bench_promo import make_rules


def sku(i: int) -> str:
    return f"SKU-{i:05d}"


def category(i: int) -> str:
    return f"cat-{i % 50:02d}"


def catalog(n_skus: int) -> dict:
    """A catalog body of `n_skus` items, none tracked by lot (the sale path, not the FEFO path)."""
    return {"items": [{"sku": sku(i), "name": f"Item {i}", "gtins": [], "category": category(i),
                       "unit_cents": 100 + (i * 37) % 9_900, "lot_tracked": False, "serial_tracked": False,
                       "reorder_point": 0, "reorder_qty": 0, "active": True} for i in range(n_skus)]}


def promotions(n_rules: int, n_skus: int, seed: int = 1) -> dict:
    return make_rules(n_rules, seed, skus=n_skus)


def receipts(n_skus: int, qty: int, prefix: str = "open") -> list[dict]:
    """One receipt movement per SKU (the ERP's opening stock)."""
    return [{"id": f"{prefix}-{i}", "type": "receipt", "sku": sku(i), "lot": None, "expiry": None, "serials": [],
             "qty": qty} for i in range(n_skus)]


def baskets(count: int, lines: int, n_skus: int, seed: int = 1) -> list[list[dict]]:
    """`count` baskets of `lines` distinct SKUs, some SKUs favoured as shoppers favour them."""
    rnd = random.Random(seed * 7_919 + lines)
    hot = [rnd.randrange(n_skus) for _ in range(min(200, n_skus))]
    out = []
    for _ in range(count):
        chosen: list[int] = []
        while len(chosen) < lines:
            s = rnd.choice(hot) if rnd.random() < 0.5 else rnd.randrange(n_skus)
            if s not in chosen:
                chosen.append(s)
        out.append([{"code": sku(s), "qty": rnd.randrange(1, 4)} for s in chosen])
    return out
