"""Legacy POS CSV files to basket documents, without I/O.

`map_csv(data, mapping)` takes the bytes of one whole file and gives either the basket documents of
a `csv_file` request or the list of bad rows with their reasons. It never raises on bad bytes: every
problem of the file becomes a `RowError`. The header is row 1; a row number is the record's place in
the file (a quoted field spanning lines is one row, as a spreadsheet shows it).
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import re
from dataclasses import dataclass, field
from decimal import Decimal

# The gateway fields a POS column can be mapped to.
FIELDS = ("id", "code", "qty", "lot", "expiry", "serial", "unit_cents", "member", "payment")
REQUIRED_FIELDS = ("code", "qty")
PAYMENT_METHODS = ("cash", "card", "insurance", "points")
PRICE_FORMATS = ("cents", "decimal")

# ECR/1 ids are 1-64 characters; a document id is "<16 hex>:<POS id>", which leaves 47 for the POS id.
MAX_POS_ID = 64 - 17
MAX_TEXT = 64        # lot, serial, member
MAX_CODE = 128       # a raw GS1 or HIBC scan can be long
MAX_QTY = 1_000_000  # per line, in selling units after the conversion
MAX_ERRORS = 1000    # a garbage file must not make an errors file of millions of lines

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


class _Errors:
    """Collects row errors up to a limit, counting the rest."""

    def __init__(self) -> None:
        self.items: list[RowError] = []
        self.dropped = 0
        self.last_row = 0

    def add(self, row: int, code: str, reason: str) -> None:
        self.last_row = max(self.last_row, row)
        if len(self.items) < MAX_ERRORS:
            self.items.append(RowError(row, code, reason))
        else:
            self.dropped += 1

    def result(self) -> tuple:
        if self.dropped:
            return (*self.items, RowError(self.last_row, "more",
                                          f"{self.dropped} more errors not listed"))
        return tuple(self.items)


def map_csv(data: bytes, mapping: CsvMapping) -> CsvResult:
    """Map the bytes of one CSV file to basket documents (see the module docstring)."""
    digest = hashlib.sha256(data).hexdigest()
    errors = _Errors()
    records = _records(data, mapping, errors)
    if records is None:
        return CsvResult(digest, (), errors.result(), 0)
    header, rows = records
    index = _header_index(header, mapping, errors)
    if index is None:
        return CsvResult(digest, (), errors.result(), len(rows))

    baskets: dict[str, dict] = {}
    for row_no, fields in rows:
        if len(fields) != len(header):
            errors.add(row_no, "fields",
                       f"has {len(fields)} fields where the header has {len(header)}")
            continue
        values = {name: fields[i].strip() for name, i in index.items()}
        line = _line(row_no, values, mapping, errors)
        key = _basket_key(row_no, values, "id" in index, errors)
        if line is None or key is None:
            continue
        basket = baskets.setdefault(key, {"rows": [], "lines": [], "extra": {}})
        if not _basket_extra(row_no, values, basket, mapping, errors):
            continue
        basket["rows"].append(row_no)
        basket["lines"].append(line)

    if errors.items:
        return CsvResult(digest, (), errors.result(), len(rows))
    docs = []
    for key, basket in baskets.items():
        doc = {"t": "sale", "id": f"{digest[:16]}:{key}", "rows": basket["rows"],
               "lines": basket["lines"]}
        doc.update({name: value for name, (value, _) in basket["extra"].items()})
        docs.append(doc)
    return CsvResult(digest, tuple(docs), (), len(rows))


def _records(data: bytes, mapping: CsvMapping, errors: _Errors):
    """(header, [(row number, fields)]) with blank rows left out, or None when unreadable."""
    encoding = "utf-8-sig" if mapping.encoding.replace("_", "-").lower() in ("utf-8", "utf8") \
        else mapping.encoding
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        row = data[:exc.start].count(b"\n") + 1
        errors.add(row, "encoding", f"bytes that are not {mapping.encoding}: {exc.reason}")
        return None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=mapping.delimiter, strict=True)
    records = []
    row_no = 0
    try:
        for fields in reader:
            row_no += 1
            if any(f.strip() for f in fields):
                records.append((row_no, fields))
    except csv.Error as exc:
        errors.add(row_no + 1, "csv", f"is not well-formed CSV: {exc}")
        return None
    if not records:
        errors.add(1, "empty", "the file is empty: no header row")
        return None
    (header_row, header), rows = records[0], records[1:]
    if header_row != 1:
        errors.add(1, "header", "the header must be the first row, not a blank one")
        return None
    return [h.strip() for h in header], rows


def _header_index(header: list, mapping: CsvMapping, errors: _Errors) -> dict | None:
    """gateway field -> index of its column in the header, or None when a mapped column is missing."""
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
    return None if errors.items else index


def _line(row: int, values: dict, mapping: CsvMapping, errors: _Errors) -> dict | None:
    before = len(errors.items) + errors.dropped
    line: dict = {}
    code = values["code"]
    if not code:
        errors.add(row, "code", "code is empty")
    elif len(code) > MAX_CODE:
        errors.add(row, "code", f"code is {len(code)} characters, over {MAX_CODE}")
    line["code"] = code
    line["qty"] = _qty(row, values["qty"], mapping.qty_factor, errors)
    for name in ("lot", "serial"):
        value = values.get(name, "")
        if len(value) > MAX_TEXT:
            errors.add(row, name, f"{name} is {len(value)} characters, over {MAX_TEXT}")
        elif value:
            line[name] = value
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
    return None if len(errors.items) + errors.dropped != before else line


def _qty(row: int, raw: str, factor: int, errors: _Errors) -> int:
    if not raw:
        errors.add(row, "qty", "qty is empty")
        return 0
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


def _basket_key(row: int, values: dict, has_id: bool, errors: _Errors) -> str | None:
    if not has_id:
        return str(row)
    pos_id = values["id"]
    if not pos_id:
        errors.add(row, "id", "id is empty")
        return None
    if len(pos_id) > MAX_POS_ID:
        errors.add(row, "id", f"id is {len(pos_id)} characters, over {MAX_POS_ID}")
        return None
    return pos_id


def _basket_extra(row: int, values: dict, basket: dict, mapping: CsvMapping,
                  errors: _Errors) -> bool:
    """Record the row's member and payment on its basket; every row of a basket must agree."""
    ok = True
    wanted = {}
    member = values.get("member", "")
    if len(member) > MAX_TEXT:
        errors.add(row, "member", f"member is {len(member)} characters, over {MAX_TEXT}")
        ok = False
    elif member:
        wanted["member"] = member
    raw = values.get("payment", "")
    if raw:
        method = mapping.payment_map.get(raw.casefold(), raw.casefold())
        if method not in PAYMENT_METHODS:
            errors.add(row, "payment", f"payment {_short(raw)} is none of "
                                       f"{', '.join(PAYMENT_METHODS)} (see payment_map)")
            ok = False
        else:
            wanted["payment"] = method
    for name, value in wanted.items():
        have, have_row = basket["extra"].setdefault(name, (value, row))
        if have != value:
            errors.add(row, name, f"{name} {_short(value)} differs from {_short(have)} given "
                                  f"for the same basket on row {have_row}")
            ok = False
    return ok


def _short(raw: str) -> str:
    """A value quoted for an error message, cut so one bad field cannot flood the errors file."""
    return repr(raw if len(raw) <= 40 else raw[:40] + "...")
