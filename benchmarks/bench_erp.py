"""ERP catch-up: a gateway started over a copy of a big ledger none of which is sealed yet; from
/readyz until the ERP's client (upstream's, as `gateway erp pull --verify --ack` uses it) has pulled
every event in sealed batches and verified each signature and the hash chain."""
from __future__ import annotations

import os
import tempfile
import time

from ._common import Figure, at_least, say
from ._gateway import ERP_TOKEN, Gateway
from ._ledger_cache import cached_ledger, copy_ledger


def _catch_up(gw: Gateway, last_seq: int, timeout_s: float) -> int:
    """Pull, verify and acknowledge until the last event is in; returns the batches pulled."""
    from upstream import ChainVerifier, ErpClient, load_public_key, pull
    verifier = ChainVerifier(load_public_key(os.path.join(gw.keys, "store.pub.pem")))
    batches = 0
    deadline = time.monotonic() + timeout_s
    with ErpClient(gw.upstream_url, ERP_TOKEN, timeout=120) as client:
        while (verifier.last_event or 0) < last_seq:
            if time.monotonic() > deadline:
                raise TimeoutError(f"caught up only to event {verifier.last_event} of {last_seq}")
            totals = pull(client, verifier, ack=True, limit=1000, wait=1.0)
            batches += totals.batches
    return batches


def run(ctx) -> list[Figure]:
    events = ctx.size(20_000, 1_000_000)
    source, last_seq = cached_ledger(ctx.data_dir, events)
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        copy_ledger(source, data)
        with Gateway(ctx, tmp, label="erp", data_dir=data) as gw:
            say(f"erp: sealing, pulling and verifying {last_seq:,} events")
            started = time.perf_counter()
            batches = _catch_up(gw, last_seq, ctx.size(120, 3_600))
            elapsed = time.perf_counter() - started
        store_mb = os.path.getsize(os.path.join(data, "data.mdb")) / (1 << 20)
    rate = last_seq / elapsed
    return [Figure("erp_catch_up", f"ERP catch-up: {last_seq:,} events sealed, pulled and verified", rate, "events/s",
                   target=">= 200,000 events/s", met=at_least(rate, 200_000),
                   extra={"events": last_seq, "batches": batches, "seconds": elapsed, "store_mb_after": store_mb})]
