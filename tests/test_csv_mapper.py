"""The sans-io CSV mapper and the csv_drop options: bytes of a file in, basket documents or row errors out."""
from __future__ import annotations

import bisect
import hashlib
import itertools

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from device_plugins.csv_drop import CsvMapping, RowError, check_options, map_csv
from device_plugins.csv_drop._index import BasketIndex
from device_plugins.csv_drop._mapper import MAX_ERRORS, ErrorList, _header

COLUMNS = {"id": "TicketNo", "code": "ItemCode", "qty": "Qty", "lot": "Lot", "expiry": "Exp"}
MAPPING = CsvMapping(columns=COLUMNS)

GOOD = (b"TicketNo,ItemCode,Qty,Lot,Exp\r\n"
        b"T1,SKU-1,2,A1,2027-03-31\r\n"
        b"T1,4711,1,,\r\n"
        b"T2,SKU-4,3,,\r\n"
        b"T1,SKU-2,-1,,\r\n")


def prefix(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def test_rows_sharing_an_id_form_one_basket_in_first_seen_order():
    result = map_csv(GOOD, MAPPING)
    assert result.errors == ()
    assert result.hash == hashlib.sha256(GOOD).hexdigest()
    assert result.rows == 4
    assert [d["id"] for d in result.docs] == [f"{prefix(GOOD)}:T1", f"{prefix(GOOD)}:T2"]
    t1, t2 = result.docs
    assert t1 == {"t": "sale", "id": f"{prefix(GOOD)}:T1", "rows": [2, 3, 5], "lines": [
        {"code": "SKU-1", "qty": 2, "lot": "A1", "expiry": "2027-03-31"},
        {"code": "4711", "qty": 1},
        {"code": "SKU-2", "qty": -1},  # a return of that item to stock stays in the basket
    ]}
    assert t2["rows"] == [4] and t2["lines"] == [{"code": "SKU-4", "qty": 3}]


def test_without_an_id_column_every_row_is_its_own_basket_named_by_row_number():
    data = b"ItemCode;Qty\nSKU-1;1\n\nSKU-2;4\n"
    result = map_csv(data, CsvMapping(columns={"code": "ItemCode", "qty": "Qty"}, delimiter=";"))
    # The blank line is row 3: numbers stay those a spreadsheet shows.
    assert [(d["id"], d["rows"]) for d in result.docs] == [(f"{prefix(data)}:2", [2]),
                                                           (f"{prefix(data)}:4", [4])]


def test_the_same_bytes_give_the_same_ids_and_other_bytes_other_ids():
    again = map_csv(GOOD, MAPPING)
    other = map_csv(GOOD + b"T3,SKU-4,1,,\r\n", MAPPING)
    assert [d["id"] for d in again.docs] == [d["id"] for d in map_csv(GOOD, MAPPING).docs]
    assert {d["id"] for d in other.docs}.isdisjoint(d["id"] for d in again.docs)


def test_units_dates_prices_members_and_payments_are_converted():
    mapping = CsvMapping(
        columns={"id": "Bon", "code": "Art", "qty": "Boxes", "expiry": "MHD", "serial": "SN",
                 "unit_cents": "Price", "member": "Card", "payment": "Pay"},
        qty_factor=10, date_format="%d.%m.%Y", delimiter=";", encoding="cp1252",
        price_format="decimal", payment_map={"BAR": "cash", "EC": "card"})
    data = ("Bon;Art;Boxes;MHD;SN;Price;Card;Pay\n"
            "7;SKU-1;1,5;31.12.2027;;19.90;M1;bar\n"
            "7;SKU-1;0.1;;X-1;20.00;M1;BAR\n"
            "8;SKU-4;-2;;;3.50;;EC\n").encode("cp1252")
    result = map_csv(data, mapping)
    # "1,5" is not a number in this file: the delimiter is ';' but a decimal comma is not accepted.
    assert result.docs == ()
    assert result.errors == (RowError(2, "qty", "qty '1,5' is not a number"),)

    result = map_csv(data.replace(b"1,5", b"1.5"), mapping)
    assert result.errors == ()
    seven, eight = result.docs
    assert seven["lines"] == [{"code": "SKU-1", "qty": 15, "expiry": "2027-12-31", "unit_cents": 199},
                              {"code": "SKU-1", "qty": 1, "serial": "X-1", "unit_cents": 200}]
    assert seven["member"] == "M1" and seven["payment"] == "cash"
    assert eight["lines"] == [{"code": "SKU-4", "qty": -20, "unit_cents": 35}]
    assert eight["payment"] == "card" and "member" not in eight


def test_a_utf8_byte_order_mark_and_a_quoted_line_break_are_read_as_a_spreadsheet_would():
    data = '\ufeffTicketNo,ItemCode,Qty,Lot,Exp\n"T1",SKU-1,1,"A\n1",\nT1,SKU-1,x,,\n'.encode()
    result = map_csv(data, MAPPING)
    # The quoted field spans two lines but is one row (row 2; a line break is no lot, by ECR/1's
    # limits), so the bad qty is on row 3.
    assert result.errors == (
        RowError(2, "lot", "lot holds the character U+000A at position 1, which is not allowed"),
        RowError(3, "qty", "qty 'x' is not a number"))


@pytest.mark.parametrize("row, reason", [
    (b"T1,SKU-1,abc,,", "qty 'abc' is not a number"),
    (b"T1,SKU-1,0,,", "qty is zero"),
    (b"T1,SKU-1,,,", "qty is empty"),
    (b"T1,SKU-1,1.5,,", "qty 1.5 times 1 is not a whole number of units"),
    (b"T1,SKU-1,1e3,,", "qty '1e3' is not a number"),
    (b"T1,SKU-1,NaN,,", "qty 'NaN' is not a number"),
    (b"T1,SKU-1,2000000,,", "qty 2000000 is beyond 1000000 units"),
    (b"T1,,1,,", "code is empty"),
    (b"T1,SKU-1,1,,31/12/2027", "expiry '31/12/2027' is not a date of the form %Y-%m-%d"),
    (b"T1,SKU-1,1,,2027-02-30", "expiry '2027-02-30' is not a date of the form %Y-%m-%d"),
    (b",SKU-1,1,,", "id is empty"),
    (b"T" * 48 + b",SKU-1,1,,", "id is 48 characters long, at most 47 are allowed"),
    (b"T1,SKU-1,1,,,extra", "has 6 fields where the header has 5"),
    (b"T1,SKU-1,1", "has 3 fields where the header has 5"),
    (b"T1,SKU-1,1," + b"L" * 65 + b",", "lot is 65 characters long, at most 64 are allowed"),
    (b"T1,SKU-1,1,L\x1b[31m,", "lot holds the character U+001B at position 1, which is not allowed"),
    (b"T1,SKU-1,1,\xe2\x80\xae1L,", "lot holds the character U+202E at position 0, which is not allowed"),
    (b"T1," + b"C" * 257 + b",1,,", "code is 257 characters long, at most 256 are allowed"),
])
def test_each_bad_row_is_named_with_its_reason_and_nothing_is_mapped(row, reason):
    data = b"TicketNo,ItemCode,Qty,Lot,Exp\nT0,SKU-2,1,,\n" + row + b"\n"
    result = map_csv(data, MAPPING)
    assert result.docs == ()
    assert [(e.row, e.reason) for e in result.errors] == [(3, reason)]
    assert result.errors[0].line() == f"row 3: {reason}"


def test_a_serial_names_one_unit_and_a_basket_holds_at_most_the_ecr_lines():
    from core_ext import limits

    mapping = CsvMapping(columns={"id": "T", "code": "C", "qty": "Q", "serial": "S"})
    rows = b"".join(b"1,SKU-1,1,\n" for _ in range(limits.MAX_LINES + 1))
    result = map_csv(b"T,C,Q,S\n2,SKU-3,2,X-1\n2,SKU-3,-1,X-2\n" + rows, mapping)
    assert [e.line() for e in result.errors] == [
        "row 2: qty is 2 with a serial: a serial names one unit",
        f"row {limits.MAX_LINES + 4}: basket '1' has more than {limits.MAX_LINES} lines, the most one basket may hold"]
    # The same bound on the shorter way of an id/code/qty mapping's plainly good rows.
    plain = map_csv(b"T,C,Q\n" + rows.replace(b",\n", b"\n"), CsvMapping(columns={"id": "T", "code": "C", "qty": "Q"}))
    assert [e.line() for e in plain.errors] == [
        f"row {limits.MAX_LINES + 2}: basket '1' has more than {limits.MAX_LINES} lines, the most one basket may hold"]


def test_rows_of_a_basket_apart_in_the_file_are_one_basket_in_row_order():
    data = b"TicketNo,ItemCode,Qty,Lot,Exp\nT2,SKU-1,1,,\nT1,SKU-2,1,,\nT2,SKU-4,2,,\nT3,SKU-4,1,,\nT1,SKU-1,3,,\n"
    result = map_csv(data, MAPPING)
    assert [(d["id"].split(":")[1], d["rows"], [l["qty"] for l in d["lines"]]) for d in result.docs] == [
        ("T2", [2, 4], [1, 2]), ("T1", [3, 6], [1, 3]), ("T3", [5], [1])]


def test_a_line_longer_than_any_export_stops_the_reading_at_its_row():
    from device_plugins.csv_drop._mapper import MAX_LINE_CHARS

    data = (b"TicketNo,ItemCode,Qty,Lot,Exp\nT1,SKU-1,1,,\nT2," + b"x" * MAX_LINE_CHARS + b",1,,\n"
            + b"T3,SKU-1,1,,\n" * 20_000)
    result = map_csv(data, MAPPING)
    assert [e.line() for e in result.errors] == [f"row 3: has a line longer than {MAX_LINE_CHARS} characters"]
    assert result.hash == hashlib.sha256(data).hexdigest()  # the whole file, though reading stopped


def test_bytes_that_are_not_the_encoding_far_into_a_file_name_their_row():
    rows = "".join(f"T{i},SKU-1,1,,\n" for i in range(20_000)).encode()  # beyond the first chunk read
    result = map_csv(b"TicketNo,ItemCode,Qty,Lot,Exp\n" + rows + b"T,SKU-\xff,1,,\n", MAPPING)
    assert [e.line() for e in result.errors] == ["row 20002: bytes that are not utf-8: invalid start byte"]


def test_every_bad_row_of_a_file_is_listed():
    data = b"TicketNo,ItemCode,Qty,Lot,Exp\nT1,SKU-1,x,,\nT1,SKU-1,1,,\nT2,,0,,bad\n"
    result = map_csv(data, MAPPING)
    assert [(e.row, e.code) for e in result.errors] == [(2, "qty"), (4, "code"), (4, "qty"), (4, "expiry")]


def test_rows_of_one_basket_must_agree_on_member_and_payment():
    mapping = CsvMapping(columns={"id": "T", "code": "C", "qty": "Q", "member": "M", "payment": "P"})
    data = b"T,C,Q,M,P\n1,SKU-1,1,M1,cash\n1,SKU-1,1,M2,cash\n1,SKU-1,1,,cheque\n2,SKU-1,1,M2,card\n"
    result = map_csv(data, mapping)
    assert [e.line() for e in result.errors] == [
        "row 3: member 'M2' differs from 'M1' given for the same basket on row 2",
        "row 4: payment 'cheque' is none of cash, card, insurance, points (see payment_map)",
    ]


@pytest.mark.parametrize("data, line", [
    (b"", "row 1: the file is empty: no header row"),
    (b"\n\n", "row 1: the file is empty: no header row"),
    (b"\nTicketNo,ItemCode,Qty,Lot,Exp\n", "row 1: the header must be the first row, not a blank one"),
    (b"TicketNo,Item,Qty,Lot,Exp\nT1,SKU-1,1,,\n",
     "row 1: column 'ItemCode' (mapped to code) is not in the header"),
    (b"TicketNo,ItemCode,Qty,Qty,Lot,Exp\n",
     "row 1: column 'Qty' (mapped to qty) is in the header 2 times"),
    (b"TicketNo,ItemCode,Qty,Lot,Exp\nT1,SKU-1,1,,\nT2,\"SKU-4,1,,\n",
     "row 3: is not well-formed CSV: unexpected end of data"),
    (b"TicketNo,ItemCode,Qty,Lot,Exp\nT1,SKU-1,1,,\nT2,SKU-\xff,1,,\n",
     "row 3: bytes that are not utf-8: invalid start byte"),
])
def test_a_file_that_cannot_be_read_is_refused_at_the_row_it_fails(data, line):
    result = map_csv(data, MAPPING)
    assert result.docs == ()
    assert [e.line() for e in result.errors] == [line]


def test_a_header_without_rows_maps_to_nothing_and_no_error():
    result = map_csv(b"TicketNo,ItemCode,Qty,Lot,Exp\r\n\r\n", MAPPING)
    assert (result.docs, result.errors, result.rows) == ((), (), 0)


def test_a_garbage_file_lists_a_bounded_number_of_errors():
    data = b"TicketNo,ItemCode,Qty,Lot,Exp\n" + b"T1,SKU-1,bad,,\n" * (MAX_ERRORS + 50)
    result = map_csv(data, MAPPING)
    assert len(result.errors) == MAX_ERRORS + 1
    assert result.errors[-1] == RowError(MAX_ERRORS + 51, "more", "50 more errors not listed")


def test_trailing_garbage_after_good_rows_refuses_the_file():
    result = map_csv(GOOD + b"\x00\x01garbage", MAPPING)
    assert result.docs == ()
    assert [e.row for e in result.errors] == [6]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(data):
    result = map_csv(b"TicketNo,ItemCode,Qty,Lot,Exp\n" + data, MAPPING)
    assert not (result.docs and result.errors)
    assert all(isinstance(e, RowError) and e.row >= 1 for e in result.errors)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["T1", "T2", "T3"]), st.sampled_from(["SKU-1", "4711"]),
                          st.integers(-50, 50).filter(bool)), min_size=1, max_size=20))
def test_good_rows_map_back_to_exactly_themselves(rows):
    text = "TicketNo,ItemCode,Qty,Lot,Exp\n" + "".join(f"{t},{c},{q},,\n" for t, c, q in rows)
    result = map_csv(text.encode(), MAPPING)
    assert result.errors == ()
    seen = sorted((row, d["id"].split(":", 1)[1], line["code"], line["qty"])
                  for d in result.docs for row, line in zip(d["rows"], d["lines"]))
    assert seen == [(i + 2, t, c, q) for i, (t, c, q) in enumerate(rows)]


BASKET_FIELDS = CsvMapping(columns={"id": "T", "code": "C", "qty": "Q", "member": "M", "payment": "P", "lot": "L"})


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["T1", "T2", "T3", "T4"]), st.sampled_from(["SKU-1", "4711"]),
                          st.integers(-3, 3).filter(bool), st.sampled_from(["", "M1", "M2"]),
                          st.sampled_from(["", "cash", "card"]), st.sampled_from(["", "L1"])),
                min_size=1, max_size=24))
def test_baskets_read_the_same_whether_the_key_filter_knows_a_key_or_only_may(rows):
    """The index asks the database only about keys its filter may have seen: a filter that says
    "maybe" to every key (each new basket then looked up, the waiting ones written first) must
    give the same baskets and the same errors as the real one, whichever baskets come back."""
    from unittest.mock import patch

    from device_plugins.csv_drop._index import _KeyFilter

    text = "T,C,Q,M,P,L\n" + "".join(f"{t},{c},{q},{m},{p},{lot}\n" for t, c, q, m, p, lot in rows)
    plain = map_csv(text.encode(), BASKET_FIELDS)
    with patch.object(_KeyFilter, "add", lambda self, key: True):
        doubting = map_csv(text.encode(), BASKET_FIELDS)
    assert doubting == plain
    if not plain.errors:
        assert sorted(row for d in plain.docs for row in d["rows"]) == list(range(2, len(rows) + 2))
        assert len(plain.docs) == len({t for t, *_ in rows})


PLAIN = CsvMapping(columns={"id": "TicketNo", "code": "ItemCode", "qty": "Qty"}, qty_factor=10)
NO_ID = CsvMapping(columns={"code": "ItemCode", "qty": "Qty"})  # every row a basket of its own
_FIELD = st.one_of(
    st.sampled_from(["", " ", "T1", "SKU-1", "4711", "0", "7", "-2", "1.5", "+3", "99999", "100001",
                     "\x1d010690", "A\u202eB", "é", "x" * 49, "x" * 257, "٣"]),
    st.text(max_size=12), st.from_regex(r"[0-9]{1,26}", fullmatch=True))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_FIELD, _FIELD, _FIELD), min_size=1, max_size=8), st.sampled_from([PLAIN, NO_ID]))
def test_an_id_code_qty_mapping_reads_every_row_as_the_full_mapping_does(rows, mapping):
    """Rows of the commonest mapping take a shorter way when they are plainly good; the baskets,
    codes and row count they give, and every error of the others, are what the full way gives."""
    def mapped(plain: bool):
        errors = ErrorList()
        mapper = _header(["TicketNo", "ItemCode", "Qty"], mapping, errors)
        mapper._plain = plain
        with BasketIndex(":memory:") as index:
            count = mapper.fill(((i + 2, list(fields)) for i, fields in enumerate(rows)), index)
            docs = [doc for _first, docs in index.slices("ab" * 32, 0, lambda: (1 << 30, 1 << 30)) for doc in docs]
            codes = [code for batch in index.codes(100) for code in batch]
        return count, docs, codes, errors.result()

    assert mapped(True) == mapped(False)


def test_a_block_of_lines_holds_a_bounded_number_of_characters_however_long_the_lines():
    """Lines may each be up to MAX_LINE_CHARS long: a block stops at the line that reaches
    BLOCK_CHARS, so 512 long lines are never held at once, and the file still reads whole."""
    from device_plugins.csv_drop import _mapper

    long_rows = "".join(f"T{i},SKU-1,1,{'x' * 20_000}\n" for i in range(40))
    data = ("TicketNo,ItemCode,Qty,Note\n" + long_rows + "".join(f"S{i},SKU-1,1,\n" for i in range(600))).encode()
    blocks = []
    fill_block = _mapper.RowMapper._fill_block

    def counted(self, text, row_no, index):
        blocks.append((len(text), text.count("\n")))
        return fill_block(self, text, row_no, index)

    mapping = CsvMapping(columns={"id": "TicketNo", "code": "ItemCode", "qty": "Qty"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_mapper.RowMapper, "_fill_block", counted)
        result = map_csv(data, mapping)
    assert not result.errors and result.rows == 640
    assert max(chars for chars, _lines in blocks) < _mapper.BLOCK_CHARS + 20_100
    assert [lines for _chars, lines in blocks][:2] == [4, 4]  # 20,000-character lines: four a block
    assert max(lines for _chars, lines in blocks) == _mapper.BLOCK_LINES  # short ones: a block's count
    assert sum(lines for _chars, lines in blocks) == 640


# Fields and line ends of the files below: plainly good values, and each thing that makes a line or a
# block one `csv` must read (quotes, a lone carriage return, a field beyond its limit), or a row one
# the full way must map (spaces, a tab, too long, a qty of too many digits).
_ODD = st.sampled_from([" SKU-1 ", "A B", "A\tB", '"T1"', 'x"y', "\x00", "T,2", "\r", "0" * 24 + "1",
                        "x" * 48, "x" * 257, "x" * 131_073, "", " ", "0", "-2", "1.5", "\x1d01", "é"])
_PIECE = st.one_of(_ODD, _FIELD)
_END = st.sampled_from(["\n", "\r\n", "\n", "\r"])
# A row: a good one with one of its fields (by place; none from 3) replaced, or fields alone.
_ROW = st.one_of(st.tuples(st.integers(0, 4), _PIECE, _END), st.tuples(st.lists(_PIECE, max_size=4), _END))
# (mapping, header, the fields of a good n-th row)
_BLOCK_MAPPINGS = [
    (PLAIN, "TicketNo,ItemCode,Qty", lambda n: [f"T{n % 3}", f"SKU-{n % 2}", str(1 + n % 3)]),
    (NO_ID, "ItemCode,Qty,Extra", lambda n: [f"SKU-{n % 2}", str(1 + n % 3), "x"]),
    (CsvMapping(columns={"id": "T", "code": "C", "qty": "Q"}, delimiter=";"), "Q;X;C;T",
     lambda n: [str(1 + n % 3), "", f"SKU-{n % 2}", f"T{n % 3}"]),
    (CsvMapping(columns={"id": "T", "code": "C", "qty": "Q"}, delimiter="\t"), "T\tC\tQ",
     lambda n: [f"T{n % 3}", f"SKU-{n % 2}", str(1 + n % 3)]),
]


@settings(max_examples=500, deadline=None)
@given(st.lists(_ROW, max_size=10), st.sampled_from(_BLOCK_MAPPINGS), st.booleans())
@example([(4, "", "\n"), (1, "x" * 257, "\n")], _BLOCK_MAPPINGS[0], True)
@example([(4, "", "\n"), (2, "0" * 24 + "1", "\n")], _BLOCK_MAPPINGS[0], True)
@example([(0, "x" * 48, "\n"), (1, "A\tB", "\r\n")], _BLOCK_MAPPINGS[0], False)
@example([(4, "", "\n"), (0, '"T1"', "\n"), (4, "", "\n")], _BLOCK_MAPPINGS[0], False)
def test_files_read_by_blocks_of_lines_read_as_csv_reads_them(rows, case, last_end):
    """A plain mapping reads blocks of simple lines itself (`fill_lines`), and hands `csv` the rest
    of the file from the first block that is not simple. Blocks of two lines here, so that files
    switch midway: the baskets, the codes, the row count and every error are what `csv` alone gives."""
    from unittest.mock import patch

    mapping, header, good = case

    def line(n: int, row) -> str:
        if len(row) == 2:
            return mapping.delimiter.join(row[0]) + row[1]
        at, piece, end = row
        fields = good(n)
        if at < len(fields):
            fields[at] = piece
        return mapping.delimiter.join(fields) + end

    body = "".join(line(n, row) for n, row in enumerate(rows))
    data = (header + "\n" + (body if last_end else body.rstrip("\r\n"))).encode()
    with patch("device_plugins.csv_drop._mapper.BLOCK_LINES", 2):
        blocks = map_csv(data, mapping)
    with patch("device_plugins.csv_drop._mapper._plain_rows", lambda *args: None):
        by_csv = map_csv(data, mapping)
    assert blocks == by_csv


@pytest.mark.parametrize("back", [2_300, 4_300, 6_300, 8_300, 10_300])
def test_rows_before_unreadable_bytes_are_checked_when_their_block_is_not_simple(back):
    """A block of lines ends where the bytes stop being readable. When that block is one `csv` must
    read (a quoted field), its rows are still checked before the bytes are named, as `csv` alone
    checks them: a quoted line and a bad qty `back` bytes before the bytes that are not UTF-8 (far
    enough to be outside the piece of text those bytes spoil, which neither reading sees)."""
    from unittest.mock import patch

    lines = ["TicketNo,ItemCode,Qty"] + [f"T{i},SKU-1,1" for i in range(20_000)]  # past the first pieces decoded
    ends = list(itertools.accumulate(len(line) + 1 for line in lines))
    at = bisect.bisect(ends, ends[-1] - back)
    lines[at], lines[at + 1] = f'T{at},"SKU-1",1', f"T{at + 1},SKU-1,x"
    data = ("\n".join(lines) + "\n").encode() + b"T,SKU-\xff,1\n"
    blocks = map_csv(data, PLAIN)
    with patch("device_plugins.csv_drop._mapper._plain_rows", lambda *args: None):
        by_csv = map_csv(data, PLAIN)
    assert blocks == by_csv
    assert [e.code for e in blocks.errors] == ["qty", "encoding"]

# --- options ----------------------------------------------------------------------------------

def device(tmp_path, **over):
    entry = {"name": "legacy-pos", "kind": "csv_drop", "dir": str(tmp_path), "settle_s": 2.0,
             "columns": {"id": "TicketNo", "code": "ItemCode", "qty": "Qty"}}
    entry.update(over)
    return entry


def test_a_valid_device_has_no_errors(tmp_path):
    assert check_options(device(tmp_path)) == []
    full = device(tmp_path, poll_s=0.2, qty_factor=10, date_format="%d/%m/%y", delimiter=";",
                  encoding="latin-1", price_format="decimal", payment_map={"BAR": "cash"},
                  max_bytes=1024, slice_ms=0.5, slice_baskets=1000, slice_lines=10_000)
    assert check_options(full) == []
    assert check_options(device(tmp_path, slice_ms=1000)) == []
    assert CsvMapping.from_device(full).payment_map == {"bar": "cash"}


@pytest.mark.parametrize("over, key", [
    ({"dir": "relative/path"}, "dir:"),
    ({"dir": ""}, "dir:"),
    ({"dir": 5}, "dir:"),
    ({"settle_s": -1}, "settle_s:"),
    ({"settle_s": "2"}, "settle_s:"),
    ({"settle_s": float("nan")}, "settle_s:"),
    ({"poll_s": 0}, "poll_s:"),
    ({"qty_factor": 0}, "qty_factor:"),
    ({"qty_factor": 2.5}, "qty_factor:"),
    ({"qty_factor": True}, "qty_factor:"),
    ({"date_format": "%Y-%m"}, "date_format:"),
    ({"date_format": "%"}, "date_format:"),
    ({"date_format": 7}, "date_format:"),
    ({"delimiter": ";;"}, "delimiter:"),
    ({"delimiter": '"'}, "delimiter:"),
    ({"encoding": "klingon"}, "encoding:"),
    ({"encoding": "base64"}, "encoding:"),
    ({"price_format": "euros"}, "price_format:"),
    ({"payment_map": {"BAR": "barter"}}, "payment_map.BAR:"),
    ({"payment_map": ["cash"]}, "payment_map:"),
    ({"max_bytes": 0}, "max_bytes:"),
    ({"slice_baskets": 0}, "slice_baskets:"),
    ({"slice_baskets": 1001}, "slice_baskets:"),
    ({"slice_lines": 0}, "slice_lines:"),
    ({"slice_lines": 2.5}, "slice_lines:"),
    ({"slice_ms": 0.1}, "slice_ms:"),
    ({"slice_ms": 1001}, "slice_ms:"),
    ({"slice_ms": "5"}, "slice_ms:"),
    ({"slice_ms": True}, "slice_ms:"),
    ({"colour": "blue"}, "colour:"),
    ({"kind": "ecr_serial"}, "kind:"),
    ({"name": ""}, "name:"),
    ({"columns": {"code": "ItemCode"}}, "columns.qty:"),
    ({"columns": {"code": "C", "qty": "Q", "price": "P"}}, "columns.price:"),
    ({"columns": {"code": "C", "qty": ""}}, "columns.qty:"),
    ({"columns": "code=C"}, "columns:"),
])
def test_each_bad_option_is_named(tmp_path, over, key):
    errors = check_options(device(tmp_path, **over))
    assert len(errors) == 1 and errors[0].startswith(key), errors


FULL = CsvMapping(columns={"id": "T", "code": "C", "qty": "Q", "lot": "L", "expiry": "E", "serial": "S",
                           "unit_cents": "P", "member": "M", "payment": "Y"},
                  qty_factor=10, price_format="decimal")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='T,C"Q\n\r;L1E-S0P.M9Y x\x00\ufeff\xe9', max_size=300))
def test_arbitrary_csv_shaped_text_never_raises(text):
    for encoding in ("utf-8", "utf-16"):
        result = map_csv(text.encode(encoding, "surrogatepass"), FULL)
        assert not (result.docs and result.errors)
        assert all(e.row >= 1 and e.reason for e in result.errors)
