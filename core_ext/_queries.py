"""ECR/1 queries: member, stock, ping. They commit nothing."""
from __future__ import annotations

from . import _errors as E, _master
from ._errors import Refused, bad_request
from ._sales import resolve_code
from ._select import ledger


def handle_member(tx, request, ctx) -> dict:
    member_id = request.body.get("member")
    if not isinstance(member_id, str) or not member_id:
        raise bad_request("member must be a non-empty string")
    row = tx.get("members", member_id)
    if row is None:
        raise Refused(E.UNKNOWN_ITEM, f"no member {member_id!r}")
    answer = {"member": member_id, "tier": row.get("tier"), "points_balance": row["points"]}
    if row.get("name"):
        answer["name"] = row["name"]
    return answer


def handle_stock(tx, request, ctx) -> dict:
    code = request.body.get("code")
    if not isinstance(code, str) or not code:
        raise bad_request("code must be a non-empty string")
    item, _facts = resolve_code(tx, code)
    if item is None:
        raise Refused(E.UNKNOWN_ITEM, f"{code!r} matches nothing in the catalog")
    sku = item.sku
    lots = []
    for lot, row in ledger.lot_rows(tx, sku).items():
        lots.append({"lot": lot, "expiry": row.expiry, "qty": row.qty,
                     "recalled": _master.recall_of(tx, sku, lot) is not None})
    return {"sku": sku, "on_hand": ledger.on_hand(tx, sku), "lots": lots}


def handle_ping(tx, request, ctx) -> dict:
    return {"time_ms": ctx.now_ms}
