"""Everything the single writer keeps in memory, loaded at once.

Each state loads itself on the first request that needs it (see `Tx.state`); a gateway loads them
all before it serves, so no till's first sale waits for a catalog or a ledger to load.
"""
from __future__ import annotations

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
