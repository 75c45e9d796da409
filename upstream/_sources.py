"""The sources of the upstream side's own requests to the core loop: housekeeping, which no till
waits on, so the core loop serves it after the devices (`gateway/_fair_queue.py`). A module of its
own so that naming them imports nothing else (the NATS link's client is loaded only when used)."""
from __future__ import annotations

SEALER = "sealer"  # seals and prunes
PUSH = "push"      # acknowledgements of batches pushed to the ERP
NATS = "nats"      # the chain link's acknowledgements and the documents it takes in

HOUSEKEEPING_SOURCES = frozenset({SEALER, PUSH, NATS})
