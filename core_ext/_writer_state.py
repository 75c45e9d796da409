"""Everything the single writer keeps in memory, loaded at once.

Each state loads itself on the first request that needs it (see `Tx.state`); a gateway loads them
all before it serves, so no till's first sale waits for a catalog or a ledger to load.
"""
from __future__ import annotations

import gc

from . import _days, _master
from ._select import ledger, salepath


def load_writer_state(store) -> None:
    """Load the balances, master data, open alerts and the open day into `store`'s states.

    Run it on the thread that may write (a write transaction begins and ends on one thread). The
    transaction is aborted: it changed nothing, and what it loaded is what is committed.
    """
    tx = store.begin(write=True)
    try:
        ledger.balances(tx)
        _master.view(tx)
        salepath.open_alerts(tx)
        tx.state(_days.DayTotals)
    finally:
        tx.abort()


# Container objects allocated (net) before the collector's youngest generation is examined. A sale
# allocates a hundred or two (its lines, answer and event as dicts and lists), nearly all freed as
# soon as it is answered: at CPython's default of 700 the collector ran every few sales.
YOUNG_GENERATION_THRESHOLD = 10_000


def freeze_loaded_state() -> None:
    """Once the writer's state is loaded, for a process that lives on it (`gateway run`): what was
    loaded lives as long as the process, so it is moved out of the collector's way (or each full
    collection walks the whole catalog and ledger again), and the youngest generation is collected
    less often."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)
