"""The LMDB environment: named tables of MessagePack values, and one write transaction at a time.

Only the core loop writes (py-lmdb requires a write transaction to begin and commit on one thread).
Commits are durable: the environment is opened with `sync` and `metasync` on, so when `commit()`
returns the data is on disk and survives `kill -9` and power loss.
"""
from __future__ import annotations

import functools
import os
import struct
import time
from typing import Callable

import lmdb
import msgpack

from ._errors import StoreError

SCHEMA = 3
# Schemas this gateway upgrades when it opens a store for writing: 1 is 2 without the sales' compact
# id records (`_ids.id_record`), with nothing to rewrite; 2 kept each SKU's on-hand total in a table
# of its own (`skus`), which 3 keeps beside the SKU's lots (`_upgrade`). A gateway of an older schema
# then refuses the store rather than misread it; a read-only open (a report beside a gateway) reads
# schema 3 only.
UPGRADES_FROM = (1, 2)

# Every table the gateway keeps; the owner of each is named beside it.
TABLES = (
    "meta",         # str -> value: counters and small singletons (core)
    "events",       # u64 seq -> event document, append-only (ledger)
    "ids",          # request id -> {"h": body hash, "seq", "res": first response, or a sale's "memo"} (_ids.py)
    "lots",         # sku \0 lot -> {"qty", "expiry", "serials"}; lot "" = not lot-tracked or unallocated;
                    # sku -> its on-hand total over its lots (no \0: sorted just before them, so a move
                    # writes one page, not one in each of two tables) (ledger)
    "catalog",      # sku -> catalog item (master data)
    "codes",        # "g:<gtin14>" | "h:<hibc>" | "p:<pos code>" -> sku (master data)
    "recalls",      # sku \0 lot (lot "" = every lot) -> recall (master data)
    "members",      # member id -> {"tier", "points", "name"} (master data, sales)
    "master",       # kind -> {"version", "issued_ms", "effective_ms", "pending": [...]} (upstream)
    "master_docs",  # kind \0 u64 version -> body (kept so old sales can be re-priced)
    "alerts",       # sku \0 kind \0 lot -> alert {"kind", "sku", "lot", ...} (ledger)
    "returns",      # sale id -> {line index: qty returned} (ledger)
    "counts",       # device \0 sku \0 lot -> counted units of the open cycle count
    "baskets",      # lane -> [scanned line, ...]
    "movements",    # ERP movement id -> ledger seq (upstream)
    "batches",      # u64 batch seq -> envelope bytes (upstream)
    "files",        # "<device>:<file sha256 hex>" -> a legacy POS file's progress (csv files, _csv_files.py)
    "days",         # "open" (+ a key per rule) -> the open business day's running totals; day -> its close's seq (_days.py)
)

_U64 = struct.Struct(">Q")
_pack = msgpack.Packer(use_bin_type=True).pack


_unpack = functools.partial(msgpack.unpackb, raw=False, strict_map_key=False)


def u64(n: int) -> bytes:
    return _U64.pack(n)


def from_u64(b: bytes) -> int:
    return _U64.unpack(b)[0]


def lot_key(sku: str, lot: str | None) -> bytes:
    return f"{sku}\x00{lot or ''}".encode()


def total_key(sku: str) -> bytes:
    """The `lots` key of a SKU's on-hand total (its lots' keys go on with a \0)."""
    return sku.encode()


def is_total_key(key: bytes) -> bool:
    """Whether a `lots` key is a SKU's total rather than one of its lots."""
    return b"\x00" not in key


def alert_key(sku: str, kind: str, lot: str | None) -> bytes:
    return f"{sku}\x00{kind}\x00{lot or ''}".encode()


def split_lot_key(key: bytes) -> tuple[str, str | None]:
    sku, _, lot = key.decode().partition("\x00")
    return sku, (lot or None)


def _key(k) -> bytes:
    return k if type(k) is bytes else str(k).encode()


class Store:
    """The gateway's one LMDB environment."""

    def __init__(self, path: str, *, map_size: int = 1 << 30, min_free_bytes: int = 16 << 20,
                 readonly: bool = False):
        if not readonly:
            os.makedirs(path, exist_ok=True)
        try:
            self.env = lmdb.open(
                path, map_size=map_size, max_dbs=len(TABLES) + 2, sync=True, metasync=True,
                subdir=True, lock=True, max_readers=64, readonly=readonly, create=not readonly,
            )
        except lmdb.Error as exc:
            raise StoreError(f"cannot open the data directory {path!r}: {exc}") from exc
        self.path = path
        self.map_size = map_size
        self.min_free_bytes = min_free_bytes
        self._page_size = self.env.stat()["psize"]
        if readonly:
            # A reader beside a running gateway: it creates nothing; a table not made yet is absent.
            self.db = {}
            for name in TABLES:
                try:
                    self.db[name] = self.env.open_db(name.encode(), create=False)
                except lmdb.NotFoundError:
                    pass
        else:
            self.db = {name: self.env.open_db(name.encode()) for name in TABLES}
        self.max_key_size = self.env.max_key_size()
        self.cache = {}  # objects built from stored documents (promotion engines by version)
        # In-memory state mirroring tables (the ledger's balances), by class, equal to them at each
        # commit (a state may write its rows then: `flush`); changed only inside write
        # transactions, which roll it back when they abort.
        self.states = {}
        self._group_hooks: tuple | None = None  # see `group_hooks`
        if readonly:
            with self.env.begin() as txn:
                schema = txn.get(b"schema", db=self.db["meta"]) if "meta" in self.db else None
            if schema is None or _unpack(schema) != SCHEMA:
                self.env.close()
                found = "no store" if schema is None else f"a store of schema {_unpack(schema)}"
                raise StoreError(f"{path!r} holds {found}, not of schema {SCHEMA} (a gateway of this version "
                                 "upgrades it when it starts)")
            return
        with self.env.begin(write=True) as txn:
            schema = txn.get(b"schema", db=self.db["meta"])
            if schema is None or _unpack(schema) in UPGRADES_FROM:
                self._upgrade(txn)
                txn.put(b"schema", _pack(SCHEMA), db=self.db["meta"])
            elif _unpack(schema) != SCHEMA:
                found = _unpack(schema)
                txn.abort()
                self.env.close()
                raise StoreError(f"{path!r} holds schema {found}, this gateway reads {SCHEMA}")

    def _upgrade(self, txn) -> None:
        """From schema 1 or 2: each SKU's on-hand total moves from the `skus` table into `lots`
        (`total_key`), and the count of SKUs with stock into `meta`; `skus` is dropped."""
        try:
            old = self.env.open_db(b"skus", txn=txn, create=False)
        except lmdb.NotFoundError:
            return  # a new store
        lots, held = self.db["lots"], 0
        for key, raw in txn.cursor(db=old):
            txn.put(key, raw, db=lots)
            held += 1
        txn.put(b"skus", _pack(held), db=self.db["meta"])
        txn.drop(old, delete=True)

    def close(self) -> None:
        self.env.close()

    def begin(self, *, write: bool = False, parent: "Tx | None" = None) -> "Tx":
        txn = self.env.begin(write=write, parent=parent.txn if parent else None)
        if write and parent is None and self.states:
            self._drop_stale_states(txn)
        return Tx(self, txn, parent, write)

    def _drop_stale_states(self, txn) -> None:
        """Forget states another writer of the same files has made stale (a second process on one
        data directory): each state knows the event it was last equal to, and every change to what
        it mirrors comes with an event."""
        raw = txn.get(b"last_seq", db=self.db["meta"])
        last = 0 if raw is None else _unpack(raw)
        for cls, state in list(self.states.items()):
            if state.seq != last:
                del self.states[cls]
                self._group_hooks = None

    def read(self) -> "Tx":
        return self.begin(write=False)

    def group_hooks(self) -> tuple:
        """The states' `committed_into_group` hooks (the `Tx.state` protocol), called after every
        request that appended an event: found once, and again whenever a state is loaded or dropped."""
        hooks = self._group_hooks
        if hooks is None:
            hooks = self._group_hooks = tuple(hook for state in self.states.values()
                                              if (hook := getattr(state, "committed_into_group", None)) is not None)
        return hooks

    def space_left(self) -> int:
        """Bytes still usable: the smaller of what the map and the file system can take.

        Pages in use are counted table by table, not up to LMDB's high-water mark: pages freed by a
        delete (pruned batches) are reused, so the room they leave counts as room again."""
        return self._room(self.pages_in_use() * self._page_size)

    def _room(self, used: int) -> int:
        """Bytes still usable with `used` bytes of the map in use."""
        fs = os.statvfs(self.path)
        return min(self.map_size - used, fs.f_bavail * fs.f_frsize + max(0, self.file_size() - used))

    def nearly_full(self) -> bool:
        """Whether less than `min_free_bytes` is left (`space_left`). Asked before every group, so it
        is first answered from LMDB's high-water mark, which counts freed pages as used and so gives
        a lower bound of the room left: only when that bound is below the limit are the pages in use
        counted table by table."""
        if self._room((self.env.info()["last_pgno"] + 1) * self._page_size) >= self.min_free_bytes:
            return False
        return self.space_left() < self.min_free_bytes

    def pages_in_use(self) -> int:
        """Pages holding live data: every table's tree, the main tree naming them, two meta pages."""
        with self.env.begin() as txn:
            stats = [txn.stat(db) for db in self.db.values()] + [self.env.stat()]
        return 2 + sum(s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"] for s in stats)

    def file_size(self) -> int:
        try:
            return os.path.getsize(os.path.join(self.path, "data.mdb"))
        except OSError:
            return 0


class Tx:
    """A transaction with MessagePack values; also a context manager (commit on success)."""

    __slots__ = ("store", "txn", "db", "parent", "write", "shared", "wrote", "_marks", "_last", "_appended")

    def __init__(self, store: Store, txn: lmdb.Transaction, parent: "Tx | None" = None, write: bool = False,
                 shared: bool = False):
        self.store = store
        self.txn = txn
        self.db = store.db
        self.parent = parent
        self.write = write
        # A request's transaction without an LMDB transaction of its own: it writes straight into
        # its parent's, so its abort rolls back the in-memory states only (`child(shared=True)`).
        self.shared = shared
        self.wrote = False  # whether anything was written through this transaction
        # Where each in-memory state's undo log stood when this transaction began.
        self._marks = {state: state.mark() for state in store.states.values()} if write else None
        # The log's last seq, read once: appends move it here and write it to `meta` at the commit.
        self._last = parent._last if parent is not None else None
        self._appended = False

    def __enter__(self) -> "Tx":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def commit(self, flushed: Callable[[], None] | None = None) -> None:
        """Commit; a top-level write transaction calls `flushed` (if given) once everything is in it,
        just before LMDB writes and syncs it."""
        parent = self.parent
        if not self.write or parent is not None:
            if not self.shared:
                self.txn.commit()
            if parent is not None and self.wrote:
                parent.wrote = True  # what a nested transaction wrote is its parent's now
            if parent is not None and self._appended:
                parent._last = self._last
                parent._appended = True
                if parent.parent is None:
                    # Into the group's transaction: only the group's rollback can take it back now.
                    for committed in self.store.group_hooks():
                        committed()
            return
        states = self.flush()
        if self._appended:
            self.put("meta", "last_seq", self._last)
        last = self.last_seq() if states else 0
        if flushed is not None:
            flushed()
        self.txn.commit()
        for state in states:
            state.forget()
            state.seq = last

    def flush(self) -> list:
        """Write into this, a group's own transaction, what the in-memory states keep to write at its
        commit (the ledger's changed rows, the day's totals), as the commit does first; returns the
        states. Only a group's transaction: what went into a request's would go with its abort."""
        if self.parent is not None:
            raise StoreError("only a group's own transaction is flushed")
        states = list(self.store.states.values())
        for state in states:
            flush = getattr(state, "flush", None)
            if flush is not None:
                flush(self)
        return states

    def abort(self) -> None:
        """Roll back; a shared transaction that wrote cannot be (`StoreError`: roll its parent back)."""
        if self.shared:
            if self.wrote:
                raise StoreError("a request that wrote into its group's transaction cannot be rolled back alone")
        else:
            self.txn.abort()
        if self.write:
            for state, mark in self._marks.items():
                state.rollback(mark)

    def state(self, cls):
        """The store's in-memory `cls` (loaded from this transaction on first use), which this
        transaction's commit keeps and its abort rolls back.

        The protocol of such a state: `load(tx)`, `mark()` (where its undo log stands) and
        `rollback(mark)` for an abort, `forget()` after the group's commit, and optionally
        `flush(tx)` just before it and `committed_into_group()` when a request's own transaction
        that appended events has committed into the group's."""
        state = self.store.states.get(cls)
        if state is None:
            if not self.write:
                raise StoreError(f"{cls.__name__} is kept by the writer: read it in a write transaction")
            # Loaded before this transaction changed anything it mirrors (every change goes through
            # it), so it holds what is committed; every open transaction rolls back to empty-log.
            state = self.store.states[cls] = cls.load(self)
            self.store._group_hooks = None
            state.seq = self.last_seq()
            tx = self
            while tx is not None:
                tx._marks[state] = 0
                tx = tx.parent
        return state

    def child(self, *, shared: bool = False) -> "Tx":
        """A request's transaction inside this one. A `shared` one has no LMDB transaction of its
        own and writes straight into this one: for a handler that refuses only before it writes
        anything (parse, decide, then persist), it spares LMDB's nested transaction (its begin, its
        commit, and the copy of every page it writes that this one has written already)."""
        if shared:
            return Tx(self.store, self.txn, self, True, shared=True)
        return self.store.begin(write=True, parent=self)

    # Generic table access.
    def get(self, table: str, key, default=None):
        raw = self.txn.get(_key(key), db=self.db[table])
        return default if raw is None else _unpack(raw)

    def put(self, table: str, key, value) -> None:
        self.wrote = True
        self.txn.put(_key(key), _pack(value), db=self.db[table])

    def put_raw(self, table: str, key, raw: bytes) -> None:
        self.wrote = True
        self.txn.put(_key(key), raw, db=self.db[table])

    def get_raw(self, table: str, key) -> bytes | None:
        return self.txn.get(_key(key), db=self.db[table])

    def delete(self, table: str, key) -> bool:
        self.wrote = True
        return self.txn.delete(_key(key), db=self.db[table])

    def items(self, table: str, prefix: bytes = b"", start: bytes | None = None):
        """(key bytes, value) pairs in key order, those starting with `prefix` (from `start`)."""
        with self.txn.cursor(db=self.db[table]) as cur:
            if not cur.set_range(start if start is not None else prefix):
                return
            for k, v in cur:
                if not k.startswith(prefix):
                    return
                yield k, _unpack(v)

    def clear(self, table: str) -> None:
        self.wrote = True
        self.txn.drop(self.db[table], delete=False)

    def count(self, table: str) -> int:
        return self.txn.stat(self.db[table])["entries"]

    # Meta values.
    def meta(self, name: str, default=None):
        return self.get("meta", name, default)

    def set_meta(self, name: str, value) -> None:
        self.put("meta", name, value)

    # The event log.
    def last_seq(self) -> int:
        last = self._last
        if last is None:
            last = self._last = self.meta("last_seq", 0)
        return last

    def append_event(self, doc) -> int:
        """Append `doc` to the log, giving it the next `seq` (and `ts_ms` if absent). `doc` is a
        document, or a record that packs itself to a document's bytes (the compiled sale path's
        `SaleEvent`, its `seq` set here)."""
        seq = self.last_seq() + 1
        if type(doc) is dict:
            doc["seq"] = seq
            doc.setdefault("ts_ms", int(time.time() * 1000))
            raw = _pack(doc)
        else:
            doc.seq = seq
            raw = doc.pack()
        # Into the open business day's running totals (_days.py), before the log moves on: totals
        # loaded now must be those of the events before this one.
        _observe_day(self, doc)
        self.wrote = True
        self.txn.put(u64(seq), raw, db=self.db["events"], append=True)
        self._last = seq
        self._appended = True
        return seq

    def event(self, seq: int) -> dict | None:
        raw = self.txn.get(u64(seq), db=self.db["events"])
        return None if raw is None else _unpack(raw)

    def events(self, first: int = 1, last: int | None = None):
        """Events with `first <= seq <= last` in order."""
        with self.txn.cursor(db=self.db["events"]) as cur:
            if not cur.set_range(u64(first)):
                return
            for k, v in cur:
                if last is not None and from_u64(k) > last:
                    return
                yield _unpack(v)


from ._days import observe as _observe_day  # noqa: E402  (_days reads tables through Tx)
