"""parse_scan over real GS1, GTIN and HIBC codes, good and malformed."""
import calendar

import pytest
from hypothesis import given, strategies as st

from core_ext._barcodes import Scan, ScanError, hibc_part, parse_hibc_pair, parse_scan

GS = "\x1d"
HIBC_TABLE = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-. $/+%"


def check_digit(payload: str) -> str:
    """GS1 mod-10 check digit, computed here independently of the parser."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(payload)))
    return str((10 - total % 10) % 10)


def hibc(data: str) -> str:
    return data + HIBC_TABLE[sum(HIBC_TABLE.index(c) for c in data) % 43]


def test_check_digit_helper_on_published_codes():
    assert check_digit("400638133393") == "1"      # EAN-13 4006381333931
    assert check_digit("03600029145") == "2"       # UPC-A 036000291452
    assert check_digit("9638507") == "4"           # EAN-8 96385074
    assert check_digit("0950600013435") == "2"     # GS1 example GTIN 09506000134352


@pytest.mark.parametrize(("data", "gtin", "lot", "expiry", "serial", "quantity", "symbology"), [
    # GS1 DataMatrix as a scanner sends it: AIM id, FNC1 as GS after variable-length fields.
    ("]d20109506000134352172012251" + "0ABC123", "09506000134352", "ABC123", "2020-12-25", None,
     None, "]d2"),
    ("]d201095060001343521728022910LOT7" + GS + "21SN0001", "09506000134352", "LOT7",
     "2028-02-29", "SN0001", None, "]d2"),
    # Day 00: the last day of that month (February of a leap year, and of a common year).
    ("]C1010950600013435217280200", "09506000134352", None, "2028-02-29", None, None, "]C1"),
    ("010950600013435217270200", "09506000134352", None, "2027-02-28", None, None, None),
    # Lot last, no separator needed; AI 11 (production date) is not the expiry.
    ("01095060001343521125010110B1", "09506000134352", "B1", None, None, None, None),
    # A separator after a fixed-length field is allowed.
    ("0109506000134352" + GS + "17271231", "09506000134352", None, "2027-12-31", None, None, None),
    # Counts.
    ("0109506000134352" + "3012" + GS + "10L", "09506000134352", "L", None, None, 12, None),
    ("]Q3020950600013435237" + "48", "09506000134352", None, None, None, 48, "]Q3"),
    # A GS1 Digital Link URI, with the lot in the path and the expiry as a query.
    ("https://id.gs1.org/01/09506000134352/10/ABC1/21/S9?17=271100", "09506000134352", "ABC1",
     "2027-11-30", "S9", None, None),
])
def test_gs1(data, gtin, lot, expiry, serial, quantity, symbology):
    for given_data in (data, data.encode(), data + "\r\n"):
        scan = parse_scan(given_data)
        assert scan == Scan(raw=data, symbology=symbology, kind="gs1", gtin=gtin, lot=lot,
                            expiry=expiry, serial=serial, quantity=quantity)


@pytest.mark.parametrize(("data", "gtin"), [
    ("4006381333931", "04006381333931"),
    ("]E04006381333931", "04006381333931"),
    ("036000291452", "00036000291452"),
    ("96385074", "00000096385074"),
    ("]E496385074", "00000096385074"),
    ("09506000134352", "09506000134352"),
])
def test_plain_gtins(data, gtin):
    scan = parse_scan(data)
    assert scan.kind == "gtin" and scan.gtin == gtin
    assert (scan.lot, scan.expiry, scan.hibc) == (None, None, None)


def test_generated_gtins_round_trip():
    for payload in ("590123412345", "1234567", "00001234567", "1000000000001"):
        code = payload + check_digit(payload)
        assert parse_scan(code).gtin == code.zfill(14)
        wrong = code[:-1] + str((int(code[-1]) + 1) % 10)
        with pytest.raises(ScanError) as info:
            parse_scan(wrong)
        assert info.value.code == "gtin"


def test_hibc_scans():
    primary = hibc("+H123ABC1230")
    scan = parse_scan("]C0" + primary)
    assert (scan.kind, scan.hibc, scan.symbology, scan.lot) == ("hibc", "H123ABC1230", "]C0", None)
    whole = hibc("+H123ABC1230/$$3271231LOT9/S77")
    scan = parse_scan(whole)
    assert (scan.hibc, scan.lot, scan.expiry, scan.serial) == ("H123ABC1230", "LOT9", "2027-12-31",
                                                               "77")
    assert hibc_part(primary) == "primary"
    secondary = hibc("+$$3271231LOT9" + primary[-1])
    assert hibc_part(secondary) == "secondary"
    assert hibc_part(whole) is None
    with pytest.raises(ScanError) as info:
        parse_scan(secondary)
    assert info.value.code == "hibc_secondary_alone"
    pair = parse_hibc_pair(primary, secondary)
    assert (pair.hibc, pair.lot, pair.expiry) == ("H123ABC1230", "LOT9", "2027-12-31")
    # Its raw text is the one-symbol form, which parses to the same scan.
    assert parse_scan(pair.raw) == pair


def test_published_hibc_example():
    scan = parse_scan("+A99912345/$$52001510X3/16D20111212/S77DE1G45-")
    assert (scan.hibc, scan.lot, scan.expiry, scan.serial) == ("A99912345", "10X3", "2020-01-15",
                                                               "77DE1G45")


GOOD_GS1 = "]d20109506000134352172712311" + "0LOT"


@pytest.mark.parametrize(("data", "code"), [
    ("0109506000134353", "gtin_check"),                    # AI 01 check digit wrong
    ("]d20109506000134353172712311" + "0LOT", "gtin_check"),
    ("0209506000134353" + "3712", "gtin_check"),
    ("0109506000134352171313011" + "0L", "gs1"),          # month 13
    ("0109506000134352172702301" + "0L", "gs1"),          # 30 February
    ("010950600013435", "gs1"),                          # AI 01 cut short
    ("01095060001343", "gtin"),                           # 14 digits: a GTIN, bad check digit
    ("]C101095060001343", "gs1"),
    ("0109506000134352" + "99", "gs1"),                   # AI 99 with no data
    ("10LOT" + GS + "17271231", "no_item"),                # no GTIN at all
    ("0109506000134352" + "10A" + GS + GS + "21B", "gs1"),
    ("0109506000134352" + "10A" + GS + "0109506000134345", "gs1"),   # AI 01 twice, different
    ("0109506000134352" + "300", "quantity"),
    ("0109506000134352" + "30", "quantity"),              # AI 30 with no count at all
    ("https://id.gs1.org/01/09506000134353", "gtin_check"),
    ("https://example.com/nothing", "digital_link"),
    ("4006381333932", "gtin"),
    ("40063813339", "no_item"),                            # 11 digits: AI 400, no item
    ("", "empty"),
    ("]d2", "empty"),
    ("]", "symbology"),
    ("]!2010950600013435", "symbology"),
    ("ABC", "format"),
    (b"0109506000134352\xff", "encoding"),
    ("0109506000134352\x0010A", "control"),
    ("01095060001343521" + "0" + "A" * 5000, "too_long"),
    (hibc("+H123ABC1230")[:-1] + "!", "hibc_charset"),
    ("+H123ABC12309", "hibc_check"),
    (12345, "type"),
])
def test_malformed(data, code):
    with pytest.raises(ScanError) as info:
        parse_scan(data)
    assert info.value.code == code
    assert isinstance(info.value.reason, str) and info.value.reason


def test_good_then_trailing_garbage_is_refused_not_truncated():
    assert parse_scan(GOOD_GS1).lot == "LOT"
    # Garbage after a variable-length lot becomes part of the lot (that is GS1's rule), but
    # garbage that cannot be an element string is refused.
    with pytest.raises(ScanError):
        parse_scan(GOOD_GS1 + GS + "ZZ")
    with pytest.raises(ScanError):
        parse_scan("4006381333931" + "X")


def test_hibc_pair_link_mismatch():
    primary = hibc("+H123ABC1230")
    other = "A" if primary[-1] != "A" else "B"
    with pytest.raises(ScanError) as info:
        parse_hibc_pair(primary, hibc("+$$3271231LOT" + other))
    assert info.value.code == "hibc_link"


def test_expiry_day_00_every_month():
    for month in range(1, 13):
        data = f"010950600013435217{27:02d}{month:02d}00"
        last = calendar.monthrange(2027, month)[1]
        assert parse_scan(data).expiry == f"2027-{month:02d}-{last:02d}"


@given(st.binary(max_size=80))
def test_arbitrary_bytes_raise_only_scan_error(data):
    for attempt in (data, b"]d2" + data, b"01" + data, b"+" + data, data + b"\xff"):
        try:
            scan = parse_scan(attempt)
        except ScanError as exc:
            assert exc.code and exc.reason
        else:
            assert scan.kind in ("gs1", "hibc", "gtin")
            assert scan.gtin is None or (len(scan.gtin) == 14 and scan.gtin.isdigit())


@given(st.text(alphabet="0123456789" + GS + "ABC]d+$/", max_size=60))
def test_arbitrary_text_raises_only_scan_error(text):
    try:
        scan = parse_scan(text)
    except ScanError as exc:
        assert exc.reason
    else:
        if scan.kind == "gs1":
            gtin = scan.gtin
            assert check_digit(gtin[:-1]) == gtin[-1]
