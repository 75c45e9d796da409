"""Barcode scans: GS1 element strings and Digital Link URIs (read with biip), HIBC, plain GTINs.

Every part that takes a scanned code (scanners, ECR/1 `code` fields, POS/1, file drops) calls
`parse_scan`. It raises `ScanError` for anything it cannot read with certainty, never guesses and
never raises anything else.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import biip
from biip.gs1_digital_link_uris import GS1DigitalLinkURI
from biip.gs1_messages import GS1Message
from biip.gtin import Gtin

from ._hibc import Hibc, HibcError, concatenated, link, parse_hibc

MAX_SCAN_CHARS = 4096

# AIM symbology identifier: `]`, a symbology letter, a modifier character.
_AIM = re.compile(r"\][A-Za-z][0-9A-Za-z]")
# Symbologies whose data is a GS1 element string (FNC1 in first position).
_GS1_SYMBOLOGIES = {"]C1", "]d2", "]Q3", "]e0", "]J1"}
_GTIN_LENGTHS = (8, 12, 13, 14)
_GS = "\x1d"
_CONFIG = biip.ParseConfig(separator_chars=(_GS,))


class ScanError(ValueError):
    """A scan that cannot be read. `code` is short and stable (a metrics label), `reason` is words
    for a person naming what was wrong."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Scan:
    raw: str                  # the data as scanned, AIM identifier and all
    symbology: str | None     # AIM identifier such as "]d2", or None
    kind: str                 # "gs1" | "hibc" | "gtin"
    gtin: str | None = None   # always GTIN-14
    hibc: str | None = None   # labeler + product + unit of measure ("H123ABC1230")
    lot: str | None = None
    expiry: str | None = None  # ISO date; GS1 day 00 is the last day of the month
    serial: str | None = None
    quantity: int | None = None


def parse_scan(data: str | bytes) -> Scan:
    """Read one scan; raises ScanError, never anything else."""
    raw = _text(data)
    symbology = None
    body = raw
    if body.startswith("]"):
        if _AIM.match(body) is None:
            raise ScanError("symbology", f"{body[:3]!r} is not an AIM symbology identifier")
        symbology, body = body[:3], body[3:]
    if not body:
        raise ScanError("empty", "the scan holds no data")
    if body.startswith("+"):
        return _from_hibc(raw, symbology, _hibc(body))
    if body.startswith(("http://", "https://", "HTTP://", "HTTPS://")):
        return _digital_link(raw, symbology, body)
    if (symbology not in _GS1_SYMBOLOGIES and body.isdigit() and body.isascii()
            and len(body) in _GTIN_LENGTHS):
        return Scan(raw=raw, symbology=symbology, kind="gtin", gtin=_gtin14(body))
    if body[0].isdigit() or body[0] == _GS:
        return _element_string(raw, symbology, body)
    raise ScanError("format", "the scan is neither GS1, HIBC nor a GTIN")


def parse_hibc_pair(primary: str | bytes, secondary: str | bytes) -> Scan:
    """Join an HIBC primary symbol with the secondary symbol scanned after it (linked by the
    secondary's link character); `raw` is then the pair's one-symbol concatenated form."""
    first, second = _text(primary), _text(secondary)
    symbology = None
    if _AIM.match(first):
        symbology, first = first[:3], first[3:]
    if _AIM.match(second):
        second = second[3:]
    try:
        joined = link(parse_hibc(first), parse_hibc(second))
        text = concatenated(joined)
    except HibcError as exc:
        raise ScanError(f"hibc_{exc.code}", exc.reason) from None
    return _from_hibc((symbology or "") + text, symbology, joined)


def hibc_part(data: str | bytes) -> str | None:
    """"primary" or "secondary" for an HIBC symbol that needs its partner, else None."""
    try:
        text = _text(data)
    except ScanError:
        return None
    if _AIM.match(text):
        text = text[3:]
    try:
        kind = parse_hibc(text).kind
    except HibcError:
        return None
    return kind if kind in ("primary", "secondary") else None


def _text(data: str | bytes) -> str:
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            text = bytes(data).decode("ascii")
        except UnicodeDecodeError:
            raise ScanError("encoding", "the scan holds bytes that are not ASCII") from None
    elif isinstance(data, str):
        text = data
    else:
        raise ScanError("type", f"a scan is text or bytes, not {type(data).__name__}")
    text = text.strip("\r\n\t")
    if len(text) > MAX_SCAN_CHARS:
        raise ScanError("too_long", f"the scan is {len(text)} characters, at most {MAX_SCAN_CHARS}")
    bad = next((c for c in text if (c < " " and c != _GS) or c > "~"), None)
    if bad is not None:
        raise ScanError("control", f"the scan holds the character {bad!r}")
    return text


def _hibc(body: str) -> Hibc:
    try:
        hibc = parse_hibc(body)
    except HibcError as exc:
        raise ScanError(f"hibc_{exc.code}", exc.reason) from None
    if hibc.kind == "secondary":
        raise ScanError("hibc_secondary_alone",
                        "HIBC secondary data names no product without its primary symbol")
    return hibc


def _from_hibc(raw: str, symbology: str | None, hibc: Hibc) -> Scan:
    return Scan(raw=raw, symbology=symbology, kind="hibc", hibc=hibc.code, lot=hibc.lot,
                expiry=hibc.expiry, serial=hibc.serial, quantity=hibc.quantity)


def _gtin14(digits: str) -> str:
    try:
        return Gtin.parse(digits, config=_CONFIG).as_gtin_14()
    except Exception as exc:  # biip's own errors, and anything else it may raise on odd input
        raise ScanError("gtin", f"{digits!r} is not a valid GTIN: {exc}") from None


def _element_string(raw: str, symbology: str | None, body: str) -> Scan:
    if _GS * 2 in body:
        raise ScanError("gs1", "the GS1 data holds an empty field between two separators")
    try:
        message = GS1Message.parse(body, config=_CONFIG)
    except Exception as exc:  # biip raises ParseError, and ValueError on some malformed input
        raise ScanError("gs1", f"not a valid GS1 element string: {exc}") from None
    return _from_elements(raw, symbology, message.element_strings)


def _digital_link(raw: str, symbology: str | None, body: str) -> Scan:
    try:
        uri = GS1DigitalLinkURI.parse(body, config=_CONFIG)
    except Exception as exc:  # biip raises ParseError, and ValueError on some malformed URLs
        raise ScanError("digital_link", f"not a valid GS1 Digital Link URI: {exc}") from None
    return _from_elements(raw, symbology, uri.element_strings)


def _from_elements(raw: str, symbology: str | None, elements) -> Scan:
    values: dict[str, str] = {}
    dates: dict[str, str] = {}
    for element in elements:
        ai = element.ai.ai
        if ai in values and values[ai] != element.value:
            raise ScanError("gs1", f"GS1 AI ({ai}) appears twice with different values")
        values[ai] = element.value
        # biip keeps parsing when a check digit is wrong and only notes it: refuse here.
        for what in ("gtin", "sscc", "gln"):
            error = getattr(element, f"{what}_error", None)
            if error:
                raise ScanError(f"{what}_check", f"GS1 AI ({ai}): {error}")
        if element.date is not None:
            dates[ai] = element.date.isoformat()
    gtin_ai = "01" if "01" in values else "02" if "02" in values else None
    if gtin_ai is None:
        raise ScanError("no_item", "the GS1 data names no item (no AI 01 or 02)")
    quantity = None
    for ai in ("30", "37"):
        if ai in values:
            # biip accepts an AI (30) or (37) with no digits after it at the end of the data.
            if not (values[ai].isdigit() and values[ai].isascii()):
                raise ScanError("quantity", f"GS1 AI ({ai}) holds no count ({values[ai]!r})")
            quantity = int(values[ai])
            if quantity == 0:
                raise ScanError("quantity", f"GS1 AI ({ai}) gives a count of 0")
    return Scan(raw=raw, symbology=symbology, kind="gs1", gtin=_gtin14(values[gtin_ai]),
                lot=values.get("10"), expiry=dates.get("17"), serial=values.get("21"),
                quantity=quantity)
