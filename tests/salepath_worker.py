"""One flavour's sale path over a seeded store, for the twin-equality test.

Reads one JSON scenario per stdin line ({"policy", "recall", "groups": [[request, ...], ...]}),
applies it to a fresh seeded store through the core loop's own group step, and prints one JSON line:
every answer and every table's raw rows (hex), so the two flavours can be compared byte for byte.
A sale with a `pay` is quoted first in its own group and paid at the quoted total: in cash ("exact"),
or up to 500 cents of it in points ("points").
"""
from __future__ import annotations

import json
import os
import sys
import tempfile

import core_ext
from core_ext import Request, Store
from core_ext._store import TABLES
from gateway._app_core import build_core

from tests._data import NOW, STORE, apply_master, seed

RULES = {
    "ceiling": {"default_max_pct_bp": 3000, "by_category": {"implant": 0}},
    "points": {"earn_per_cents": 100, "earn_points": 1, "tier_multiplier_bp": {"gold": 20000}},
    "rules": [
        {"id": "P-7", "version": 2, "kind": "percent_off", "params": {"pct_bp": 1000}, "target": {"skus": ["SKU-1"]}},
        {"id": "B-1", "version": 3, "kind": "bundle", "clawback_on_return": True,
         "params": {"items": [["SKU-2", 1], ["SKU-4", 1]], "price_cents": 5000}},
        {"id": "C-1", "version": 1, "kind": "amount_off", "params": {"cents": 100}, "target": {"skus": ["SKU-2"]},
         "coupon": "SPRING"},
    ],
}


def _apply(core, requests: list) -> list:
    slots = [[Request(r["kind"], r["body"], r.get("source", "lane1"), r.get("channel", "ecr")), None, None]
             for r in requests]
    core._apply_group(slots)
    # A file slice's `held_ms` is how long it held the writer: a time, not something it did.
    answers = [[{k: v for k, v in slot[1].body.items() if k != "held_ms"}, slot[1].replayed] for slot in slots]
    # Only a fault rolls a group back whole: a sale (run in its group's own transaction) that refused
    # after writing would, and both flavours alike, so it is caught here rather than by comparing them.
    if any(body.get("err") == "UNAVAILABLE" for body, _replayed in answers):
        raise AssertionError(f"a group was rolled back whole: {answers}")
    return answers


def run(scenario: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(os.path.join(tmp, "data"))
        seed(store)
        apply_master(store, "promotions", RULES)
        apply_master(store, "policy", scenario["policy"])
        if scenario["recall"]:
            apply_master(store, "recalls", {"recalls": [scenario["recall"]]})
        core = build_core(store, STORE, clock=lambda: NOW, group_budget_s=float("inf"))
        answers = []
        for group in scenario["groups"]:
            requests = []
            for r in group:
                pay = r.pop("pay", None)
                if pay is not None:
                    quote = {k: v for k, v in r["body"].items() if k != "payments"}
                    [[quoted, _]] = _apply(core, [{"kind": "quote", "body": {**quote, "id": "q-" + quote["id"]}}])
                    answers.append(quoted)
                    total = quoted.get("total_cents", 0)
                    points = min(total, 500) if pay == "points" else 0
                    r["body"]["payments"] = [{"method": "cash", "cents": total - points}] + (
                        [{"method": "points", "cents": points}] if points else [])
                requests.append(r)
            answers.append(_apply(core, requests))
        with store.read() as tx:
            tables = {name: [[k.hex(), v.hex()] for k, v in tx.txn.cursor(db=store.db[name])] for name in TABLES}
        store.close()
    return {"flavour": core_ext.FLAVOUR, "answers": answers, "tables": tables}


def main() -> None:
    for line in sys.stdin:
        print(json.dumps(run(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
