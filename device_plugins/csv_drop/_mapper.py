"""Legacy POS CSV files to basket documents, read as a stream.

`scan(f, mapping, index, errors)` reads a binary file from its start a line at a time: it hashes every
byte (SHA-256), parses the CSV, maps each row and hands it to `index` (see `_index.py`), which groups
rows into baskets on disk. The commonest mapping (id, code, qty) reads blocks of simple lines with
one regular expression instead of `csv` (`RowMapper.fill_lines`). Nothing of the file is held beyond
one line, or one block (`BLOCK_LINES` lines, or `BLOCK_CHARS` characters and the line that crosses
them), so memory does not grow with the file. It never raises on bad bytes: every problem becomes a `RowError`. The header is row 1; a row
number is the record's place in the file (a quoted field spanning lines is one row, as a spreadsheet
shows it).

`map_csv(data, mapping)` does the same for bytes in memory and gives the documents themselves (for
small files and tests).
"""
from __future__ import annotations

import codecs
import csv
import datetime as dt
import hashlib
import io
import itertools
import json
import operator
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

from core_ext import limits, text_problem

# The gateway fields a POS column can be mapped to.
FIELDS = ("id", "code", "qty", "lot", "expiry", "serial", "unit_cents", "member", "payment")
REQUIRED_FIELDS = ("code", "qty")
PAYMENT_METHODS = ("cash", "card", "insurance", "points")
# A file says how a basket was paid, never how much: points (a member's balance) cannot settle it.
FILE_PAYMENTS = ("cash", "card", "insurance")
PRICE_FORMATS = ("cents", "decimal")

# A document id is "<first ID_PREFIX hex digits of the file's SHA-256>:<POS id>", within ECR/1's id.
ID_PREFIX = 16
MAX_POS_ID = limits.MAX_ID - ID_PREFIX - 1
MAX_QTY = 1_000_000       # per line, in selling units after the conversion (the sale path's bound)
MAX_ERRORS = 1000         # a garbage file must not make an errors file of millions of lines
MAX_LINE_CHARS = 1 << 20  # one physical line; longer is not a POS export (and would be held whole)
CHUNK = 1 << 16

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


@dataclass(frozen=True, slots=True)
class CsvMapping:
    """How one POS's files read: which column holds each gateway field, and the units and formats."""

    columns: dict
    qty_factor: int = 1
    date_format: str = "%Y-%m-%d"
    delimiter: str = ","
    encoding: str = "utf-8"
    price_format: str = "cents"
    payment_map: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # POS payment names are matched without regard to case ("BAR", "Bar" and "bar" alike).
        object.__setattr__(self, "payment_map",
                           {str(k).casefold(): v for k, v in self.payment_map.items()})

    @classmethod
    def from_device(cls, device: dict) -> "CsvMapping":
        """The mapping of a device entry that `check_options` found valid."""
        return cls(
            columns=dict(device["columns"]),
            qty_factor=device.get("qty_factor", 1),
            date_format=device.get("date_format", "%Y-%m-%d"),
            delimiter=device.get("delimiter", ","),
            encoding=device.get("encoding", "utf-8"),
            price_format=device.get("price_format", "cents"),
            payment_map=dict(device.get("payment_map", {})),
        )

    @property
    def text_encoding(self) -> str:
        # A UTF-8 byte-order mark is skipped, as spreadsheets write one.
        utf8 = self.encoding.replace("_", "-").lower() in ("utf-8", "utf8")
        return "utf-8-sig" if utf8 else self.encoding


@dataclass(frozen=True, slots=True)
class RowError:
    """One reason a row is bad. `row` 0 means the file as a whole; `code` is a short stable label."""

    row: int
    code: str
    reason: str

    def line(self) -> str:
        where = "file" if self.row == 0 else f"row {self.row}"
        return f"{where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class CsvResult:
    """What one file maps to: `docs` when every row is good, else `errors` (and no docs)."""

    hash: str
    docs: tuple
    errors: tuple
    rows: int


@dataclass(frozen=True, slots=True)
class Scanned:
    """What reading a file gave: its hash, bytes read, data rows (blank ones not counted)."""

    hash: str
    size: int
    rows: int


class MappedRow(NamedTuple):
    """One row as the gateway reads it. `line` is None when the row is bad (its reasons are listed).
    A named tuple: one is made for every row of a file, and a tuple is the cheapest record to make."""

    row: int
    key: str | None        # the basket it belongs to (the POS id, or the row number)
    code: str | None       # kept when readable, so an unknown code is named even on a bad row
    line: dict | None
    member: str | None
    payment: str | None


class ErrorList:
    """Collects row errors up to a limit, counting the rest."""

    def __init__(self, limit: int = MAX_ERRORS) -> None:
        self.items: list[RowError] = []
        self.limit = limit
        self.dropped = 0
        self.last_row = 0
        self.count = 0  # listed and dropped: read once or twice per row, so kept rather than summed

    def __len__(self) -> int:
        return self.count

    def add(self, row: int, code: str, reason: str) -> None:
        self.count += 1
        self.last_row = max(self.last_row, row)
        if len(self.items) < self.limit:
            self.items.append(RowError(row, code, reason))
        else:
            self.dropped += 1

    def result(self) -> tuple:
        if self.dropped:
            return (*self.items, RowError(self.last_row, "more",
                                          f"{self.dropped} more errors not listed"))
        return tuple(self.items)


# --- reading: bytes to rows ------------------------------------------------------------------

class _Hashing(io.RawIOBase):
    """A binary file read through SHA-256: every byte read is hashed and counted."""

    def __init__(self, f) -> None:
        self.f = f
        self.sha = hashlib.sha256()
        self.size = 0
        self.drained = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.f.readinto(buffer)
        if n:
            self.sha.update(memoryview(buffer)[:n])
            self.size += n
        return n or 0

    def drain(self) -> None:
        """Read what is left, so the hash and size are the whole file's whatever parsing stopped."""
        buffer = bytearray(CHUNK)
        while not self.drained and self.readinto(buffer):
            pass
        self.drained = True


class _LineTooLong(Exception):
    pass


def _lines(text: io.TextIOWrapper):
    """The physical lines of `text` (line ends kept, as `csv` wants), each at most MAX_LINE_CHARS."""
    while True:
        line = text.readline(MAX_LINE_CHARS + 1)
        if not line:
            return
        if len(line) > MAX_LINE_CHARS:
            raise _LineTooLong
        yield line


def _decode_error_row(f, encoding: str) -> tuple[int, str]:
    """(row, reason) of the first bytes that are not `encoding`: lines before it, plus one."""
    f.seek(0)
    decoder = codecs.getincrementaldecoder(encoding)()
    newlines = 0
    while True:
        chunk = f.read(CHUNK)
        pending = decoder.getstate()[0]
        try:
            decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            # Buffered decoders report the position within what they held back plus the chunk.
            data = pending + chunk
            return newlines - pending.count(b"\n") + data[:exc.start].count(b"\n") + 1, exc.reason
        if not chunk:
            return newlines + 1, "undecodable bytes"
        newlines += chunk.count(b"\n")


class _Records:
    """The records of a file's text: (row number, fields) from `csv` one at a time, or `block()`, the
    next lines as they are, for a caller that reads simple lines itself (`RowMapper.fill_lines`).
    Both read the same lines (`_lines`) and count the same rows; `csv` only ever reads a record's own
    lines, so the two take turns between records. Unreadable bytes end the records with their error."""

    def __init__(self, f, mapping: CsvMapping, errors: ErrorList, hashing: _Hashing):
        self.f, self.mapping, self.errors, self.hashing = f, mapping, errors, hashing
        text = io.TextIOWrapper(io.BufferedReader(hashing, CHUNK), encoding=mapping.text_encoding,
                                newline="", errors="strict")
        self.lines = _lines(text)
        self.row_no = 0
        self.pending: BaseException | None = None  # what stopped `block`, listed by `list_pending`

    def __iter__(self):
        return self.parsed(self.lines)

    def parsed(self, lines):
        """(row number, fields) of each record of `lines`, which go on where the rows read stand."""
        reader = csv.reader(lines, delimiter=self.mapping.delimiter, strict=True)
        try:
            for fields in reader:
                self.row_no += 1
                yield self.row_no, fields
        except csv.Error as exc:
            self.errors.add(self.row_no + 1, "csv", f"is not well-formed CSV: {exc}")
        except (_LineTooLong, UnicodeDecodeError) as exc:
            self._unreadable(exc)

    def block(self, size: int, max_chars: int) -> list[str]:
        """The next `size` lines at most, line ends kept, stopping at the line that reaches
        `max_chars` characters (a line may be up to MAX_LINE_CHARS long: a count alone would hold
        hundreds of them); fewer at the end, or where the bytes stop being readable (the error is
        listed once the caller has read the lines before it: `list_pending`)."""
        out: list[str] = []
        chars = 0
        try:
            for line in self.lines:
                out.append(line)
                chars += len(line)
                if len(out) >= size or chars >= max_chars:
                    break
        except (_LineTooLong, UnicodeDecodeError) as exc:
            self.pending = exc
        return out

    def list_pending(self) -> None:
        """List the failure `block` met, if it did, once the rows before it are read."""
        if self.pending is not None:
            self._unreadable(self.pending)

    def _unreadable(self, exc: BaseException) -> None:
        if isinstance(exc, _LineTooLong):
            self.errors.add(self.row_no + 1, "csv", f"has a line longer than {MAX_LINE_CHARS} characters")
            return
        self.hashing.drain()  # the whole file hashed before its bytes are read again from the start
        row, reason = _decode_error_row(self.f, self.mapping.text_encoding)
        self.errors.add(row, "encoding", f"bytes that are not {self.mapping.encoding}: {reason}")


def scan(f, mapping: CsvMapping, index, errors: ErrorList) -> Scanned:
    """Read the binary file `f` from its start into `index`, listing every bad row in `errors`."""
    hashing = _Hashing(f)
    records = _Records(f, mapping, errors, hashing)
    mapper = _read_header(iter(records), mapping, errors)
    rows = mapper.fill_lines(records, index) if mapper is not None else 0
    hashing.drain()
    return Scanned(hashing.sha.hexdigest(), hashing.size, rows)


def _blank(fields: list) -> bool:
    return not "".join(fields).strip()  # no field holds more than spaces


def _read_header(records, mapping: CsvMapping, errors: ErrorList) -> "RowMapper | None":
    """The mapper of the file's header, its first record; None when it has none that maps (listed)."""
    leading_blank = False
    for _row_no, fields in records:
        if _blank(fields):
            leading_blank = True
        elif leading_blank:
            errors.add(1, "header", "the header must be the first row, not a blank one")
            return None
        else:
            return _header(fields, mapping, errors)
    if not len(errors):
        errors.add(1, "empty", "the file is empty: no header row")
    return None


def map_csv(data: bytes, mapping: CsvMapping) -> CsvResult:
    """Map the bytes of one CSV file to basket documents (see the module docstring)."""
    from ._index import BasketIndex

    errors = ErrorList()
    with BasketIndex(":memory:") as index:
        scanned = scan(io.BytesIO(data), mapping, index, errors)
        if len(errors):
            return CsvResult(scanned.hash, (), errors.result(), scanned.rows)
        docs = tuple(doc for _first, docs in index.slices(scanned.hash, 0, lambda: (1 << 30, 1 << 30)) for doc in docs)
    return CsvResult(scanned.hash, docs, (), scanned.rows)


# --- mapping: a row to a line ----------------------------------------------------------------

def _header(fields: list, mapping: CsvMapping, errors: ErrorList) -> "RowMapper | None":
    header = [h.strip() for h in fields]
    index = {}
    for name, column in mapping.columns.items():
        found = [i for i, h in enumerate(header) if h == column]
        if not found:
            errors.add(1, "header", f"column {column!r} (mapped to {name}) is not in the header")
        elif len(found) > 1:
            errors.add(1, "header", f"column {column!r} (mapped to {name}) is in the header "
                                    f"{len(found)} times")
        else:
            index[name] = found[0]
    return None if len(errors) else RowMapper(index, len(header), mapping, errors)


class RowMapper:
    """Maps the data rows of a file whose header was read: fields in, a `MappedRow` out."""

    def __init__(self, index: dict, width: int, mapping: CsvMapping, errors: ErrorList):
        self.index = index
        self.width = width
        self.mapping = mapping
        self.errors = errors
        # What most POS exports map: a ticket id, a code and a qty (`fill`), by field index.
        self._plain = set(index) <= {"id", "code", "qty"}
        self._code_at, self._qty_at, self._id_at = index["code"], index["qty"], index.get("id")
        self._rows = _plain_rows(width, self._id_at, self._code_at, self._qty_at, mapping.delimiter) \
            if self._plain else None

    def fill_lines(self, records: "_Records", index) -> int:
        """`fill` from the file's lines themselves: a block of simple lines (no quote or lone carriage
        return, no field beyond `csv`'s limit) is read by one regular expression that takes
        each plainly good row apart (`_plain_rows`); the others of the block are split at the
        delimiter, which is what `csv` makes of a simple line, and mapped the full way. From the first
        block that is not simple, `csv` reads the rest of the file: that block, then the lines after
        it (none when the block ended at unreadable bytes, listed once the rows before them are)."""
        rows = 0
        block: list[str] = []
        if self._rows is not None:
            while block := records.block(BLOCK_LINES, BLOCK_CHARS):
                text = "".join(block)
                if not _simple(text, block):
                    break
                rows += self._fill_block(text, records.row_no, index)
                records.row_no += len(block)
        rows += self.fill(records.parsed(itertools.chain(block, records.lines)), index)
        records.list_pending()
        return rows

    def _fill_block(self, text: str, row_no: int, index) -> int:
        """`fill` of the simple lines `text`, whose first is the row after `row_no`."""
        errors, add, add_plain = self.errors, index.add, index.add_plain
        factor, delimiter, width = self.mapping.qty_factor, self.mapping.delimiter, self.width
        rows = 0
        if not text.endswith("\n"):
            text += "\n"  # the file's last line, which `csv` reads as if it ended
        for key, code, qty_raw, odd in self._rows(text):
            row_no += 1
            if code:
                if key is None:
                    key = str(row_no)
                qty = int(qty_raw) * factor
                if len(code) <= limits.MAX_CODE and len(key) <= MAX_POS_ID and 0 < qty <= MAX_QTY:
                    rows += 1
                    add_plain(row_no, key, code, qty, errors)
                    continue
                fields = self._fields(key, code, qty_raw)
            else:
                fields = odd.split(delimiter)
            if not _blank(fields):
                rows += 1
                add(self.row(row_no, fields), errors)
        return rows

    def _fields(self, key: str, code: str, qty: str) -> list:
        """The fields of a row the expression took apart, as `row` reads them (it reads no others)."""
        fields = [""] * self.width
        fields[self._code_at], fields[self._qty_at] = code, qty
        if self._id_at is not None:
            fields[self._id_at] = key
        return fields

    def fill(self, records, index) -> int:
        """Map every data row of `records` (the rows after the header) into `index`; returns how
        many there were (blank rows are not counted).

        A plainly good row of an id/code/qty mapping, what most rows of most POS exports are, is
        checked here in one pass over its three fields and kept with `index.add_plain`; any other
        row (an empty, long or odd field, any character a field may not hold, another mapping) is
        mapped the full way (`row`), which lists its errors. One loop with no call per row for its
        fields reads a 200,000-row file in a quarter less time than a mapping and a record per row."""
        errors, add, add_plain = self.errors, index.add, index.add_plain
        plain, plain_text, factor = self._plain, limits.plain_text, self.mapping.qty_factor
        width, code_at, qty_at, id_at = self.width, self._code_at, self._qty_at, self._id_at
        rows = 0
        for row_no, fields in records:
            if plain and len(fields) == width:
                code, qty_raw = fields[code_at].strip(), fields[qty_at].strip()
                key = fields[id_at].strip() if id_at is not None else str(row_no)
                if (code and len(code) <= limits.MAX_CODE and qty_raw.isascii() and qty_raw.isdigit()
                        and len(qty_raw) <= 24 and key and len(key) <= MAX_POS_ID):
                    qty = int(qty_raw) * factor
                    if 0 < qty <= MAX_QTY and plain_text(code + qty_raw + key):
                        rows += 1
                        add_plain(row_no, key, code, qty, errors)
                        continue
            if not _blank(fields):
                rows += 1
                add(self.row(row_no, fields), errors)
        return rows

    def row(self, row: int, fields: list) -> MappedRow:
        """One data row mapped, every reason it is bad listed."""
        errors = self.errors
        before = errors.count
        if len(fields) != self.width:
            errors.add(row, "fields", f"has {len(fields)} fields where the header has {self.width}")
            return MappedRow(row, None, None, None, None, None)
        values = {name: fields[i].strip() for name, i in self.index.items()}
        line, code_ok = _line(row, values, self.mapping, errors)
        key = _basket_key(row, values, "id" in self.index, errors)
        member = _text(row, "member", values.get("member", ""), limits.MAX_TEXT, errors)
        payment = _payment(row, values.get("payment", ""), self.mapping, errors)
        code = line["code"] if code_ok else None
        good = errors.count == before
        return MappedRow(row, key, code, line if good else None, member, payment)


# --- simple lines, read without `csv` ---------------------------------------------------------

BLOCK_LINES = 512  # lines read together by `RowMapper.fill_lines`, at most
BLOCK_CHARS = 1 << 16  # and at most this many characters, and the line that crosses them
_PRINTABLE = "".join(map(chr, range(0x21, 0x7F)))  # ASCII, no space or control


def _simple(text: str, lines: list[str]) -> bool:
    """Whether `csv` reads every line of `text` (the joined `lines`) as its split at the delimiter:
    no quote, no carriage return but before a line feed, and no line with a field beyond `csv`'s
    limit."""
    if '"' in text or text.count("\r") != text.count("\r\n"):
        return False
    return len(text) <= csv.field_size_limit() or max(map(len, lines)) <= csv.field_size_limit()


def _plain_rows(width: int, id_at: int | None, code_at: int, qty_at: int, delimiter: str):
    """`rows(text)` for simple lines (each ending in a line feed): (key, code, qty, line) for each,
    where a plainly good row gives its stripped key (None without an id column), code and qty digits
    and an empty line, and any other row "" for the three and its line without the line end.

    Plainly good: each mapped field printable ASCII (no quote or delimiter), with spaces between
    words and around, and the qty digits only; what `fill` checks besides (lengths and the qty's
    bounds) is left to the caller. None where the delimiter is a space, which such a field may hold."""
    if delimiter == " ":
        return None
    inner = re.escape(_PRINTABLE.replace(delimiter, "").replace('"', ""))
    word = f"[{inner}]++"
    text = f" *+({word}(?: ++{word})*+) *+"
    qty = " *+([0-9]{1,24}+) *+"
    other = f"[^{re.escape(delimiter)}\\r\\n]*+"
    fields = [text if i in (id_at, code_at) else qty if i == qty_at else other for i in range(width)]
    pattern = re.compile(f"(?:{re.escape(delimiter).join(fields)}|(.*?))\\r?\\n")
    # The groups come in the columns' order; the caller takes them as (key, code, qty, line).
    order = sorted(at for at in (id_at, code_at, qty_at) if at is not None)
    pick = [order.index(at) for at in (code_at, qty_at)] + [len(order)]
    if id_at is None:
        take = operator.itemgetter(*pick)
        return lambda text_: ((None, *t) for t in map(take, pattern.findall(text_)))
    take = operator.itemgetter(order.index(id_at), *pick)
    return lambda text_: map(take, pattern.findall(text_))


def _text(row: int, name: str, value: str, max_len: int, errors: ErrorList, *, allow_gs=False) -> str | None:
    """`value` when empty (None) or acceptable to ECR/1; else its reason is listed."""
    if not value:
        return None
    problem = text_problem(value, max_len, allow_gs=allow_gs)
    if problem is not None:
        errors.add(row, name, f"{name} {problem}")
        return None
    return value


def _line(row: int, values: dict, mapping: CsvMapping, errors: ErrorList) -> tuple[dict, bool]:
    """The row's line, and whether its code is one ECR/1 accepts."""
    code = values["code"]
    if not code:
        errors.add(row, "code", "code is empty")
        code_ok = False
    else:
        code_ok = _text(row, "code", code, limits.MAX_CODE, errors, allow_gs=True) is not None
    line: dict = {"code": code, "qty": _qty(row, values["qty"], mapping.qty_factor, errors)}
    for name in ("lot", "serial"):
        value = _text(row, name, values.get(name, ""), limits.MAX_TEXT, errors)
        if value:
            line[name] = value
    if "serial" in line and abs(line["qty"]) > 1:
        errors.add(row, "serial", f"qty is {line['qty']} with a serial: a serial names one unit")
    if values.get("expiry"):
        expiry = _date(values["expiry"], mapping.date_format)
        if expiry is None:
            errors.add(row, "expiry", f"expiry {_short(values['expiry'])} is not a date "
                                      f"of the form {mapping.date_format}")
        else:
            line["expiry"] = expiry
    if values.get("unit_cents"):
        cents = _cents(values["unit_cents"], mapping)
        if cents is None:
            errors.add(row, "unit_cents", f"price {_short(values['unit_cents'])} is not "
                                          f"{'an amount' if mapping.price_format == 'decimal' else 'whole cents'}")
        else:
            line["unit_cents"] = cents
    return line, code_ok


def _qty(row: int, raw: str, factor: int, errors: ErrorList) -> int:
    if not raw:
        errors.add(row, "qty", "qty is empty")
        return 0
    if raw.isascii() and raw.isdigit() and len(raw) <= 24:
        qty = int(raw) * factor  # plain digits, as nearly every row has: no Decimal needed
        if qty == 0:
            errors.add(row, "qty", "qty is zero")
        elif qty > MAX_QTY:
            errors.add(row, "qty", f"qty {qty} is beyond {MAX_QTY} units")
        return qty
    if len(raw) > 24 or not _NUMBER.fullmatch(raw):
        errors.add(row, "qty", f"qty {_short(raw)} is not a number")
        return 0
    qty = Decimal(raw) * factor
    if qty != qty.to_integral_value():
        errors.add(row, "qty", f"qty {raw} times {factor} is not a whole number of units")
        return 0
    qty = int(qty)
    if qty == 0:
        errors.add(row, "qty", "qty is zero")
    elif abs(qty) > MAX_QTY:
        errors.add(row, "qty", f"qty {qty} is beyond {MAX_QTY} units")
    return qty


def _date(raw: str, fmt: str) -> str | None:
    try:
        return dt.datetime.strptime(raw, fmt).date().isoformat()
    except ValueError:
        return None


def _cents(raw: str, mapping: CsvMapping) -> int | None:
    if len(raw) > 24 or not _NUMBER.fullmatch(raw):
        return None
    amount = Decimal(raw) * (100 if mapping.price_format == "decimal" else 1)
    if amount != amount.to_integral_value() or amount < 0:
        return None
    # The POS prices its own unit; the gateway's unit is 1/qty_factor of it. The core prices the
    # basket itself, so this is the POS's figure kept for reconciliation, rounded half up to a cent.
    per_unit = (amount / mapping.qty_factor).quantize(Decimal(1), rounding="ROUND_HALF_UP")
    return int(per_unit)


def _basket_key(row: int, values: dict, has_id: bool, errors: ErrorList) -> str | None:
    if not has_id:
        return str(row)
    pos_id = values["id"]
    if not pos_id:
        errors.add(row, "id", "id is empty")
        return None
    return _text(row, "id", pos_id, MAX_POS_ID, errors)


def _payment(row: int, raw: str, mapping: CsvMapping, errors: ErrorList) -> str | None:
    if not raw:
        return None
    method = mapping.payment_map.get(raw.casefold(), raw.casefold())
    if method not in PAYMENT_METHODS:
        errors.add(row, "payment", f"payment {_short(raw)} is none of "
                                   f"{', '.join(PAYMENT_METHODS)} (see payment_map)")
        return None
    if method not in FILE_PAYMENTS:
        errors.add(row, "payment", f"payment {_short(raw)} is {method}, which cannot settle a file's "
                                   f"basket (use {', '.join(FILE_PAYMENTS)})")
        return None
    return method


def _short(raw: str) -> str:
    """A value quoted for an error message, cut so one bad field cannot flood the errors file."""
    return repr(raw if len(raw) <= 40 else raw[:40] + "...")


def encode_extras(line: dict) -> str | None:
    """What a line holds beyond its code and qty (lot, serial, expiry, price), or None: most lines
    hold nothing more, and are kept as two columns."""
    if len(line) == 2:
        return None
    return json.dumps({k: v for k, v in line.items() if k not in ("code", "qty")}, separators=(",", ":"),
                      ensure_ascii=False)


def decode_line(code: str, qty: int, extras: str | None) -> dict:
    line = {"code": code, "qty": qty}
    if extras is not None:
        line.update(json.loads(extras))
    return line
