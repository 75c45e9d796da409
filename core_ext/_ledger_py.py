"""The stock ledger's arithmetic, pure Python: the readable reference of `_ledger_c.pyx`.

The balances per SKU and lot (with expiry and serials) live in memory in a `Balances`, loaded once
from the store: every change goes through `apply_moves`, which updates the memory and notes the rows
it changed; the group's commit writes those rows to the `lots` table (each lot's row, and the SKU's
on-hand total under `total_key`, beside its lots) just before LMDB commits (`flush`), in key order,
once however many requests of the group moved them. So the writer reads its balances from memory,
never from the table: mid-group the table lags behind (`lot_keys` reads whichever holds the rows).
A transaction that aborts rolls the memory back with it (`mark` / `rollback`, driven by `Tx`); a row
noted and then rolled back is written as it is, unchanged. The rows must always equal `replay` of the
event log (`gateway verify-ledger`); how many SKUs have stock is kept in `meta` (`skus`) for the readers.

A move is `Move(sku, lot, delta, expiry, serials)`; `lot` None is the SKU's balance outside any lot
(items not tracked by lot, and units sold beyond the ledger's stock).
"""
from __future__ import annotations

from ._errors import bad_request
from ._localtime import days_between
from ._store import alert_key, is_total_key, lot_key, split_lot_key, total_key

FLAVOUR = "python"


class LotRow:
    """One lot's balance: units on hand, expiry, and the serials of the units it holds."""

    __slots__ = ("qty", "expiry", "serials")

    def __init__(self, qty: int, expiry, serials: list):
        self.qty = qty
        self.expiry = expiry
        self.serials = serials

    def to_doc(self) -> dict:
        return {"qty": self.qty, "expiry": self.expiry, "serials": list(self.serials)}


class Balances:
    """Every SKU's lots and on-hand total, in memory, with an undo log for rollbacks.

    `lots[sku]` maps lot (None: outside any lot) to its `LotRow`, in lot order as the `lots` table
    keeps them (FEFO and the alerts walk them in that order); `totals[sku]` is the on-hand total.
    """

    def __init__(self):
        self.lots: dict = {}
        self.totals: dict = {}
        self._undo: list = []
        # The rows changed since the last flush: {sku: {lot, ...}}.
        self._dirty: dict = {}
        self.seq = 0  # the last event these balances include (kept by `Tx`)

    @classmethod
    def load(cls, tx) -> "Balances":
        state = cls()
        for key, row in tx.items("lots"):
            if is_total_key(key):
                state.totals[key.decode()] = row
                continue
            sku, lot = split_lot_key(key)
            state.lots.setdefault(sku, {})[lot] = LotRow(row["qty"], row.get("expiry"), list(row.get("serials") or ()))
        return state

    def held(self) -> int:
        """How many SKUs have a nonzero on-hand total."""
        return len(self.totals)

    def flush(self, tx) -> None:
        """Just before the group commits: the rows changed since the last flush into the `lots`
        table, in key order (a SKU's total, then its lots), and the count of SKUs with stock into
        `meta`, when it moved."""
        for sku in sorted(self._dirty):
            total = self.totals.get(sku, 0)
            if total == 0:
                tx.delete("lots", total_key(sku))
            else:
                tx.put("lots", total_key(sku), total)
            lots = self.lots.get(sku) or {}
            for lot in sorted(self._dirty[sku], key=_lot_key_order):
                row = lots.get(lot)
                if row is None:
                    tx.delete("lots", lot_key(sku, lot))
                else:
                    tx.put("lots", lot_key(sku, lot), row.to_doc())
        self._dirty = {}
        held = self.held()
        if tx.meta("skus", 0) != held:
            tx.put("meta", "skus", held)

    # Transactions: the undo log holds what each change replaced, newest last.
    def mark(self) -> int:
        return len(self._undo)

    def rollback(self, mark: int) -> None:
        undo = self._undo
        while len(undo) > mark:
            entry = undo.pop()
            if entry[0] == "total":
                _kind, sku, old = entry
                if old is None:
                    self.totals.pop(sku, None)
                else:
                    self.totals[sku] = old
            else:
                _kind, sku, lot, row, qty, expiry, serials = entry
                lots = self.lots.setdefault(sku, {})
                if row is None:
                    lots.pop(lot, None)
                else:
                    row.qty, row.expiry, row.serials = qty, expiry, serials
                    if lot not in lots:
                        lots[lot] = row
                        # Keep the table's key order (`lot_key` bytes) for the walks that rely on it.
                        self.lots[sku] = dict(sorted(lots.items(), key=_lot_order))
                if not self.lots[sku]:
                    del self.lots[sku]

    def forget(self) -> None:
        """The transaction committed: nothing to undo any more."""
        self._undo.clear()

    # Reading.
    def row(self, sku: str, lot):
        lots = self.lots.get(sku)
        return None if lots is None else lots.get(lot)

    def qty(self, sku: str, lot) -> int:
        row = self.row(sku, lot)
        return 0 if row is None else row.qty

    def lot_keys(self) -> list:
        """(sku, lot) of every row held, as the `lots` table will hold them once flushed."""
        return [(sku, lot) for sku, lots in self.lots.items() for lot in lots]

    def lots_of_sku(self, sku: str) -> dict:
        return self.lots.get(sku) or {}

    def on_hand(self, sku: str) -> int:
        return self.totals.get(sku, 0)

    # Changing.
    def apply(self, sku: str, lot, delta: int, expiry, serials):
        """Apply one move; returns the lot's row (None when emptied and dropped) and the new total."""
        lots = self.lots.get(sku)
        if lots is None:
            lots = self.lots[sku] = {}
        row = lots.get(lot)
        if row is None:
            self._undo.append(("lot", sku, lot, None, 0, None, None))
            row = LotRow(0, expiry, [])
            lots[lot] = row
            if len(lots) > 1:
                self.lots[sku] = lots = dict(sorted(lots.items(), key=_lot_order))
        else:
            self._undo.append(("lot", sku, lot, row, row.qty, row.expiry, list(row.serials)))
        row.qty += delta
        if expiry is not None and row.expiry is None:
            row.expiry = expiry
        if serials:
            held = row.serials
            if delta > 0:
                for s in serials:
                    if s not in held:
                        held.append(s)
            else:
                for s in serials:
                    if s in held:
                        held.remove(s)
        if row.qty <= 0 and row.serials:
            # A lot with no units left holds none of the serials it listed (units sold or counted
            # without naming theirs), so a serial can never be taken from it again.
            row.serials = []
        if row.qty == 0 and not row.serials:
            del lots[lot]
            if not lots:
                del self.lots[sku]
            row = None
        old_total = self.totals.get(sku)
        self._undo.append(("total", sku, old_total))
        total = (old_total or 0) + delta
        if total == 0:
            self.totals.pop(sku, None)
        else:
            self.totals[sku] = total
        return row, total


def _lot_order(item) -> bytes:
    return _lot_key_order(item[0])


def _lot_key_order(lot) -> bytes:
    return (lot or "").encode()


def balances(tx) -> Balances:
    """The balances as `tx` sees them (loaded on first use; see `Tx.state`)."""
    return tx.state(Balances)


def lots_of(tx, sku, recalls):
    """FEFO's view of a SKU's lots: `[(lot, expiry, on_hand, recalled), ...]` in key order.

    `recalls` is `{lot: recall}` of the SKU (lot None = every lot). The SKU's balance outside any
    lot is not a lot: FEFO never takes from it.
    """
    every = None in recalls
    return [(lot, row.expiry, row.qty, lot in recalls or every)
            for lot, row in balances(tx).lots_of_sku(sku).items() if lot is not None]


def lot_keys(tx) -> list:
    """(sku, lot) of every lot row: in a write transaction the writer's balances (the table is
    written when the group commits), in a read one the `lots` table."""
    if tx.write:
        return balances(tx).lot_keys()
    with tx.txn.cursor(db=tx.db["lots"]) as cur:
        return [split_lot_key(key) for key in cur.iternext(keys=True, values=False) if not is_total_key(key)]


def lot_rows(tx, sku) -> dict:
    """{lot: LotRow} of the SKU, in key order (read them, never change them)."""
    return balances(tx).lots_of_sku(sku)


def lot_qty(tx, sku, lot) -> int:
    return balances(tx).qty(sku, lot)


def lot_expiry(tx, sku, lot):
    row = balances(tx).row(sku, lot)
    return None if row is None else row.expiry


def on_hand(tx, sku) -> int:
    return balances(tx).on_hand(sku)


def serial_holders(tx, sku) -> dict:
    """{serial: lot} of the units of `sku` the ledger holds (lot None outside any lot)."""
    return {serial: lot for lot, row in balances(tx).lots_of_sku(sku).items() for serial in row.serials}


def fefo_allocate(lots, qty, today):
    """Choose lots for `qty` units, first expiring first.

    `lots` are `(lot, expiry, on_hand, recalled)` with `expiry` an ISO date or None; recalled lots,
    lots expired before `today` (ISO date) and empty lots are skipped. Returns
    `(allocations, shortfall)` with allocations `[(lot, expiry, take), ...]`.
    """
    usable = [
        (expiry is None, expiry or "", lot, expiry, on_hand)
        for lot, expiry, on_hand, recalled in lots
        if on_hand > 0 and not recalled and not (expiry is not None and expiry < today)
    ]
    usable.sort()
    allocations = []
    left = qty
    for _none_last, _exp, lot, expiry, on_hand in usable:
        if left <= 0:
            break
        take = on_hand if on_hand < left else left
        allocations.append((lot, expiry, take))
        left -= take
    return allocations, left


def apply_moves(tx, moves):
    """Apply `moves` to the balances (their rows are written when the group commits); returns the
    SKUs touched, in first-touched order."""
    state = balances(tx)
    dirty = state._dirty
    touched = []
    for sku, lot, delta, expiry, serials in moves:
        check_row_key(tx, sku, lot)
        state.apply(sku, lot, delta, expiry, serials)
        dirty.setdefault(sku, set()).add(lot)
        if sku not in touched:
            touched.append(sku)
    return touched


def check_row_key(tx, sku, lot) -> None:
    """Refuse a move whose row LMDB could not store (its key too long), now: its row is written
    only when the group commits, where it would roll back the whole group."""
    key = lot_key(sku, lot)
    if len(key) > tx.store.max_key_size:
        raise bad_request(f"a field is too long to be stored: the stock row of SKU {sku[:20]!r}, lot "
                          f"{(lot or '')[:20]!r} would take a key of {len(key)} bytes, at most "
                          f"{tx.store.max_key_size} are stored")


def lot_alerts(tx, sku, lots, today, warn_days, recalls):
    """The alerts the lots of `sku` call for now, `{alert key: alert}` (key as `_alerts.alert_key`).

    `lots` names the lots to evaluate (None: every lot the ledger holds of the SKU); each with
    stock gets `expiring` when it expires within `warn_days` of `today` and `recalled` when
    `recalls` (`{lot: recall}`, lot None = every lot) covers it.
    """
    held = balances(tx).lots_of_sku(sku)
    rows = held.items() if lots is None else ((lot, held.get(lot)) for lot in lots)
    want = {}
    for lot, row in rows:
        qty = row.qty if row is not None else 0
        if qty <= 0:
            continue
        expiry = row.expiry
        if expiry is not None:
            left = days_between(today, expiry)
            if left <= warn_days:
                want[alert_key(sku, "expiring", lot)] = {"kind": "expiring", "sku": sku, "lot": lot, "expiry": expiry,
                                                          "days_left": left, "qty": qty}
        recall = recalls.get(lot) or recalls.get(None)
        if recall is not None:
            want[alert_key(sku, "recalled", lot)] = {"kind": "recalled", "sku": sku, "lot": lot, "qty": qty,
                                                      "recall_id": recall["recall_id"], "reason": recall.get("reason", "")}
    return want




def replay(events):
    """Balances from scratch: `({(sku, lot): qty}, {sku: qty})`, zero balances left out."""
    lots = {}
    skus = {}
    for event in events:
        for sku, lot, delta, _expiry, _serials in event.get("moves") or ():
            lots[(sku, lot)] = lots.get((sku, lot), 0) + delta
            skus[sku] = skus.get(sku, 0) + delta
    return ({k: v for k, v in lots.items() if v}, {k: v for k, v in skus.items() if v})
