"""ECR/1 `return`: goods back to the lots they were sold from, refunded by what was paid.

Refunds follow the original sale's priced lines, never today's rules (`_returns.plan_return` does
the arithmetic); points earned are reversed and points paid come back.
"""
from __future__ import annotations

from . import _alerts, _days, _errors as E, _master
from ._errors import Refused, bad_request
from ._localtime import today
from ._records import Move, moves_of
from ._sales import engine_for
from ._select import ledger
from ._types import is_int


# --- return ----------------------------------------------------------------------------------

def _sale_for(tx, request, orig: str):
    for key in (f"{request.source}:{orig}", orig):
        first = tx.get("ids", key)
        if first is not None and first.get("seq"):
            sale = tx.event(first["seq"])
            if sale is not None and sale.get("type") == "sale":
                return key, sale
    raise Refused(E.UNKNOWN_SALE, f"no committed sale {orig!r}")


def _returnable(sale: dict, state: dict) -> dict:
    """(line index, lot) -> [units still returnable, expiry, sku], in line order."""
    out = {}
    for index, line in enumerate(sale["lines"]):
        for a in line["allocations"]:
            back = state["units"].get(f"{index}\x00{a['lot'] or ''}", 0)
            out[(index, a["lot"])] = [a["qty"] - back, a["expiry"], line["sku"]]
    return out


def _draw(returnable: dict, sale_id: str, i: int, line) -> tuple[str, str | None, int, str | None, list]:
    """Which sale lines and lot a return line gives back: (sku, lot, qty, expiry, [(index, units)])."""
    if not isinstance(line, dict) or not isinstance(line.get("sku"), str):
        raise bad_request(f"lines[{i}].sku must be a string")
    sku, qty = line["sku"], line.get("qty")
    if not is_int(qty) or qty <= 0:
        raise bad_request(f"lines[{i}].qty must be a positive integer")
    lots = sorted({lot for (_ix, lot), (_l, _e, s) in returnable.items() if s == sku}, key=lambda x: (x is None, x or ""))
    if not lots:
        raise Refused(E.RETURN_EXCEEDS_SALE, f"lines[{i}]: {sku} was not in sale {sale_id!r}")
    lot = line.get("lot")
    if lot is not None and lot not in lots:
        raise Refused(E.RETURN_EXCEEDS_SALE, f"lines[{i}]: sale {sale_id!r} sold no {sku} from lot {lot}")
    if lot is None:
        if len(lots) > 1:
            raise bad_request(f"lines[{i}]: sale {sale_id!r} took {sku} from several lots ({', '.join(map(str, lots))}); "
                       "name the lot")
        lot = lots[0]
    need, draws, expiry = qty, [], None
    for (index, l), entry in returnable.items():
        if l != lot or entry[2] != sku or not entry[0] or not need:
            continue
        units = min(entry[0], need)
        entry[0] -= units
        need -= units
        draws.append((index, units))
        expiry = entry[1]
    if need:
        raise Refused(E.RETURN_EXCEEDS_SALE, f"lines[{i}]: returning {qty} {sku} (lot {lot}) exceeds what "
                                             f"sale {sale_id!r} sold less earlier returns")
    return sku, lot, qty, expiry, draws


def _check_serial(tx, sale: dict, sale_id: str, i: int, serial, sku: str, qty: int) -> None:
    """A returned serial names one unit that this sale took and that is not back in stock."""
    if serial is None:
        return
    if not isinstance(serial, str) or not serial:
        raise bad_request(f"lines[{i}].serial must be a non-empty string")
    if qty != 1:
        raise bad_request(f"lines[{i}].qty must be 1 with a serial (a serial names one unit), got {qty}")
    sold = {s for m in moves_of(sale) if m.sku == sku and m.delta < 0 for s in m.serials}
    if serial not in sold:
        raise Refused(E.RETURN_EXCEEDS_SALE, f"lines[{i}]: sale {sale_id!r} sold no {sku} with serial {serial}")
    if serial in ledger.serial_holders(tx, sku):
        raise Refused(E.RETURN_EXCEEDS_SALE, f"lines[{i}]: {sku} serial {serial} is already back in stock")


def handle_return(tx, request, ctx) -> dict:
    body = request.body
    orig, lines = _return_request(body)
    sale_key, sale = _sale_for(tx, request, orig)
    state = tx.get("returns", sale_key) or {"units": {}, "refunded_cents": 0, "points_reversed": 0,
                                            "points_restored": 0}
    before = _units_returned(state)
    drawn = _draw_lines(tx, sale, orig, state, lines)
    take = _take(drawn, state)
    plan = _plan(tx, sale, state, before, take)
    moves, out_lines = _refund_lines(drawn, lines, plan, take)
    ledger.apply_moves(tx, moves)
    state["refunded_cents"] += plan["refund_cents"]
    state["points_reversed"] += plan["points_reversed"]
    state["points_restored"] += plan["points_restored"]
    tx.put("returns", sale_key, state)
    return _record(tx, request, ctx, sale_key, sale, plan, moves, out_lines)


def _return_request(body: dict) -> tuple[str, list]:
    orig = body.get("orig")
    if not isinstance(orig, str) or not orig:
        raise bad_request("orig must name the sale being returned")
    lines = body.get("lines")
    if not isinstance(lines, list) or not lines:
        raise bad_request("lines must be a non-empty list")
    return orig, lines


def _units_returned(state: dict) -> dict:
    """Sale line index -> units of it returned by earlier returns."""
    before = {}
    for key, units in state["units"].items():
        index = int(key.split("\x00", 1)[0])
        before[index] = before.get(index, 0) + units
    return before


def _draw_lines(tx, sale: dict, orig: str, state: dict, lines: list) -> list:
    """What each return line gives back (`_draw`), its serial checked against the sale."""
    returnable = _returnable(sale, state)
    drawn = [_draw(returnable, orig, i, line) for i, line in enumerate(lines)]
    for i, (line, (sku, _lot, qty, _exp, _draws)) in enumerate(zip(lines, drawn)):
        _check_serial(tx, sale, orig, i, line.get("serial"), sku, qty)
    return drawn


def _take(drawn: list, state: dict) -> dict:
    """Sale line index -> units this return takes back; the sale's return state counts them."""
    take = {}
    for _sku, lot, _qty, _exp, draws in drawn:
        for index, units in draws:
            take[index] = take.get(index, 0) + units
            key = f"{index}\x00{lot or ''}"
            state["units"][key] = state["units"].get(key, 0) + units
    return take


def _plan(tx, sale: dict, state: dict, before: dict, take: dict) -> dict:
    """The refund and points of this return, by the sale's own priced lines (`plan_return`)."""
    from ._returns import ReturnPlanError, plan_return
    priced = {**sale, "lines": [{**l, "promos": [{"id": p[0], "version": p[1], "cents": p[2]} for p in l["promos"]]}
                                for l in sale["lines"]],
              "refunded_cents": state["refunded_cents"], "points_reversed_before": state["points_reversed"],
              "points_restored_before": state["points_restored"]}
    try:
        return plan_return(priced, before, take, engine_for(tx, sale["ruleset"]))
    except ReturnPlanError as exc:
        raise Refused(E.RETURN_EXCEEDS_SALE, str(exc)) from None


def _refund_lines(drawn: list, lines: list, plan: dict, take: dict) -> tuple[list, list]:
    """The stock moves and the answer's lines. A sale line's refund is shared by the return lines
    that drew on it, by units, exactly."""
    refund_of = {p["index"]: p["refund_cents"] for p in plan["lines"]}
    given = {index: [0, 0] for index in take}  # units and cents handed out so far
    moves, out_lines = [], []
    for (sku, lot, qty, expiry, draws), line in zip(drawn, lines):
        cents = 0
        for index, units in draws:
            done_units, done_cents = given[index]
            share = refund_of.get(index, 0) * (done_units + units) // take[index] - done_cents
            given[index] = [done_units + units, done_cents + share]
            cents += share
        moves.append(Move(sku, lot, qty, expiry, (line["serial"],) if line.get("serial") else ()))
        out_lines.append({"sku": sku, "lot": lot, "qty": qty, "refund_cents": cents})
    return moves, out_lines


def _record(tx, request, ctx, sale_key: str, sale: dict, plan: dict, moves: list, out_lines: list) -> dict:
    """The return's event, the member's points, the alerts; the answer."""
    body = request.body
    # Lines carry the value given back; what was paid in points comes back as points, the rest as money.
    answer = {"refund_cents": plan["money_refund_cents"], "lines": out_lines}
    doc = {"type": "return", "id": f"{request.source}:{body['id']}", "source": request.source, "orig": sale_key,
           "ts_ms": ctx.now_ms, "reason": body.get("reason"), "lines": out_lines,
           "refund_cents": plan["money_refund_cents"], "value_cents": plan["refund_cents"],
           "member": sale.get("member"), "moves": moves}
    if sale.get("member"):
        delta = plan["points_restored"] - plan["points_reversed"]
        balance = _master.add_points(tx, sale["member"], delta, ctx.now_ms)
        doc["points"] = {"reversed": plan["points_reversed"], "restored": plan["points_restored"]}
        answer["points_reversed"] = plan["points_reversed"]
        answer["points_restored"] = plan["points_restored"]
        answer["points_balance"] = balance
    answer["refunds"] = doc["refunds"] = _days.refunds_of_return(tx, sale_key, sale, doc["refund_cents"],
                                                                 body.get("refund_method"))
    answer["seq"] = tx.append_event(doc)
    _alerts.after_moves(tx, moves, today(ctx.now_ms, ctx.settings.timezone), ctx.now_ms)
    return answer
