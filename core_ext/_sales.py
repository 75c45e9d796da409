"""The ECR/1 business requests: quote, sale, return, member, stock, ping.

Each handler runs inside the core loop's nested transaction (a sale, which writes only once it has
decided, in the group's own: `DECIDES_FIRST`): it either returns the response fields
with every effect written, or raises `Refused` and the core loop rolls everything back.

A sale's outline is here (parse, price, decide, persist); the work it does for every line (resolve,
check lots, allocate and apply, the event's and answer's lines, the alerts) is the sale path's,
compiled or its pure-Python twin (`_salepath_py.py`, `_salepath_c.pyx`).
"""
from __future__ import annotations

from dataclasses import dataclass

from . import _alerts, _errors as E, _master
from ._day_figures import METHOD_ORDER
from ._errors import Refused, bad_request
from ._localtime import local_parts
from ._select import promo, salepath
from ._records import Item, SaleLine
from ._store import u64
from ._types import is_int

PAYMENT_METHODS = METHOD_ORDER


# --- resolving what a line names -------------------------------------------------------------

def resolve_code(tx, code: str):
    """(catalog item, facts from the code: lot/expiry/serial) for a SKU, GTIN, scan or POS code."""
    view = _master.view(tx)
    item = view.items.get(code)
    if item is not None:
        return item, _NO_FACTS
    gtin = _master.gtin14(code)
    if gtin is not None:
        return view.item_for_code("g:", gtin), _NO_FACTS
    item = view.item_for_code("p:", code)
    if item is not None:
        return item, _NO_FACTS
    from ._barcodes import ScanError, parse_scan
    try:
        scan = parse_scan(code)
    except ScanError:
        return None, _NO_FACTS
    return item_for_scan(tx, scan.gtin, scan.hibc), {"lot": scan.lot, "expiry": scan.expiry, "serial": scan.serial}


_NO_FACTS: dict = {}


def item_for_scan(tx, gtin: str | None, hibc: str | None) -> Item | None:
    view = _master.view(tx)
    item = view.item_for_code("g:", gtin) if gtin else None
    if item is None and hibc:
        item = view.item_for_code("h:", hibc.upper())
    return item


def resolve_lines(tx, lines: list[dict]) -> list[SaleLine]:
    return salepath.resolve_lines(tx, lines, resolve_code)


# --- pricing ---------------------------------------------------------------------------------

def engine_for(tx, version: int | None = None):
    """The promotion engine of rule-set `version` (default: the one in force), built once per store."""
    if version is None:
        version = _master.view(tx).promotions
    cache = tx.store.cache
    engine = cache.get(("promotions", version))
    if engine is None:
        body = tx.get("master_docs", b"promotions\x00" + u64(version)) if version else None
        if version and body is None:
            # Pricing with no rules while recording this version would mis-state every sale.
            raise Refused(E.UNAVAILABLE, f"promotions rule set {version} is not in the store")
        engine = promo.PromoEngine(body, version)
        cache[("promotions", version)] = engine
    return engine


def _member(tx, body: dict):
    member_id = body.get("member")
    if member_id is None:
        return None, None
    if not isinstance(member_id, str) or not member_id:
        raise bad_request("member must be a non-empty string")
    return member_id, tx.get("members", member_id)


@dataclass(slots=True)
class Basket:
    """A resolved and priced basket, with what the sale then needs of the moment it was priced."""

    priced: object          # the engine's `Priced`; its lines (`PricedLine`) also carry lot and serial
    resolved: list          # SaleLine: the lines as the catalog resolved them
    member_id: str | None
    member: dict | None     # None for no member and for an unknown one
    engine: object
    warnings: list
    policy: dict
    weekday: int
    minute: int
    day: str                # store-local ISO date


def price(tx, ctx, request, body: dict, *, as_happened: bool = False) -> Basket:
    """Resolve and price a basket; refuse recalled and expired lots it names."""
    resolved = resolve_lines(tx, salepath.basket_lines(body))
    coupons = body.get("coupons") or []
    if not isinstance(coupons, list) or not all(isinstance(c, str) for c in coupons):
        raise bad_request("coupons must be a list of strings")
    member_id, member = _member(tx, body)
    weekday, minute, day = local_parts(ctx.now_ms, ctx.settings.timezone)
    policy = _master.policy(tx)
    # A sale (also one from a POS file) offering a recalled or expired lot is recorded; a quote is not.
    warnings = salepath.check_lots(tx, resolved, day, policy["expiry_warn_days"], request.kind != "quote", as_happened)
    if member_id is not None and member is None:
        warnings.append("UNKNOWN_MEMBER")
    engine = engine_for(tx)
    try:
        priced = engine.price_typed(
            salepath.engine_lines(resolved),
            member={"id": member_id, "tier": member.get("tier")} if member else None,
            coupons=tuple(coupons), store=ctx.settings.store_id, channel=request.channel,
            ts_ms=ctx.now_ms, weekday=weekday, minute=minute,
        )
    except promo.PromoInputError as exc:
        raise bad_request(str(exc)) from None
    salepath.mark_lots(priced.lines, resolved)
    return Basket(priced, resolved, member_id, member, engine, warnings, policy, weekday, minute, day)


def _answer(basket: Basket, *, points_earned: int, points_balance: int | None) -> dict:
    """The ECR/1 answer of a quote or a sale (a sale's lines carry their allocations)."""
    return _answer_of(basket.priced, basket.warnings,
                      (points_earned, points_balance) if basket.member is not None else None)


def _answer_of(priced, warnings: list, points: tuple | None) -> dict:
    """The answer's fields: the rule set, lines and totals as `priced`, the warnings, and a known
    member's points (earned, balance)."""
    answer = {"ruleset": priced.ruleset, "lines": salepath.answer_lines(priced.lines),
              "gross_cents": priced.gross_cents, "discount_cents": priced.discount_cents,
              "total_cents": priced.total_cents, "warnings": warnings}
    if points is not None:
        answer["points_earned"], answer["points_balance"] = points
    return answer


def handle_quote(tx, request, ctx) -> dict:
    basket = price(tx, ctx, request, request.body)
    member = basket.member
    # What the basket would earn if paid in cash (PROMO/1, Points).
    earned = basket.engine.points_earned(basket.priced.total_cents, member.get("tier"), True) if member else 0
    return _answer(basket, points_earned=earned, points_balance=member["points"] if member else None)


# --- sale ------------------------------------------------------------------------------------

def _payments(body: dict, total: int, *, implicit: bool) -> list[dict]:
    payments = body.get("payments")
    if payments is None and implicit:
        # A legacy POS file says at most how a basket was paid, never how much: the priced total.
        method = body.get("payment") or "cash"
        if method not in PAYMENT_METHODS or method == "points":
            raise bad_request(f"payment {method!r} cannot settle a file's basket (use cash, card or insurance)")
        return [{"method": method, "cents": total}]
    if not isinstance(payments, list) or not payments:
        raise bad_request("payments must be a non-empty list")
    for i, p in enumerate(payments):
        if not isinstance(p, dict) or p.get("method") not in PAYMENT_METHODS:
            raise bad_request(f"payments[{i}].method must be one of {', '.join(PAYMENT_METHODS)}")
        if not is_int(p.get("cents")) or p["cents"] < 0:
            raise bad_request(f"payments[{i}].cents must be an integer >= 0")
    paid = sum(p["cents"] for p in payments)
    if paid != total:
        raise Refused(E.PAYMENT_MISMATCH, f"payments add up to {paid} cents, the basket totals {total}")
    return [{"method": p["method"], "cents": p["cents"]} for p in payments]


def _redeemed(basket: Basket, points_cents: int) -> int:
    """Points a payment of `points_cents` redeems, within the member's balance and the offline cap."""
    if not points_cents:
        return 0
    policy, member = basket.policy, basket.member
    value = policy["points_value_cents"]
    if member is None:
        raise Refused(E.POINTS_INSUFFICIENT, "points can only be redeemed by a known member")
    if points_cents % value:
        raise bad_request(f"the points payment must be a multiple of {value} cents (one point)")
    redeemed = points_cents // value
    if redeemed > member["points"]:
        raise Refused(E.POINTS_INSUFFICIENT, f"{redeemed} points asked, the member has {member['points']}")
    if redeemed > policy["points_offline_cap"]:
        raise Refused(E.POINTS_INSUFFICIENT,
                      f"{redeemed} points asked, at most {policy['points_offline_cap']} may be redeemed per sale")
    return redeemed


@dataclass(slots=True)
class Sold:
    """A sale recorded: its event's seq, the basket as priced, and the member's points."""

    seq: int
    basket: Basket
    points_earned: int
    points_balance: int | None


def sell(tx, request, ctx, body: dict, doc_id: str, *, implicit_payment: bool = False,
         as_happened: bool = False) -> Sold:
    """Price, take from stock and record a sale (a terminal's answer is `handle_sale`'s to build; a
    file's basket has no terminal waiting for it)."""
    basket = price(tx, ctx, request, body, as_happened=as_happened)
    priced, member = basket.priced, basket.member
    payments = _payments(body, priced.total_cents, implicit=implicit_payment)
    points_cents = sum(p["cents"] for p in payments if p["method"] == "points")
    redeemed = _redeemed(basket, points_cents)
    refuse = basket.policy["negative_stock"] == "refuse" and not as_happened
    # Each line in turn, so a later line of the same SKU sees what the earlier ones took.
    moves = salepath.take_stock(tx, basket.resolved, priced.lines, basket.day, refuse)
    tier = member.get("tier") if member else None
    earned = basket.engine.points_earned(priced.total_cents - points_cents, tier, member is not None)
    points_balance = None
    if member is not None:
        points_balance = _master.add_points(tx, basket.member_id, earned - redeemed, ctx.now_ms)
    lane = str(body["lane"]) if body.get("lane") else None
    event = salepath.sale_event(
        doc_id, request.source, request.channel, ctx.settings.store_id, ctx.now_ms, basket.weekday, basket.minute,
        priced, basket.member_id if member else None, tier, list(body.get("coupons") or []), payments,
        (earned, redeemed, points_cents), moves, lane)
    if lane is not None:
        tx.delete("baskets", lane)
    seq = tx.append_event(event)
    _alerts.after_moves(tx, moves, basket.day, ctx.now_ms)
    return Sold(seq, basket, earned, points_balance)


def record_sale(tx, request, ctx, body: dict, doc_id: str) -> tuple[int, list]:
    """A file's basket recorded as it happened at the counter (`sell`, paid as the file says, stock
    the ledger lacks not refusing it): its event's seq and the basket's warnings."""
    sold = sell(tx, request, ctx, body, doc_id, implicit_payment=True, as_happened=True)
    return sold.seq, sold.basket.warnings


def handle_sale(tx, request, ctx) -> dict:
    sold = sell(tx, request, ctx, request.body, f"{request.source}:{request.body['id']}")
    return {"seq": sold.seq, **_answer(sold.basket, points_earned=sold.points_earned,
                                       points_balance=sold.points_balance)}


# --- this flavour's sale ---------------------------------------------------------------------
# `price`, `sell`, `handle_sale` and `record_sale` above are the reference outline, which the pure
# flavour runs. The compiled sale path brings the same outline compiled (`_salepath_c.handle_sale`,
# `record_sale`: the same steps in the same order, the basket in C locals instead of records handed
# from step to step), which its flavour runs: a tenth of a compiled sale was this outline's Python.
HANDLE_SALE = salepath.handle_sale or handle_sale
RECORD_SALE = salepath.record_sale or record_sale


# --- a sale's answer again -------------------------------------------------------------------
# A sale's id record keeps only what its event does not: the answer is the event's, so a repeat
# is answered from the event (a sale's answer is about twice its id record's other bytes).

def sale_memo(answer: dict) -> dict:
    """What a sale's answer holds beyond its event: its warnings and a known member's balance."""
    memo = {"warnings": answer["warnings"]}
    if "points_balance" in answer:
        memo["points_balance"] = answer["points_balance"]
    return memo


def sale_answer_again(event: dict, memo: dict) -> dict:
    """The fields of the answer the sale `event` was given (`handle_sale`), with its `memo`."""
    priced = promo.Priced(event["ruleset"], [promo.PricedLine.of_event(line) for line in event["lines"]],
                          event["gross_cents"], event["discount_cents"], event.get("trace") or [])
    points = (event["points"]["earned"], memo["points_balance"]) if "points_balance" in memo else None
    return {"seq": event["seq"], **_answer_of(priced, memo["warnings"], points)}
