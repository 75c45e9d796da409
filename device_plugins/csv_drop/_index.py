"""A file's rows grouped into baskets, on disk, so that memory does not grow with the file.

Rows that share an `id` form one basket wherever they stand in the file, so a basket is complete
only once the whole file is read. The mapper adds each row as it reads it; the rows wait in a
scratch SQLite database (a temporary file, its page cache bounded), and are read back basket by
basket, in the order each basket was first seen, a slice at a time. The database is scratch: it is
rebuilt from the file whenever the file is taken again (after a restart, say), and deleted after.

Rows are kept by runs: the consecutive rows of one basket are one run (MessagePack, at most
`_CHUNK_ROWS` rows), ended when the file's rows move on to another basket. A basket's first run is
kept in its own `baskets` row, any later one (the basket's rows come back later in the file, or
outnumber a run) in `chunks`. A POS exports a basket's rows together, so a basket is nearly always
one run: one statement's row where a row per line took three, and none in `chunks`; they are read
back in the order of the tables' keys, with no index to build. A basket's row is written once, when
the rows move on, new baskets and later runs a thousand at a time. Whether a key
was seen before (its rows come back later in the file) is asked of a fixed-size filter of the keys
seen (`_KeyFilter`) first: only a key it may hold is looked up, so a new key, nearly every one,
costs no statement of its own, and the memory stays the same whatever the file's size. The file's
distinct codes go to a table of their own, a few thousand at a time.
"""
from __future__ import annotations

import os
import sqlite3

import msgpack

from core_ext import limits

from ._mapper import ID_PREFIX, ErrorList, MappedRow, _short, decode_line, encode_extras

_SCHEMA = """
CREATE TABLE baskets (ord INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, lines INTEGER NOT NULL,
                      member TEXT, member_row INTEGER, payment TEXT, payment_row INTEGER,
                      row INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE chunks (basket INTEGER NOT NULL, row INTEGER NOT NULL, data BLOB NOT NULL,
                     PRIMARY KEY (basket, row)) WITHOUT ROWID;
CREATE TABLE codes (code TEXT PRIMARY KEY) WITHOUT ROWID;
"""
# A run of rows (a basket's first in `baskets`, any other in `chunks`): its basket's `ord` (NO_BASKET
# for rows that belong to none, always in `chunks`), its first row's number, and for each row
# `row, code, qty, extras` one after another in one MessagePack array. A row's line is applied when
# it has a qty: a bad row is kept only for its code, which the check names on every row holding it.
NO_BASKET = -1
_FIELDS = 4  # values a row takes in a run
_CHUNK_ROWS = 512  # rows of one run at most: a basket of a million bad rows is held a run at a time
_CODES_HELD = 4096  # distinct codes held in memory before they are written
_CACHE_KIB = 2048  # SQLite's page cache; the rest of the scratch stays on disk
_BATCH = 1000  # runs, or new baskets, written per statement
_pack = msgpack.Packer(use_bin_type=True).pack
# The key filter: 512 KiB whatever the file; a million baskets in, about 1 new key in 7 is a false "maybe".
_FILTER_BITS = 1 << 22
_FILTER_MASK = _FILTER_BITS - 1


class _Basket:
    """The basket the last rows went to, kept in memory until rows go to another one; `stored`
    when its row is in the database already (its rows came back after another basket's), else
    `first_run`, its first run's first row and values, once that run has ended."""

    __slots__ = ("ord", "key", "lines", "member", "member_row", "payment", "payment_row", "stored", "first_run")

    def __init__(self, ord_, key, lines=0, member=None, member_row=None, payment=None, payment_row=None, *,
                 stored=False):
        self.ord, self.key, self.lines = ord_, key, lines
        self.member, self.member_row, self.payment, self.payment_row = member, member_row, payment, payment_row
        self.stored = stored
        self.first_run: tuple[int, bytes] | None = None

    def row(self) -> tuple:
        """The values of `_WRITE_AGAIN`, in its order (`_WRITE`'s begin with them)."""
        return self.lines, self.member, self.member_row, self.payment, self.payment_row, self.ord, self.key


# Statements by what their rows hold: most baskets name no member or payment and most lines hold
# only a code and a qty, and sqlite3 binds a None through its slower adapting path.
_WRITE_PLAIN = "INSERT INTO baskets (lines, ord, key, row, data) VALUES (?, ?, ?, ?, ?)"
_WRITE = ("INSERT INTO baskets (lines, member, member_row, payment, payment_row, ord, key, row, data) "
          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
_WRITE_AGAIN = ("UPDATE baskets SET lines = ?, member = ?, member_row = ?, payment = ?, payment_row = ? "
                "WHERE ord = ? AND key = ?")
_CHUNK = "INSERT INTO chunks (basket, row, data) VALUES (?, ?, ?)"
_CODE = "INSERT OR IGNORE INTO codes (code) VALUES (?)"


class _KeyFilter:
    """Which basket keys may have been seen: a Bloom filter of `_FILTER_BITS` bits probed twice.
    Never a false "no"; now and then a false "maybe", which a lookup settles."""

    __slots__ = ("bits",)

    def __init__(self):
        self.bits = bytearray(_FILTER_BITS >> 3)

    def add(self, key: str) -> bool:
        """Note `key`; whether it may have been noted before."""
        h = hash(key)  # the process's own string hash: the filter never outlives the process
        first, second = h & _FILTER_MASK, (h >> 32) & _FILTER_MASK
        bits = self.bits
        maybe = bits[first >> 3] >> (first & 7) & bits[second >> 3] >> (second & 7) & 1
        bits[first >> 3] |= 1 << (first & 7)
        bits[second >> 3] |= 1 << (second & 7)
        return bool(maybe)


class BasketIndex:
    """Baskets of one file: `add` each mapped row, then `codes`, `rows_with` and `slices`."""

    def __init__(self, path: str):
        self.path = path
        # One thread at a time uses it, though not always the same one (trio's worker threads).
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.executescript(f"PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; "
                              f"PRAGMA cache_size=-{_CACHE_KIB}; PRAGMA temp_store=FILE; BEGIN; {_SCHEMA}")
        self.baskets = 0
        self._current: _Basket | None = None
        # The run being read: its basket's ord, its first row, its rows' values.
        self._run_basket, self._run_row, self._run = NO_BASKET, 0, []
        # Runs, new baskets (by the statement that writes them) and codes not written yet.
        self._runs: list[tuple] = []
        self._new_baskets: dict[str, list[tuple]] = {_WRITE_PLAIN: [], _WRITE: []}
        self._codes: set[str] = set()
        self._seen = _KeyFilter()
        self._finished = False

    def __enter__(self) -> "BasketIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()
        if self.path != ":memory:":
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    # --- filling, while the file is read -------------------------------------------------------

    def add(self, mapped: MappedRow, errors: ErrorList) -> None:
        """One data row; a row that breaks its basket's rules is listed in `errors`, not kept."""
        basket = self._basket(mapped.key) if mapped.key is not None else None
        line = mapped.line if basket is not None else None
        if line is not None and not self._agrees(basket, mapped, errors):
            line = None
        if line is not None:
            basket.lines += 1
            if basket.lines > limits.MAX_LINES:
                errors.add(mapped.row, "lines", f"basket {_short(basket.key)} has more than "
                                                f"{limits.MAX_LINES} lines, the most one basket may hold")
                line = None
        self._keep(basket.ord if basket is not None else NO_BASKET, mapped.row, mapped.code,
                   None if line is None else line["qty"],
                   None if line is None or len(line) == 2 else encode_extras(line))  # most: code and qty only

    def add_plain(self, row: int, key: str, code: str, qty: int, errors: ErrorList) -> None:
        """`add` of a good row that gives only a basket key, a code and a qty: most rows of most files."""
        basket = self._current
        if basket is None or basket.key != key:
            basket = self._basket(key)
        if basket.lines >= limits.MAX_LINES:
            self.add(MappedRow(row, key, code, {"code": code, "qty": qty}, None, None), errors)
            return
        basket.lines += 1
        self._keep(basket.ord, row, code, qty, None)

    def _keep(self, ord_: int, row: int, code: str | None, qty: int | None, extras: str | None) -> None:
        """Add a row to the run being read, which ends when its basket does (or at `_CHUNK_ROWS`)."""
        run = self._run
        if ord_ != self._run_basket or len(run) >= _CHUNK_ROWS * _FIELDS:
            self._end_run()
            self._run_basket, self._run_row = ord_, row
        run += (row, code, qty, extras)
        if code is not None and code not in self._codes:
            self._codes.add(code)
            if len(self._codes) >= _CODES_HELD:
                self._flush_codes()

    def _end_run(self) -> None:
        run = self._run
        if not run:
            return
        packed = _pack(run)
        run.clear()
        current = self._current
        if (current is not None and current.ord == self._run_basket and not current.stored
                and current.first_run is None):
            current.first_run = (self._run_row, packed)  # written with the basket's row
            return
        self._runs.append((self._run_basket, self._run_row, packed))
        if len(self._runs) >= _BATCH:
            self._flush_runs()

    def _basket(self, key: str) -> _Basket:
        current = self._current
        if current is not None and current.key == key:
            return current
        self._end_run()  # the run of the basket left behind, which its row may hold
        self._leave(current)
        found = self._stored(key) if self._seen.add(key) else None
        if found is None:
            found = _Basket(self.baskets, key)
            self.baskets += 1
        self._current = found
        return found

    def _stored(self, key: str) -> _Basket | None:
        """The basket `key` as written before, or None when it is new after all."""
        self._flush_baskets()
        row = self.db.execute("SELECT ord, key, lines, member, member_row, payment, payment_row "
                              "FROM baskets WHERE key = ?", (key,)).fetchone()
        return None if row is None else _Basket(*row, stored=True)

    def _leave(self, basket: _Basket | None) -> None:
        """Write the basket the rows move on from: a new one with the next batch, one seen before now."""
        if basket is None:
            return
        if basket.stored:
            self.db.execute(_WRITE_AGAIN, basket.row())
            return
        if basket.member is None and basket.payment is None:
            pending = self._new_baskets[_WRITE_PLAIN]
            pending.append((basket.lines, basket.ord, basket.key, *basket.first_run))
        else:
            pending = self._new_baskets[_WRITE]
            pending.append((*basket.row(), *basket.first_run))
        if len(pending) >= _BATCH:
            self._flush_baskets()

    def _flush_baskets(self) -> None:
        self._write(self._new_baskets)

    def _flush_runs(self) -> None:
        if self._runs:
            self.db.executemany(_CHUNK, self._runs)
            self._runs.clear()

    def _flush_codes(self) -> None:
        self.db.executemany(_CODE, ((code,) for code in self._codes))
        self._codes.clear()

    def _write(self, pending: dict[str, list[tuple]]) -> None:
        for statement, rows in pending.items():
            if rows:
                self.db.executemany(statement, rows)
                rows.clear()

    @staticmethod
    def _agrees(basket: _Basket, mapped: MappedRow, errors: ErrorList) -> bool:
        """Every row of a basket that gives a member or a payment must give the same one."""
        if mapped.member is None and mapped.payment is None:
            return True  # most rows give neither
        ok = True
        for name in ("member", "payment"):
            value = getattr(mapped, name)
            if value is None:
                continue
            have = getattr(basket, name)
            if have is None:
                setattr(basket, name, value)
                setattr(basket, name + "_row", mapped.row)
            elif have != value:
                errors.add(mapped.row, name, f"{name} {_short(value)} differs from {_short(have)} given "
                                             f"for the same basket on row {getattr(basket, name + '_row')}")
                ok = False
        return ok

    def finish(self) -> None:
        """The file is read: write what waits and index the rows for reading back."""
        if self._finished:
            return
        self._end_run()
        self._leave(self._current)
        self._current = None
        self._flush_baskets()
        self._flush_runs()
        self._flush_codes()
        self.db.execute("COMMIT")
        self._finished = True

    # --- reading back ----------------------------------------------------------------------------

    def codes(self, batch: int):
        """The distinct codes of the file, `batch` at a time (in code order)."""
        self.finish()
        cursor = self.db.execute("SELECT code FROM codes ORDER BY code")
        while chunk := cursor.fetchmany(batch):
            yield [code for (code,) in chunk]

    def rows_with(self, codes: list):
        """(row, code) of every row holding one of `codes`, in row order (read as they are used).
        Runs hold consecutive rows, so runs in the order of their first rows are the file's order."""
        self.finish()
        wanted = set(codes)
        for (data,) in self.db.execute("SELECT data FROM (SELECT row, data FROM baskets UNION ALL "
                                       "SELECT row, data FROM chunks) ORDER BY row"):
            run = msgpack.unpackb(data)
            for i in range(0, len(run), _FIELDS):
                if run[i + 1] in wanted:
                    yield run[i], run[i + 1]

    def slices(self, digest: str, start: int, size):
        """(index of the first basket, [basket documents]) from basket `start` on, in order.

        `size()` gives (max baskets, max lines) of each slice as it is begun, so a slice's size may
        follow the answers to the ones before it. A slice holds at most that many baskets and lines,
        but always one basket (a basket is never split: it is one sale).
        """
        self.finish()
        out: list[dict] = []
        first, lines = start, 0
        max_baskets, max_lines = size()
        for doc in self._docs(digest, start):
            if out and (len(out) >= max_baskets or lines + len(doc["lines"]) > max_lines):
                yield first, out
                first, out, lines = first + len(out), [], 0
                max_baskets, max_lines = size()
            out.append(doc)
            lines += len(doc["lines"])
        if out:
            yield first, out

    def _docs(self, digest: str, start: int):
        """Each basket's document from basket `start` on, of its lines that have a qty: its first
        run from its own row, then its later runs, if any, from `chunks`, in row order."""
        baskets = self.db.execute("SELECT ord, key, member, payment, data FROM baskets WHERE ord >= ? "
                                  "ORDER BY ord", (start,))
        later = self._later_runs(start)
        run_basket, run = next(later, (None, None))
        while fetched := baskets.fetchmany(256):
            for basket, key, member, payment, data in fetched:
                doc = _new_doc(digest, key, member, payment)
                _add_lines(doc, data)
                while run_basket == basket:
                    _add_lines(doc, run)
                    run_basket, run = next(later, (None, None))
                if doc["lines"]:
                    yield doc

    def _later_runs(self, start: int):
        """(basket, data) of the runs in `chunks` of baskets from `start` on, in basket and row order."""
        cursor = self.db.execute("SELECT basket, data FROM chunks WHERE basket >= ? ORDER BY basket, row", (start,))
        while fetched := cursor.fetchmany(256):
            yield from fetched


def _add_lines(doc: dict, data: bytes) -> None:
    """The rows of the run `data` that have a qty, into `doc`."""
    run = msgpack.unpackb(data)
    rows, lines = doc["rows"], doc["lines"]
    for i in range(0, len(run), _FIELDS):
        qty = run[i + 2]
        if qty is not None:
            rows.append(run[i])
            lines.append(decode_line(run[i + 1], qty, run[i + 3]))


def _new_doc(digest: str, key: str, member, payment) -> dict:
    doc = {"t": "sale", "id": f"{digest[:ID_PREFIX]}:{key}", "rows": [], "lines": []}
    if member is not None:
        doc["member"] = member
    if payment is not None:
        doc["payment"] = payment
    return doc
