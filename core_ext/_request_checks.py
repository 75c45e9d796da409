"""One check of an ECR/1 request's shape and limits, by kind, before any handler sees it.

The core loop runs it for every ECR/1 kind, so the serial line, POS/1 and whatever else submits an
ECR/1 message get the same answer to the same body. It checks what the handlers would otherwise
trust: types, lengths and counts (ecr-serial.md, "Limits"), never the catalog or the ledger.
"""
from __future__ import annotations

import datetime

from ._errors import BAD_REQUEST, Refused, bad_request
from ._records import answer_refused
from ._day_figures import METHOD_ORDER, REFUND_METHODS
from ._limits import MAX_CODE, MAX_COUNTED_CENTS, MAX_COUPONS, MAX_ID, MAX_LINES, MAX_NOTE, MAX_TEXT, text_problem
from ._types import is_int


def check_request(kind: str, body) -> None:
    """Raise a `BAD_REQUEST` naming the field when `body` is not a well-formed ECR/1 `kind`."""
    if not isinstance(body, dict):
        raise bad_request("the request must be a map")
    _text(body, "id", MAX_ID)
    check = _CHECKS.get(kind)
    if check is not None:
        check(body)


def request_refusal(kind: str, body) -> dict | None:
    """The ECR/1 refusal of a request `check_request` refuses, else None.

    `re` repeats the id only when it is itself acceptable: an id that is not valid text could not
    even be encoded into the answer.
    """
    if kind in _BASKETS and salepath.basket_well_formed(kind, body):
        return None  # the common case, answered by the sale path's typed walk when compiled
    try:
        check_request(kind, body)
    except Refused as exc:
        rid = body.get("id") if isinstance(body, dict) else None
        return answer_refused(rid if text_problem(rid, MAX_ID) is None else None, BAD_REQUEST, exc.message)
    return None


# --- the fields ------------------------------------------------------------------------------

def _text(where: dict, name: str, max_len: int, *, prefix: str = "", optional: bool = False,
          allow_gs: bool = False) -> None:
    value = where.get(name)
    if value is None:
        if optional:
            return
        raise bad_request(f"{prefix}{name} is missing")
    problem = text_problem(value, max_len, allow_gs=allow_gs)
    if problem is not None:
        raise bad_request(f"{prefix}{name} {problem}")


def _list(body: dict, name: str, max_items: int | None, *, optional: bool = False) -> list:
    value = body.get(name)
    if value is None and optional:
        return []
    if not isinstance(value, list):
        raise bad_request(f"{name} must be a list")
    if not value and not optional:
        raise bad_request(f"{name} must not be empty")
    if max_items is not None and len(value) > max_items:
        raise bad_request(f"{name} has {len(value)} entries, at most {max_items} are allowed")
    return value


def _maps(body: dict, name: str, max_items: int | None):
    """(index, map) of each entry of the list `name`, refusing entries that are not maps."""
    for i, entry in enumerate(_list(body, name, max_items)):
        if not isinstance(entry, dict):
            raise bad_request(f"{name}[{i}] must be a map")
        yield i, entry


def _int(where: dict, name: str, *, prefix: str) -> None:
    if not is_int(where.get(name)):
        raise bad_request(f"{prefix}{name} must be an integer, got {_type(where.get(name))}")


def _date(where: dict, name: str, *, prefix: str) -> None:
    value = where.get(name)
    if value is None:
        return
    try:
        if not isinstance(value, str) or len(value) != 10:
            raise ValueError
        datetime.date.fromisoformat(value)
    except ValueError:
        raise bad_request(f"{prefix}{name} must be an ISO date (YYYY-MM-DD)") from None


def _type(value) -> str:
    return "nothing" if value is None else type(value).__name__


# --- the kinds -------------------------------------------------------------------------------

def _basket(body: dict) -> None:
    """quote and sale: lines, coupons, member, lane."""
    for i, line in _maps(body, "lines", MAX_LINES):
        where = f"lines[{i}]."
        if line.get("code") is not None or line.get("sku") is None:
            _text(line, "code", MAX_CODE, prefix=where, allow_gs=True)
        else:
            _text(line, "sku", MAX_CODE, prefix=where)
        _int(line, "qty", prefix=where)
        _text(line, "lot", MAX_TEXT, prefix=where, optional=True)
        _text(line, "serial", MAX_TEXT, prefix=where, optional=True)
        _date(line, "expiry", prefix=where)
    for i, coupon in enumerate(_list(body, "coupons", MAX_COUPONS, optional=True)):
        problem = text_problem(coupon, MAX_TEXT)
        if problem is not None:
            raise bad_request(f"coupons[{i}] {problem}")
    _text(body, "member", MAX_TEXT, optional=True)
    # No lane and an empty lane say the same: the basket was not filled by a lane scanner.
    if body.get("lane") != "":
        _text(body, "lane", MAX_TEXT, optional=True)


def _sale(body: dict) -> None:
    _basket(body)
    # ECR/1 bounds no count of payments: each is checked for its types, the sum by the handler.
    for i, payment in _maps(body, "payments", None):
        _text(payment, "method", MAX_TEXT, prefix=f"payments[{i}].")
        _int(payment, "cents", prefix=f"payments[{i}].")


def _return(body: dict) -> None:
    _text(body, "orig", MAX_ID)
    for i, line in _maps(body, "lines", MAX_LINES):
        where = f"lines[{i}]."
        _text(line, "sku", MAX_CODE, prefix=where)
        _int(line, "qty", prefix=where)
        _text(line, "lot", MAX_TEXT, prefix=where, optional=True)
        _text(line, "serial", MAX_TEXT, prefix=where, optional=True)
    _text(body, "reason", MAX_NOTE, optional=True)
    method = body.get("refund_method")
    if method is not None and method not in REFUND_METHODS:
        # Points paid come back as points by themselves; only money can be named.
        raise bad_request(f"refund_method must be one of {', '.join(REFUND_METHODS)}, got {_shown(method)}")


def _drawer_count(body: dict) -> None:
    counted = body.get("counted")
    if not isinstance(counted, dict) or not counted:
        raise bad_request("counted must be a non-empty map of payment method to cents")
    for method, cents in counted.items():
        if method not in METHOD_ORDER:
            raise bad_request(f"counted: {_shown(method)} is not a payment method ({', '.join(METHOD_ORDER)})")
        if not is_int(cents) or not 0 <= cents <= MAX_COUNTED_CENTS:
            raise bad_request(f"counted.{method} must be an integer of cents from 0 to {MAX_COUNTED_CENTS}, "
                              f"got {_type(cents) if not is_int(cents) else cents}")


def _shown(value) -> str:
    # Only short valid text is repeated in an answer; anything else is named by its type.
    return repr(value) if text_problem(value, MAX_TEXT) is None else _type(value)


def _member(body: dict) -> None:
    _text(body, "member", MAX_TEXT)


def _stock(body: dict) -> None:
    _text(body, "code", MAX_CODE, allow_gs=True)


_CHECKS = {"quote": _basket, "sale": _sale, "return": _return, "member": _member, "stock": _stock,
           "drawer_count": _drawer_count}
_BASKETS = frozenset({"quote", "sale"})

from ._select import salepath  # noqa: E402  (the sale path asks this module back in its pure twin)
