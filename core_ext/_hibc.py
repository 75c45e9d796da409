"""HIBC LIC (Health Industry Bar Code) primary and secondary data.

A symbol is `+`, its data, and a mod-43 check character over everything before it:

- primary: labeler code (4: a letter, 3 letters or digits), product code (1-18), unit of measure (1
  digit);
- secondary, its own symbol: the data below, then the link character (the check character of the
  primary it belongs to);
- concatenated: primary `/` secondary, the primary's own check character left out.

Secondary data is one of `YYJJJ lot`, `$lot`, `$+serial`, `$$[qty][date]lot` or
`$$+[date]serial`, where qty is `8QQ` or `9QQQQQ` and date starts with a format digit: `0`/`1` MMYY
(the digit is the month's first), `2` MMDDYY, `3` YYMMDD, `4` YYMMDDHH, `5` YYJJJ, `6` YYJJJHH, `7`
none. Supplemental fields follow, each after a `/`: `S` serial, `14D` expiry YYYYMMDD, `16D`
manufacture date YYYYMMDD, `Q` quantity.
"""
from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass

# The mod-43 table: a character's value is its index here.
CHARSET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-. $/+%"
_VALUE = {c: i for i, c in enumerate(CHARSET)}

_PRIMARY = re.compile(r"([A-Z][A-Z0-9]{3})([A-Z0-9]{1,18})([0-9])")
_FIELD = re.compile(r"[A-Z0-9]{0,18}")
_SERIAL = re.compile(r"[A-Z0-9]{1,18}")
_DATE_FORMATS = {"2": "MMDDYY", "3": "YYMMDD", "4": "YYMMDDHH", "5": "YYJJJ", "6": "YYJJJHH"}


class HibcError(ValueError):
    """HIBC data that cannot be read; `code` is stable and short, `reason` is for a person."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Hibc:
    """What one HIBC symbol (or a linked pair) says; dates are ISO strings."""

    labeler: str | None = None
    product: str | None = None
    unit: str | None = None
    lot: str | None = None
    expiry: str | None = None
    manufactured: str | None = None
    serial: str | None = None
    quantity: int | None = None
    check: str = ""
    link: str | None = None  # a lone secondary: the check character of its primary
    has_secondary: bool = False

    @property
    def kind(self) -> str:
        if self.labeler is None:
            return "secondary"
        return "concatenated" if self.has_secondary else "primary"

    @property
    def code(self) -> str | None:
        """Labeler + product + unit of measure, as the catalog's `hibc` codes are written."""
        if self.labeler is None:
            return None
        return f"{self.labeler}{self.product}{self.unit}"


def mod43(data: str) -> str:
    """The HIBC check character of `data` (which includes the leading `+`)."""
    try:
        return CHARSET[sum(_VALUE[c] for c in data) % 43]
    except KeyError as exc:
        raise HibcError("charset", f"{exc.args[0]!r} is not an HIBC character") from None


def parse_hibc(text: str) -> Hibc:
    """Parse one HIBC symbol's data; raises HibcError, never anything else."""
    if not isinstance(text, str):
        raise HibcError("type", "HIBC data must be text")
    if not text.startswith("+"):
        raise HibcError("flag", "HIBC data starts with '+'")
    if len(text) < 3:
        raise HibcError("short", "HIBC data is too short to hold data and a check character")
    bad = next((c for c in text if c not in _VALUE), None)
    if bad is not None:
        raise HibcError("charset", f"{bad!r} is not an HIBC character (0-9, A-Z, - . space $ / + %)")
    body, check = text[:-1], text[-1]
    expected = mod43(body)
    if check != expected:
        raise HibcError("check", f"HIBC check character is {check!r}, the data gives {expected!r}")
    data = body[1:]
    if data[0].isalpha():
        primary, sep, secondary = data.partition("/")
        match = _PRIMARY.fullmatch(primary)
        if match is None:
            raise HibcError("primary", f"HIBC primary data {primary!r} is not labeler (4), product "
                            "(1-18 letters or digits) and unit of measure (1 digit)")
        labeler, product, unit = match.groups()
        if not sep:
            return Hibc(labeler=labeler, product=product, unit=unit, check=check)
        fields = _secondary(secondary)
        return Hibc(labeler=labeler, product=product, unit=unit, check=check, has_secondary=True,
                    **fields)
    if len(data) < 2:
        raise HibcError("secondary", "HIBC secondary data needs data and a link character")
    fields = _secondary(data[:-1])
    return Hibc(check=check, link=data[-1], has_secondary=True, **fields)


def link(primary: Hibc, secondary: Hibc) -> Hibc:
    """Join a primary symbol with the secondary symbol scanned after it."""
    if primary.kind != "primary":
        raise HibcError("link", "the first HIBC symbol of a pair must be primary data alone")
    if secondary.kind != "secondary":
        raise HibcError("link", "the second HIBC symbol of a pair must be secondary data alone")
    if secondary.link != primary.check:
        raise HibcError("link", f"HIBC secondary link character {secondary.link!r} does not match "
                        f"the primary's check character {primary.check!r}")
    return Hibc(labeler=primary.labeler, product=primary.product, unit=primary.unit,
                lot=secondary.lot, expiry=secondary.expiry, manufactured=secondary.manufactured,
                serial=secondary.serial, quantity=secondary.quantity, check=primary.check,
                has_secondary=True)


def concatenated(hibc: Hibc) -> str:
    """The one-symbol text of a primary with secondary data (check character recomputed)."""
    if hibc.labeler is None:
        raise HibcError("link", "secondary data alone has no concatenated form")
    parts = [f"+{hibc.code}"]
    if hibc.has_secondary:
        main = "$$"
        if hibc.quantity is not None and hibc.quantity < 100:
            main += f"8{hibc.quantity:02d}"
        elif hibc.quantity is not None and hibc.quantity < 100000:
            main += f"9{hibc.quantity:05d}"
        main += "3" + dt.date.fromisoformat(hibc.expiry).strftime("%y%m%d") if hibc.expiry else "7"
        parts.append(main + (hibc.lot or ""))
        if hibc.serial:
            parts.append("S" + hibc.serial)
        if hibc.manufactured:
            parts.append("16D" + hibc.manufactured.replace("-", ""))
        if hibc.quantity is not None and hibc.quantity >= 100000:
            parts.append(f"Q{hibc.quantity}")
    body = "/".join(parts)
    return body + mod43(body)


def _secondary(text: str) -> dict:
    main, *supplements = text.split("/")
    fields: dict = {"lot": None, "expiry": None, "serial": None, "quantity": None,
                    "manufactured": None}
    if main[:1].isdigit():
        fields["expiry"] = _date("YYJJJ", main[:5])
        fields["lot"] = _lot(main[5:])
    elif main.startswith("$$+"):
        expiry, rest = _dated(main[3:])
        fields["expiry"] = expiry
        fields["serial"] = _serial(rest)
    elif main.startswith("$$"):
        rest = main[2:]
        if rest[:1] in ("8", "9"):
            width = 2 if rest[0] == "8" else 5
            digits = rest[1:1 + width]
            if len(digits) != width or not digits.isdigit():
                raise HibcError("quantity", f"HIBC quantity after {rest[0]!r} needs {width} digits")
            fields["quantity"] = _quantity(digits)
            rest = rest[1 + width:]
        expiry, rest = _dated(rest)
        fields["expiry"] = expiry
        fields["lot"] = _lot(rest)
    elif main.startswith("$+"):
        fields["serial"] = _serial(main[2:])
    elif main.startswith("$"):
        fields["lot"] = _lot(main[1:])
    else:
        raise HibcError("secondary", f"HIBC secondary data {main!r} starts with neither a date nor '$'")
    for supplement in supplements:
        _supplement(supplement, fields)
    return fields


def _supplement(text: str, fields: dict) -> None:
    if text.startswith("14D") or text.startswith("16D"):
        name = "expiry" if text.startswith("14D") else "manufactured"
        value = _date("YYYYMMDD", text[3:])
        if fields[name] is not None and fields[name] != value:
            raise HibcError("date", f"HIBC data gives two {name} dates")
        fields[name] = value
    elif text.startswith("S"):
        if fields["serial"] is not None:
            raise HibcError("serial", "HIBC data gives two serial numbers")
        fields["serial"] = _serial(text[1:])
    elif text.startswith("Q"):
        if fields["quantity"] is not None or not text[1:].isdigit() or len(text) > 6:
            raise HibcError("quantity", f"HIBC quantity field {text!r} is not 1-5 digits given once")
        fields["quantity"] = _quantity(text[1:])
    else:
        raise HibcError("supplement", f"unknown HIBC supplemental field {text!r}")


def _dated(text: str) -> tuple[str | None, str]:
    """Split `[format digit]date...` into the ISO date and the rest."""
    head = text[:1]
    if head in ("0", "1"):
        return _date("MMYY", text[:4]), text[4:]
    if head == "7":
        return None, text[1:]
    fmt = _DATE_FORMATS.get(head)
    if fmt is None:
        raise HibcError("date", f"HIBC '$$' data needs a date format digit 0-7, got {head!r}")
    return _date(fmt, text[1:1 + len(fmt)]), text[1 + len(fmt):]


def _date(fmt: str, text: str) -> str:
    if len(text) != len(fmt) or not text.isdigit():
        raise HibcError("date", f"HIBC date {text!r} does not match {fmt}")
    part = {key: int(text[fmt.index(key):fmt.index(key) + len(key)])
            for key in ("YYYY", "YY", "MM", "DD", "JJJ", "HH") if key in fmt}
    year = part["YYYY"] if "YYYY" in fmt else 2000 + part["YY"]
    try:
        if "JJJ" in fmt:
            if not 1 <= part["JJJ"] <= (366 if calendar.isleap(year) else 365):
                raise ValueError("day of year out of range")
            day = dt.date(year, 1, 1) + dt.timedelta(days=part["JJJ"] - 1)
        elif "DD" in fmt:
            day = dt.date(year, part["MM"], part["DD"])
        else:
            # MMYY: the product expires at the end of that month.
            day = dt.date(year, part["MM"], calendar.monthrange(year, part["MM"])[1])
        if part.get("HH", 0) > 23:
            raise ValueError("hour out of range")
    except (ValueError, calendar.IllegalMonthError) as exc:
        raise HibcError("date", f"HIBC date {text!r} ({fmt}) is not a real date: {exc}") from None
    return day.isoformat()


def _lot(text: str) -> str | None:
    if _FIELD.fullmatch(text) is None:
        raise HibcError("lot", f"HIBC lot {text!r} is not up to 18 letters or digits")
    return text or None


def _serial(text: str) -> str:
    if _SERIAL.fullmatch(text) is None:
        raise HibcError("serial", f"HIBC serial {text!r} is not 1-18 letters or digits")
    return text


def _quantity(digits: str) -> int:
    quantity = int(digits)
    if quantity == 0:
        raise HibcError("quantity", "HIBC quantity is 0")
    return quantity
