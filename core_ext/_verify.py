"""Check that the balance rows equal a replay of the event log, and that each sale's id record
names its own sale (a repeat is answered from it)."""
from __future__ import annotations

from ._ids import sale_of
from ._select import ledger
from ._store import is_total_key, split_lot_key


def verify(store, progress=None) -> list[str]:
    """Every difference between stored balances and the replay of all events; [] = consistent.

    `progress(done, total)` is called every 100,000 events on long logs.
    """
    with store.read() as tx:
        total = tx.last_seq()

        def events():
            for n, event in enumerate(tx.events(), 1):
                if progress and n % 100_000 == 0:
                    progress(n, total)
                yield event

        lots, skus = ledger.replay(events())
        problems = []
        stored_lots, stored_skus = {}, {}
        for k, row in tx.items("lots"):
            if is_total_key(k):
                stored_skus[k.decode()] = row
            else:
                stored_lots[split_lot_key(k)] = row["qty"]
        for key in sorted(set(lots) | set(stored_lots), key=lambda k: (k[0], k[1] or "")):
            want, have = lots.get(key, 0), stored_lots.get(key, 0)
            if want != have:
                problems.append(f"{key[0]} lot {key[1] or '-'}: stored {have}, replay gives {want}")
        for sku in sorted(set(skus) | set(stored_skus)):
            want, have = skus.get(sku, 0), stored_skus.get(sku, 0)
            if want != have:
                problems.append(f"{sku}: stored on-hand {have}, replay gives {want}")
        held = tx.meta("skus", 0)
        if held != len(skus):
            problems.append(f"meta: {held} SKUs with stock counted, replay gives {len(skus)}")
        for n, event in enumerate(tx.events(), 1):
            if event.get("seq") != n:
                problems.append(f"event log: expected seq {n}, found {event.get('seq')}")
                break
        problems += _id_record_problems(tx)
    return problems


def _id_record_problems(tx) -> list[str]:
    """A sale's id record answers a repeat from the event it names: that event must be the sale."""
    problems = []
    for key, record in tx.items("ids"):
        if "memo" in record and sale_of(tx, key.decode(), record) is None:
            problems.append(f"id {key.decode()!r}: its record names event {record.get('seq')}, which is not its sale")
    return problems
