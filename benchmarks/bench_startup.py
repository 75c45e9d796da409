"""Start-up: `gateway run` from process start to /readyz answering 200, over a copy of a big ledger
(1,000,000 events; cached between runs)."""
from __future__ import annotations

import os
import tempfile

from ._common import Figure, at_most, say
from ._gateway import Gateway
from ._ledger_cache import cached_ledger, copy_ledger


def run(ctx) -> list[Figure]:
    events = ctx.size(20_000, 1_000_000)
    source, last_seq = cached_ledger(ctx.data_dir, events)
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        copy_ledger(source, data)
        say(f"startup: gateway run over {last_seq:,} events")
        with Gateway(ctx, tmp, label="startup", data_dir=data) as gw:
            seconds = gw.started_s
    return [Figure("startup_to_readyz", f"gateway run to /readyz 200 with a {last_seq:,}-event ledger", seconds, "s",
                   target="<= 1 s", met=at_most(seconds, 1.0), extra={"events": last_seq})]
