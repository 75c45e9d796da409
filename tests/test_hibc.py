"""HIBC LIC parsing: check characters, the secondary formats, linking two symbols."""
import pytest
from hypothesis import given, strategies as st

from core_ext._hibc import CHARSET, HibcError, concatenated, link, mod43, parse_hibc

TABLE = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-. $/+%"


def sym(data: str) -> str:
    """`data` with its check character, computed here independently of the parser."""
    return data + TABLE[sum(TABLE.index(c) for c in data) % 43]


def test_charset_is_the_mod43_table():
    assert CHARSET == TABLE


def test_published_concatenated_example():
    # A concatenated symbol as published with an HIBC reader: Julian-date secondary, manufacture
    # date and serial supplements, check character '-'.
    h = parse_hibc("+A99912345/$$52001510X3/16D20111212/S77DE1G45-")
    assert (h.labeler, h.product, h.unit) == ("A999", "1234", "5")
    assert h.code == "A99912345"
    assert h.expiry == "2020-01-15"
    assert h.lot == "10X3"
    assert h.manufactured == "2011-12-12"
    assert h.serial == "77DE1G45"
    assert h.kind == "concatenated"


def test_mod43_of_published_example():
    assert mod43("+A99912345/$$52001510X3/16D20111212/S77DE1G45") == "-"


def test_primary_alone():
    h = parse_hibc(sym("+H123ABC1230"))
    assert h.kind == "primary"
    assert h.code == "H123ABC1230"
    assert (h.lot, h.expiry, h.serial) == (None, None, None)


@pytest.mark.parametrize(("secondary", "expiry", "lot", "serial", "quantity"), [
    ("$$0527LOT1", "2027-05-31", "LOT1", None, None),           # MMYY: end of month
    ("$$1227LOT1", "2027-12-31", "LOT1", None, None),
    ("$$2022828X", "2028-02-28", "X", None, None),              # MMDDYY
    ("$$3280229A1", "2028-02-29", "A1", None, None),            # YYMMDD, leap day
    ("$$428022913B", "2028-02-29", "B", None, None),          # YYMMDDHH
    ("$$528060C", "2028-02-29", "C", None, None),               # YYJJJ: day 60 of a leap year
    ("$$62806023C", "2028-02-29", "C", None, None),             # YYJJJHH
    ("$$7NODATE", None, "NODATE", None, None),
    ("$$8053271231L5", "2027-12-31", "L5", None, 5),            # quantity, 2 digits
    ("$$9001203271231L5", "2027-12-31", "L5", None, 120),       # quantity, 5 digits
    ("$LOTONLY", None, "LOTONLY", None, None),
    ("$+SER123", None, None, "SER123", None),
    ("$$+3271231SER9", "2027-12-31", None, "SER9", None),
    ("$$+0727SER9", "2027-07-31", None, "SER9", None),
    ("27001LOTJ", "2027-01-01", "LOTJ", None, None),            # the plain YYJJJ format
    ("$$3271231LOT/S12345/16D20250101", "2027-12-31", "LOT", "12345", None),
    ("$LOT/14D20271130/Q25", "2027-11-30", "LOT", None, 25),
])
def test_secondary_formats_concatenated_and_linked(secondary, expiry, lot, serial, quantity):
    whole = parse_hibc(sym("+H123ABC1230/" + secondary))
    assert (whole.code, whole.expiry, whole.lot, whole.serial, whole.quantity) == (
        "H123ABC1230", expiry, lot, serial, quantity)
    primary = sym("+H123ABC1230")
    alone = parse_hibc(sym("+" + secondary + primary[-1]))
    assert alone.kind == "secondary" and alone.link == primary[-1]
    joined = link(parse_hibc(primary), alone)
    assert (joined.code, joined.expiry, joined.lot, joined.serial, joined.quantity) == (
        "H123ABC1230", expiry, lot, serial, quantity)
    # The concatenated form of a linked pair reads back to the same data.
    again = parse_hibc(concatenated(joined))
    assert (again.code, again.expiry, again.lot, again.serial, again.quantity) == (
        "H123ABC1230", expiry, lot, serial, quantity)


def test_link_character_must_match():
    primary = parse_hibc(sym("+H123ABC1230"))
    wrong = "A" if primary.check != "A" else "B"
    secondary = parse_hibc(sym("+$$3271231LOT" + wrong))
    with pytest.raises(HibcError) as info:
        link(primary, secondary)
    assert info.value.code == "link"
    assert repr(wrong) in info.value.reason


@pytest.mark.parametrize(("text", "code"), [
    ("H123ABC1230X", "flag"),
    ("+", "short"),
    ("+h123abc1230", "charset"),
    ("+H123ABC123\x000", "charset"),
    (sym("+1234ABC1230"), "date"),   # not a labeler code (no letter first): a bad Julian date
    (sym("+H12"), "primary"),
    (sym("+H123ABC123X"), "primary"),       # unit of measure is a digit
    (sym("+H123" + "A" * 19 + "0"), "primary"),
    (sym("+H123ABC1230/$$1327LOT"), "date"),    # month 13
    (sym("+H123ABC1230/$$3270230LOT"), "date"),  # 30 February
    (sym("+H123ABC1230/$$527366LOT"), "date"),   # day 366 of a common year
    (sym("+H123ABC1230/$$42712312599"), "date"),  # hour 25
    (sym("+H123ABC1230/$$8X1271231L"), "quantity"),
    (sym("+H123ABC1230/$$800271231L"), "quantity"),
    (sym("+H123ABC1230/$$9LOT"), "quantity"),
    (sym("+H123ABC1230/$$X"), "date"),
    (sym("+H123ABC1230/$" + "L" * 19), "lot"),
    (sym("+H123ABC1230/$$7LOT-1"), "lot"),
    (sym("+H123ABC1230/$+"), "serial"),
    (sym("+H123ABC1230/$LOT/X9"), "supplement"),
    (sym("+H123ABC1230/$LOT/14D20271331"), "date"),
    (sym("+H123ABC1230/$$3271231L/14D20271130"), "date"),  # two different expiries
    (sym("+H123ABC1230/$+S1/S2"), "serial"),
    (sym("+H123ABC1230/ABC"), "secondary"),
    (sym("+$"), "secondary"),
])
def test_malformed(text, code):
    with pytest.raises(HibcError) as info:
        parse_hibc(text)
    assert info.value.code == code
    assert info.value.reason


def test_wrong_check_character_names_both():
    good = sym("+H123ABC1230/$$3271231LOT")
    bad = good[:-1] + ("0" if good[-1] != "0" else "1")
    with pytest.raises(HibcError) as info:
        parse_hibc(bad)
    assert info.value.code == "check"
    assert repr(good[-1]) in info.value.reason


def test_every_single_character_change_is_caught_or_still_consistent():
    good = sym("+H123ABC1230/$$3271231LOT")
    for i in range(1, len(good) - 1):
        for c in "07AZ$":
            if c == good[i]:
                continue
            changed = good[:i] + c + good[i + 1:]
            with pytest.raises(HibcError):
                parse_hibc(changed)


@given(st.text(alphabet=TABLE + "abc\x1d\x00é", max_size=60))
def test_arbitrary_text_raises_only_hibc_error(text):
    try:
        h = parse_hibc(text)
    except HibcError as exc:
        assert exc.reason
    else:
        assert mod43(text[:-1]) == text[-1]
        assert h.kind in ("primary", "secondary", "concatenated")


@given(st.text(alphabet=TABLE, min_size=1, max_size=40))
def test_arbitrary_checked_symbols_parse_or_refuse_cleanly(data):
    text = sym("+" + data)
    try:
        parse_hibc(text)
    except HibcError as exc:
        assert exc.code and exc.reason
    try:
        parse_hibc(text + "ZZ")  # trailing garbage after a good symbol
    except HibcError as exc:
        assert exc.code
