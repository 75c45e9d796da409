"""The options of a `csv_drop` device entry, checked one key at a time."""
from __future__ import annotations

import codecs
import datetime as dt
import math
import os

from core_ext import MAX_SLICE_DOCS, MAX_SLICE_LINES

from ._mapper import FIELDS, PAYMENT_METHODS, PRICE_FORMATS, REQUIRED_FIELDS

DEFAULTS = {
    "settle_s": 2.0,
    "poll_s": 0.5,
    "qty_factor": 1,
    "date_format": "%Y-%m-%d",
    "delimiter": ",",
    "encoding": "utf-8",
    "price_format": "cents",
    "payment_map": {},
    # No file need fit in memory (it is read as a stream), so this only guards the disk and the time.
    "max_bytes": 1 << 30,
    # A slice is what one request to the writer applies: as many lines as hold it about `slice_ms`
    # (`_pace.py`), so a till's sale waits at most that long behind a file, on any machine; the
    # counts only cap it.
    "slice_ms": 5.0,
    "slice_baskets": MAX_SLICE_DOCS,
    "slice_lines": 3000,
}
KNOWN = ("name", "kind", "dir", "columns", *DEFAULTS)


def check_options(device: dict) -> list[str]:
    """Every mistake in a `csv_drop` device entry, each naming its key; empty when it is valid."""
    if not isinstance(device, dict):
        return [f"device: must be a table, not {type(device).__name__}"]
    errors = [f"{key}: is not an option of a csv_drop device" for key in device if key not in KNOWN]
    name = device.get("name")
    if not isinstance(name, str) or not name:
        errors.append("name: must be a non-empty string")
    if device.get("kind") != "csv_drop":
        errors.append(f"kind: must be 'csv_drop', not {device.get('kind')!r}")
    errors += _check_dir(device.get("dir"))
    errors += _check_columns(device.get("columns"))
    for key, low, high in (("settle_s", 0.0, 3600.0), ("poll_s", 0.01, 60.0)):
        if key in device and not _number_in(device[key], low, high):
            errors.append(f"{key}: must be a number of seconds from {low} to {high}, "
                          f"not {device[key]!r}")
    if "slice_ms" in device and not _number_in(device["slice_ms"], 0.5, 1000.0):
        errors.append(f"slice_ms: must be a number of milliseconds from 0.5 to 1000, not {device['slice_ms']!r}")
    for key, low, high in (("qty_factor", 1, 1_000_000), ("max_bytes", 1, 1 << 40),
                           ("slice_baskets", 1, MAX_SLICE_DOCS), ("slice_lines", 1, MAX_SLICE_LINES)):
        if key in device and not _int_in(device[key], low, high):
            errors.append(f"{key}: must be a whole number from {low} to {high}, not {device[key]!r}")
    if "date_format" in device:
        errors += _check_date_format(device["date_format"])
    delimiter = device.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\r\n\"":
        errors.append(f"delimiter: must be one character other than a quote or a line end, "
                      f"not {delimiter!r}")
    errors += _check_encoding(device.get("encoding", "utf-8"))
    if device.get("price_format", "cents") not in PRICE_FORMATS:
        errors.append(f"price_format: must be one of {', '.join(PRICE_FORMATS)}, "
                      f"not {device.get('price_format')!r}")
    errors += _check_payment_map(device.get("payment_map", {}))
    return errors


def _check_dir(path) -> list[str]:
    if not isinstance(path, str) or not path:
        return ["dir: must be the path of the watched directory"]
    # Whether it exists is a fact of the machine, not of the file: `serve` makes it when missing.
    if not os.path.isabs(path):
        return [f"dir: must be an absolute path, not {path!r}"]
    return []


def _check_columns(columns) -> list[str]:
    if not isinstance(columns, dict):
        return ["columns: must be a table of gateway field = POS column"]
    errors = [f"columns.{key}: is not a gateway field (one of {', '.join(FIELDS)})"
              for key in columns if key not in FIELDS]
    errors += [f"columns.{key}: is required" for key in REQUIRED_FIELDS if key not in columns]
    errors += [f"columns.{key}: must be a non-empty column name, not {value!r}"
               for key, value in columns.items()
               if key in FIELDS and (not isinstance(value, str) or not value.strip())]
    return errors


def _check_date_format(fmt) -> list[str]:
    # A format must carry the whole date: writing a known date with it must read back the same.
    probe = dt.date(2027, 12, 31)
    try:
        ok = isinstance(fmt, str) and dt.datetime.strptime(probe.strftime(fmt), fmt).date() == probe
    except ValueError:
        ok = False
    return [] if ok else [f"date_format: {fmt!r} is not a strptime format with year, month and day"]


def _check_encoding(name) -> list[str]:
    try:
        # base64 and the like are codecs too, but not of text.
        if isinstance(name, str) and getattr(codecs.lookup(name), "_is_text_encoding", True):
            return []
    except LookupError:
        pass
    return [f"encoding: {name!r} is not a known text encoding"]


def _check_payment_map(payment_map) -> list[str]:
    if not isinstance(payment_map, dict):
        return ["payment_map: must be a table of POS payment name = gateway method"]
    return [f"payment_map.{key}: must be one of {', '.join(PAYMENT_METHODS)}, not {value!r}"
            for key, value in payment_map.items() if value not in PAYMENT_METHODS]


def _number_in(value, low: float, high: float) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and low <= value <= high)


def _int_in(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


class CsvDropError(ValueError):
    """A `csv_drop` device entry that cannot be served; `errors` lists each bad key."""

    def __init__(self, name, errors: list[str]):
        super().__init__(f"csv_drop device {name!r}: " + "; ".join(errors))
        self.errors = errors
