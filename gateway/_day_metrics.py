"""Metrics of the business day, read from LMDB at scrape time (CLOSE/1).

Labels stay bounded: promotion kinds (a fixed list in PROMO/1), lanes (configured devices and
terminals) and payment methods; never rule ids or SKUs.
"""
from __future__ import annotations

import logging
from typing import Callable

import lmdb
from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core_ext import u64
from core_ext._days import open_totals

log = logging.getLogger("gateway.metrics")


def _families() -> dict[str, GaugeMetricFamily]:
    return {
        "discount": GaugeMetricFamily(
            "gateway_day_promotion_discount_cents",
            "Cents promotions took off sales in the open business day, by promotion kind", labels=["kind"]),
        "baskets": GaugeMetricFamily(
            "gateway_day_promotion_baskets",
            "Baskets promotions priced in the open business day, by promotion kind (a basket counts once "
            "per rule that priced it)", labels=["kind"]),
        "difference": GaugeMetricFamily(
            "gateway_day_drawer_difference_cents",
            "Counted minus expected in the last closed business day, by lane and payment method (lanes "
            "that counted)", labels=["lane", "method"]),
    }


class DayCollector(Collector):
    """`read_store()` opens a read transaction (or gives None while the store is closed)."""

    def __init__(self, read_store: Callable):
        self._read_store = read_store
        self._kinds: dict[int, dict] = {}  # rule set version -> rule id -> kind

    def describe(self):
        return list(_families().values())

    def collect(self):
        f = _families()
        try:
            tx = self._read_store()
        except lmdb.Error as exc:
            log.warning("metrics: the store cannot be read: %s", exc)
            return []
        if tx is None:
            return []
        try:
            self._collect(tx, f)
        except lmdb.Error as exc:
            log.warning("metrics: the store cannot be read: %s", exc)
            return []
        finally:
            tx.abort()
        return [family for family in f.values() if family.samples]

    def _collect(self, tx, f) -> None:
        row = open_totals(tx)
        if row is None:
            return
        discount: dict = {}
        baskets: dict = {}
        for rule_id, promo in row["promotions"].items():
            kind = self._kind_of(tx, promo.get("ruleset", 0), rule_id)
            discount[kind] = discount.get(kind, 0) + promo.get("discount_cents", 0)
            baskets[kind] = baskets.get(kind, 0) + promo.get("baskets", 0)
        for kind in sorted(discount):
            f["discount"].add_metric([kind], discount[kind])
            f["baskets"].add_metric([kind], baskets[kind])
        last = row.get("last_close")
        close = tx.event(last["seq"]) if last else None
        for lane, figures in sorted((close or {}).get("lanes", {}).items()):
            for method, payment in figures["payments"].items():
                if payment["difference"] is not None:
                    f["difference"].add_metric([lane, method], payment["difference"])

    def _kind_of(self, tx, ruleset: int, rule_id: str) -> str:
        kinds = self._kinds.get(ruleset)
        if kinds is None:
            body = tx.get("master_docs", b"promotions\x00" + u64(ruleset)) if ruleset else None
            rules = (body or {}).get("rules") or []
            kinds = self._kinds[ruleset] = {r.get("id"): str(r.get("kind")) for r in rules if isinstance(r, dict)}
        return kinds.get(rule_id, "unknown")
