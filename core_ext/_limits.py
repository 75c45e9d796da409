"""The limits of ECR/1 ("Limits" in ecr-serial.md) and of the HTTP edges, defined once and applied
on every way in.

Every string a device or the ERP sends must be valid Unicode (no lone surrogate: it could never be
encoded back into an answer) and free of control characters (they hide in logs and break CSV and
terminals), except the GS (0x1D) a scanned GS1 `code` carries between its fields.
"""
from __future__ import annotations

import re

from ._errors import bad_request

MAX_LINES = 500          # lines per basket
MAX_COUPONS = 20         # coupons per basket
MAX_ID = 64              # a request id, in characters
MAX_CODE = 256           # a line's code (SKU, GTIN or a raw scan)
MAX_TEXT = 64            # lot, serial, member id, a coupon, a lane
MAX_NOTE = 256           # free words a person typed: a return's reason
MAX_COUNTED_CENTS = 10 ** 12  # one payment method's drawer count: far beyond any till, and within 64 bits
# Units in one movement, and a catalog item's reorder point and quantity: far beyond any real stock,
# and balances summed from such quantities stay within 64 bits.
MAX_STOCK_UNITS = 10 ** 9
# A batch of sealed events, as the configuration or the policy sets it.
MAX_BATCH_EVENTS = 100_000
# The policy's expiry warning: a century ahead at most.
MAX_WARN_DAYS = 36_500
# Points: a member's balance as the ERP sends it, and the policy's cap per sale; far beyond any
# member's, and within 64 bits.
MAX_POINTS = 10 ** 12

# Every HTTP listener: the request line and header fields together, and how many fields. Real
# clients send a dozen headers of well under a kilobyte; more is a mistake or an attack.
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 100

GS = "\x1d"

# C0 and C1 controls, DEL, the bidirectional overrides and isolates (they reorder what a person reads
# in a log or on a page), and lone surrogates.
_BAD = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_BAD_EXCEPT_GS = re.compile("[\x00-\x1c\x1e\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# What no decoder may hand on: JSON's `\ud800` escape gives a string that can never be encoded again.
_SURROGATE = re.compile("[\ud800-\udfff]")
_MAX_KEY_IN_PATH = 32


def text_problem(value, max_len: int, *, allow_gs: bool = False) -> str | None:
    """Why `value` is not an acceptable string of at most `max_len` characters, or None."""
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if not value:
        return "must not be empty"
    if len(value) > max_len:
        return f"is {len(value)} characters long, at most {max_len} are allowed"
    bad = (_BAD_EXCEPT_GS if allow_gs else _BAD).search(value)
    if bad is not None:
        return f"holds the character U+{ord(bad.group()):04X} at position {bad.start()}, which is not allowed"
    return None


def plain_text(text: str) -> bool:
    """Whether `text` holds none of the characters a string may not hold (nor a GS): many fields
    joined are checked at once, and only a text that is not plain needs each field looked at."""
    return _BAD.search(text) is None


def check_text(field: str, value, max_len: int, *, allow_gs: bool = False) -> str:
    """`value` if it is acceptable, else a `BAD_REQUEST` naming `field` and what is wrong."""
    problem = text_problem(value, max_len, allow_gs=allow_gs)
    if problem is not None:
        raise bad_request(f"{field} {problem}")
    return value


def check_id(value, field: str = "id") -> str:
    return check_text(field, value, MAX_ID)


def invalid_text(value, where: str = "the body") -> str | None:
    """Where a decoded tree (maps, lists, scalars) holds a string that is not valid Unicode, or None.

    Only the position is named, never the string itself: an answer quoting it could not be encoded.
    """
    stack = [(value, None)]
    while stack:
        item, node = stack.pop()
        if isinstance(item, str):
            bad = _SURROGATE.search(item)
            if bad is not None:
                return (f"{_path(where, node)} is not valid text: a lone surrogate "
                        f"U+{ord(bad.group()):04X} at position {bad.start()}")
        elif isinstance(item, dict):
            for key, sub in item.items():
                if isinstance(key, str) and _SURROGATE.search(key):
                    return f"a key in {_path(where, node)} is not valid text: it holds a lone surrogate"
                stack.append((sub, (node, key)))
        elif isinstance(item, (list, tuple)):
            stack.extend((sub, (node, i)) for i, sub in enumerate(item))
    return None


def _path(where: str, node) -> str:
    # Built only for the answer: a linked (parent, key) chain costs nothing while the tree is fine.
    parts = []
    while node is not None:
        node, key = node
        if isinstance(key, int):
            parts.append(f"[{key}]")
        else:
            name = str(key)
            parts.append("." + (name if len(name) <= _MAX_KEY_IN_PATH else name[:_MAX_KEY_IN_PATH] + "..."))
    if not parts:
        return where
    path = "".join(reversed(parts))
    return path[1:] if path.startswith(".") else where + path
