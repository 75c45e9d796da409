"""The demo ERP: signs and sends the master data and the opening stock, issues a recall a minute
in, and pulls, verifies and acknowledges every batch, keeping its place in the chain in a file.

It uses the reference ERP client (`upstream.ErpClient`, blocking), one call at a time in a thread.
"""
from __future__ import annotations

import json
import os
import time

import trio

import upstream

from ._actors import Tally, blocking
from ._data import MasterData


class DemoErp:
    def __init__(self, url: str, token: str, erp_key, store_public_key, state_path: str, data: MasterData,
                 tally: Tally):
        self.client = upstream.ErpClient(url, token, timeout=10)
        self.erp_key = erp_key
        self.store_public_key = store_public_key
        self.state_path = state_path
        self.data = data
        self.tally = tally
        self.verifier = self._load_verifier()
        self.deliveries: dict = {}  # sku -> when (monotonic) its reorder arrives
        self.delivery_delay_s = 30.0

    def _load_verifier(self):
        try:
            with open(self.state_path, encoding="utf-8") as f:
                return upstream.ChainVerifier.from_state(self.store_public_key, json.load(f))
        except FileNotFoundError:
            return upstream.ChainVerifier(self.store_public_key)

    def _save_verifier(self) -> None:
        tmp = self.state_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.verifier.state(), f)
        os.replace(tmp, self.state_path)

    def push(self, kind: str, body: dict) -> int:
        """Sign `body` as the next version of `kind` and send it; returns the version."""
        status = self.client.status()
        waiting = [v for v, _e in (status.get("pending") or {}).get(kind, [])]
        version = max([status["versions"].get(kind, 0)] + waiting) + 1
        now = int(time.time() * 1000)
        self.client.put_master(upstream.sign_document(kind, version, body, self.erp_key, issued_ms=now))
        return version

    def send_master_data(self) -> None:
        for kind, body in (("policy", self.data.policy), ("catalog", self.data.catalog),
                           ("promotions", self.data.promotions), ("members", self.data.members)):
            self.push(kind, body)
        now = int(time.time() * 1000)
        # Movement ids are applied once: a demo store started again keeps its stock as it was.
        self.client.post_movements(upstream.sign_document("movements", now, self.data.movements(), self.erp_key,
                                                          issued_ms=now))

    def issue_recall(self) -> None:
        self.push("recalls", self.data.recall)
        self.tally.recall_issued = True

    def pull_once(self) -> None:
        low: set = set()

        def note_low_stock(_env, body, _summary) -> None:
            low.update(doc["sku"] for doc in body["docs"] if doc.get("type") == "alert" and doc.get("kind") == "low_stock")
        totals = upstream.pull(self.client, self.verifier, ack=True, limit=200, on_batch=note_low_stock)
        # The delivery arrives a while after the reorder: meanwhile the alert stays open.
        now = time.monotonic()
        for sku in low:
            self.deliveries.setdefault(sku, now + self.delivery_delay_s)
        due = sorted(sku for sku, when in self.deliveries.items() if when <= now)
        if due:
            self.restock(due)
            for sku in due:
                del self.deliveries[sku]
        self.tally.batches_verified += totals.batches
        self.tally.erp_docs += totals.docs
        if totals.acked:
            self.tally.acked = totals.acked
        if totals.batches:
            self._save_verifier()

    def restock(self, skus: list[str]) -> None:
        """The ERP answers a low-stock alert with a delivery of the reorder quantity."""
        now = int(time.time() * 1000)
        moves = []
        for sku in skus:
            item = self.data.item(sku)
            lot, expiry = (None, None)
            if item["lot_tracked"]:
                lot = f"R{now % 100000:05d}"
                expiry = f"{self.data.today.year + 2}-06-30"
            moves.append({"id": f"GR-{now}-{sku}", "type": "receipt", "sku": sku, "lot": lot, "expiry": expiry,
                          "serials": [], "qty": max(item["reorder_qty"], 10), "reason": "reorder delivered"})
        self.client.post_movements(upstream.sign_document("movements", now, {"movements": moves}, self.erp_key,
                                                          issued_ms=now))

    async def run(self, *, recall_after_s: float, pull_every_s: float, task_status=trio.TASK_STATUS_IGNORED) -> None:
        await blocking(self.send_master_data)
        task_status.started()
        recall_at = trio.current_time() + recall_after_s
        while True:
            if not self.tally.recall_issued and trio.current_time() >= recall_at:
                await blocking(self.issue_recall)
            try:
                await blocking(self.pull_once)
            except upstream.UpstreamError as exc:  # unreachable, refused, or a batch that fails verification
                self.tally.errors.append(f"erp: {exc}")
            await trio.sleep(pull_every_s)

    def close(self) -> None:
        self.client.close()
