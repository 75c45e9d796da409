"""The chain at scale, simulated: many stores (sealing and signing with the project's own envelope code,
not one gateway each) publish through one hub while the reference consumer verifies every chain.

`make soak` runs it; the figures go to docs/scale.md (between its FIGURES markers). NATS_SOAK_STORES and
NATS_SOAK_BATCHES change the size (defaults: 200 stores, 20 batches of 50 events each).
"""
from __future__ import annotations

import asyncio
import os
import re
import resource
import time

import nats
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from upstream import ZERO_DIGEST, digest, encode_envelope, seal_envelope
from upstream._nats_erp import ChainConsumer, ConsumeOptions, consume, ensure_streams

from ._nats_hub import NatsHub

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVENTS_PER_BATCH = 50


class SimulatedStore:
    """One store's chain: events sealed into signed, chained batches, published in order."""

    def __init__(self, store_id: str):
        self.id = store_id
        self.key = Ed25519PrivateKey.generate()
        self.prev, self.seq, self.event, self.stream_seq = ZERO_DIGEST, 0, 1, 0

    def next_batch(self) -> bytes:
        docs = [{"seq": self.event + i, "type": "sale", "id": f"lane1:{self.event + i}", "ts_ms": self.event + i,
                 "moves": [["SKU-4", None, -1, None, []]]} for i in range(EVENTS_PER_BATCH)]
        self.seq += 1
        env = seal_envelope(store=self.id, seq=self.seq, prev=self.prev, created_ms=self.seq,
                            first_event=self.event, last_event=self.event + EVENTS_PER_BATCH - 1,
                            body={"docs": docs, "stock": [["SKU-4", None, -EVENTS_PER_BATCH, 0]], "alerts": []},
                            private_key=self.key)
        self.prev, self.event = digest(env), self.event + EVENTS_PER_BATCH
        return encode_envelope(env)

    async def publish(self, js, batches: int) -> None:
        for _ in range(batches):
            raw = self.next_batch()
            ack = await js.publish(f"gw.batches.{self.id}", raw, headers={
                "Nats-Msg-Id": f"{self.id}:{self.seq}", "Nats-Expected-Last-Subject-Sequence": str(self.stream_seq)})
            self.stream_seq = ack.seq


async def soak(url: str, n_stores: int, n_batches: int) -> dict:
    stores = [SimulatedStore(f"S{i:04d}") for i in range(n_stores)]
    pub_nc = await nats.connect(url)
    erp_nc = await nats.connect(url)
    await ensure_streams(pub_nc.jetstream(), "gw")
    consumer = ChainConsumer({s.id: s.key.public_key() for s in stores})
    lags = []

    def on_page(_consumer, _n):
        done = sum(c.batches for c in consumer.summaries.values())
        lags.append(sum(s.seq for s in stores) - done)

    started = time.monotonic()
    js = pub_nc.jetstream()
    publishing = asyncio.gather(*(s.publish(js, n_batches) for s in stores))
    verifying = consume(erp_nc, consumer, ConsumeOptions(idle_s=0, until={s.id: n_batches for s in stores},
                                                        on_page=on_page))
    await publishing
    published_s = time.monotonic() - started
    await verifying
    total_s = time.monotonic() - started
    await pub_nc.close()
    await erp_nc.close()
    assert not consumer.failed, consumer.report()[:5]
    batches = n_stores * n_batches
    return {"stores": n_stores, "batches": batches, "events": batches * EVENTS_PER_BATCH,
            "publish_batches_s": batches / published_s, "publish_events_s": batches * EVENTS_PER_BATCH / published_s,
            "verified_batches_s": batches / total_s, "max_lag": max(lags or [0]),
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def write_figures(figures: dict) -> None:
    path = os.path.join(ROOT, "docs", "scale.md")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    table = (f"| stores | batches | events | published batches/s | published events/s | verified batches/s "
             f"| consumer lag, max (batches) | test process RSS (MiB) |\n|---|---|---|---|---|---|---|---|\n"
             f"| {figures['stores']} | {figures['batches']} | {figures['events']} | {figures['publish_batches_s']:.0f} "
             f"| {figures['publish_events_s']:.0f} | {figures['verified_batches_s']:.0f} | {figures['max_lag']} "
             f"| {figures['rss_mib']:.0f} |")
    text = re.sub(r"(<!-- FIGURES -->\n).*?(\n<!-- /FIGURES -->)", lambda m: m.group(1) + table + m.group(2), text,
                  flags=re.S)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


@pytest.mark.soak
def test_two_hundred_simulated_stores_through_one_hub(tmp_path):
    hub = NatsHub(tmp_path / "hub").start()
    try:
        figures = asyncio.run(soak(hub.url, int(os.environ.get("NATS_SOAK_STORES", "200")),
                                   int(os.environ.get("NATS_SOAK_BATCHES", "20"))))
    finally:
        hub.stop()
    write_figures(figures)
