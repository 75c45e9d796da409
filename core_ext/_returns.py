"""Refunds of a committed sale (PROMO/1, Returns): never re-priced against today's rules.

A line refunds by the cumulative formula A(x) = floor(N·x/n), so partial returns in any order add up
to exactly what the line cost. When a rule that discounted the sale has `clawback_on_return`, the kept
units are re-priced with the sale's own rule set and time instead, and the refund is what was paid
less the kept units' new price less what was already refunded. Points follow the refund the same
cumulative way, so the last return settles every remaining point and cent.
"""
from __future__ import annotations

from ._promo_py import spread


class ReturnPlanError(ValueError):
    """A return that does not fit the sale (unknown line, more units than are left, wrong rule set)."""


def refund_share(net_cents: int, n: int, r: int, k: int) -> int:
    """Refund of `k` more units of a line of `n` units and net `net_cents` after `r` were returned."""
    if n < 1 or net_cents < 0 or r < 0 or k < 0 or r + k > n:
        raise ReturnPlanError(f"cannot return {k} of {n} units after {r} were returned (net {net_cents})")
    return net_cents * (r + k) // n - net_cents * r // n


def _cumulative(total: int, done: int, whole: int) -> int:
    """The share of `total` that `done` of `whole` stands for, rounded down; all of it once done == whole."""
    return total if done >= whole else total * done // whole


def plan_return(sale: dict, returned_before: dict[int, int], take: dict[int, int], engine) -> dict:
    """What returning `take` (line index -> units) refunds now; see the module docstring.

    Returns {"lines": [{"index", "qty", "refund_cents"}], "refund_cents", "points_reversed",
    "points_restored", "points_restored_cents", "money_refund_cents"}: `refund_cents` is the value
    given back, of which `points_restored_cents` returns as points and `money_refund_cents` as money.
    """
    lines = sale["lines"]
    _check_take(lines, returned_before, take)
    paid = sum(line["net_cents"] for line in lines)
    refunded_before = sale.get("refunded_cents", 0)
    order = sorted(take)
    shares = [refund_share(lines[i]["net_cents"], lines[i]["qty"], returned_before.get(i, 0), take[i]) for i in order]
    if any(p["id"] in engine.clawback_ids for line in lines for p in line["promos"]):
        refund = max(0, paid - _kept_total(sale, returned_before, take, engine) - refunded_before)
        # Split over the returned lines as their own formula would, so a line's part stays explainable.
        shares = spread(refund, shares if sum(shares) else [take[i] for i in order])
    else:
        refund = sum(shares)
    points = _points(sale, returned_before, take, paid, refunded_before, refund)
    return {"lines": [{"index": i, "qty": take[i], "refund_cents": cents} for i, cents in zip(order, shares)],
            "refund_cents": refund, **points, "money_refund_cents": refund - points["points_restored_cents"]}


def _check_take(lines: list, returned_before: dict, take: dict) -> None:
    if not take:
        raise ReturnPlanError("nothing to return")
    for index, units in sorted(take.items()):
        if not isinstance(index, int) or not 0 <= index < len(lines):
            raise ReturnPlanError(f"the sale has no line {index!r}")
        before = returned_before.get(index, 0)
        if not isinstance(units, int) or units < 1 or before + units > lines[index]["qty"]:
            raise ReturnPlanError(f"line {index} ({lines[index]['sku']}): cannot return {units} units, "
                                  f"{lines[index]['qty'] - before} of {lines[index]['qty']} are left")


def _kept_total(sale: dict, returned_before: dict, take: dict, engine) -> int:
    """What the units the customer keeps cost, priced by the sale's own rule set at its own time."""
    if engine.version != sale["ruleset"]:
        raise ReturnPlanError(f"the sale was priced by rule set {sale['ruleset']}, "
                              f"the engine given is version {engine.version}")
    kept = []
    for i, line in enumerate(sale["lines"]):
        left = line["qty"] - returned_before.get(i, 0) - take.get(i, 0)
        if left:
            kept.append({"sku": line["sku"], "qty": left, "unit_cents": line["unit_cents"],
                         "category": line.get("category", "")})
    if not kept:
        return 0
    local = sale.get("local") or {}
    member = {"id": sale["member"], "tier": sale.get("tier")} if sale.get("member") else None
    return engine.price(kept, member=member, coupons=tuple(sale.get("coupons") or ()), store=sale.get("store", ""),
                        channel=sale.get("channel", "ecr"), ts_ms=sale.get("ts_ms", 0),
                        weekday=local.get("weekday", 1), minute=local.get("minute", 0))["total_cents"]


def _points(sale: dict, returned_before: dict, take: dict, paid: int, refunded_before: int, refund: int) -> dict:
    """Points earned reversed and points paid restored, in the proportion the refund (or, when
    nothing was paid, the units) has reached: the last return settles every remaining point."""
    points = sale.get("points") or {}
    redeemed_cents = points.get("redeemed_cents", 0)
    if paid > 0:
        done, whole = refunded_before + refund, paid
        done_before = refunded_before
    else:  # nothing was paid: points follow the units
        whole = sum(line["qty"] for line in sale["lines"])
        done_before = sum(returned_before.values())
        done = done_before + sum(take.values())
    reversed_now = max(0, _cumulative(points.get("earned", 0), done, whole) - sale.get("points_reversed_before", 0))
    # Points paid part of every unit; they come back in the same proportion as the refund, so the
    # money part of a refund is never negative (a clawback lowers both alike).
    restored_now = max(0, _cumulative(points.get("redeemed", 0), done, whole) - sale.get("points_restored_before", 0))
    restored_cents = _cumulative(redeemed_cents, done, whole) - _cumulative(redeemed_cents, done_before, whole)
    return {"points_reversed": reversed_now, "points_restored": restored_now,
            "points_restored_cents": min(max(0, restored_cents), refund)}
