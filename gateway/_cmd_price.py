"""`gateway price`: price a basket against a promotions rule set offline and explain every cent.

    gateway price --rules RULES.json --basket BASKET.toml [--json]

RULES is JSON or TOML holding the promotions body (`{"ceiling", "points", "rules"}`) or a document
around it (`{"version": N, "body": {...}}`, as the ERP signs it). BASKET holds `lines` (`sku`, `qty`,
`unit_cents`, `category`) and optionally `member`, `tier`, `coupons`, `store`, `channel`, `time` (ISO
8601, store-local wall time; an offset or `timezone` fixes the instant) and `timezone`. Exit 0 priced,
2 a file that cannot be read or used (each problem printed).
"""
from __future__ import annotations

import argparse
import json
import sys
import tomllib
from datetime import datetime, timezone

from core_ext._promo_py import SALE_CHANNELS

EXIT_OK, EXIT_USAGE = 0, 2

REASONS = {
    "units_closed": "its units were all taken by an earlier rule that does not stack",
    "units_used": "its units were all used by another buy-X-get-Y or bundle rule",
    "not_enough_units": "not enough units for one application",
    "no_complete_set": "no complete set in the basket",
    "qty_tier_not_reached": "the first quantity tier is not reached",
    "threshold_not_reached": "the spend threshold is not reached",
    "below_min_cents": "the basket is below the rule's minimum",
    "no_saving": "it would save nothing",
    "capped": "capped by its max_discount_cents",
    "ceiling": "clipped by the category's discount ceiling",
    "exclusive_group": "another rule of its exclusive group saves more",
}


class PriceInputError(Exception):
    """A rules or basket file that cannot be used; `problems` are lines for a person."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rules", required=True, metavar="FILE",
                        help='promotions body, or {"version": N, "body": {...}}, as JSON or TOML')
    parser.add_argument("--basket", required=True, metavar="FILE",
                        help="lines [{sku, qty, unit_cents, category}] and optional member, tier, coupons, "
                             "store, channel, time (ISO 8601, store-local), timezone; JSON or TOML")
    parser.add_argument("--json", action="store_true", help="print the priced basket as JSON")


def load_file(path: str, what: str):
    """A JSON or TOML file's content (TOML by the .toml suffix, JSON otherwise)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise PriceInputError([f"{what} file {path}: {exc.strerror or exc}"]) from None
    try:
        if path.lower().endswith(".toml"):
            return tomllib.loads(raw.decode("utf-8"))
        return json.loads(raw)
    except UnicodeDecodeError as exc:
        raise PriceInputError([f"{what} file {path}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise PriceInputError([f"{what} file {path}: not valid TOML: {exc}"]) from None
    except json.JSONDecodeError as exc:
        raise PriceInputError([f"{what} file {path}: not valid JSON: {exc.msg} at line {exc.lineno} "
                               f"column {exc.colno}"]) from None


def read_rules(doc) -> tuple[dict, int]:
    """(promotions body, version) from a rules file's content."""
    if isinstance(doc, dict) and "body" in doc:
        version = doc.get("version", 0)
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise PriceInputError(["rules: version must be an integer >= 0"])
        return doc["body"], version
    return doc, 0


def basket_context(basket) -> dict:
    """The keyword arguments of `PromoEngine.price` (besides lines) from a basket file's content."""
    if not isinstance(basket, dict):
        raise PriceInputError(["basket: must be a map with lines"])
    problems = []
    unknown = sorted(set(basket) - {"lines", "member", "tier", "coupons", "store", "channel", "time", "timezone"})
    problems += [f"basket: unknown key {key!r}" for key in unknown]
    member_id, tier = basket.get("member"), basket.get("tier")
    if member_id is not None and not (isinstance(member_id, str) and member_id):
        problems.append("basket.member must be a member id (a non-empty string)")
    if tier is not None and not isinstance(tier, str):
        problems.append("basket.tier must be a string")
    if tier is not None and member_id is None:
        problems.append("basket.tier needs basket.member")
    coupons = basket.get("coupons", [])
    if not (isinstance(coupons, list) and all(isinstance(c, str) for c in coupons)):
        problems.append("basket.coupons must be a list of strings")
    if not isinstance(basket.get("store", ""), str):
        problems.append("basket.store must be a string")
    if basket.get("channel", "ecr") not in SALE_CHANNELS:
        # A misspelt channel would silently miss every rule limited to channels.
        problems.append(f"basket.channel must be one of {', '.join(SALE_CHANNELS)}, got {basket['channel']!r}")
    ts_ms, weekday, minute = 0, 1, 0
    if "time" in basket:
        try:
            ts_ms, weekday, minute = local_time(basket["time"], basket.get("timezone"))
        except ValueError as exc:
            problems.append(f"basket.time: {exc}")
    if problems:
        raise PriceInputError(problems)
    return {"member": {"id": member_id, "tier": tier} if member_id else None, "coupons": tuple(coupons),
            "store": basket.get("store", ""), "channel": basket.get("channel", "ecr"),
            "ts_ms": ts_ms, "weekday": weekday, "minute": minute}


def local_time(value, zone: str | None) -> tuple[int, int, int]:
    """(Unix ms, ISO weekday, minute of the day) of a store-local ISO 8601 time."""
    if isinstance(value, datetime):  # TOML has its own datetimes
        dt = value
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 date and time (e.g. 2026-11-24T18:30:00)") from None
    else:
        raise ValueError("must be an ISO 8601 date and time string")
    if zone is not None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
        try:
            tz = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {zone!r} (an IANA name such as Asia/Shanghai)") from None
        dt = dt.replace(tzinfo=tz) if dt.tzinfo is None else dt.astimezone(tz)
    # Without an offset or timezone the wall time is taken as UTC for the instant: the weekday and
    # minute that promotions compare are the wall time as written either way.
    instant = dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)
    return int(instant.timestamp() * 1000), dt.isoweekday(), dt.hour * 60 + dt.minute


def money(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"


def explain(priced: dict, points: int | None, ctx: dict) -> str:
    out = [f"rule set version {priced['ruleset']}"]
    if ctx["member"]:
        out[0] += f", member {ctx['member']['id']}" + (f" ({ctx['member']['tier']})" if ctx["member"]["tier"] else "")
    if ctx["coupons"]:
        out[0] += ", coupons " + ", ".join(ctx["coupons"])
    width = max([len(l["sku"]) for l in priced["lines"]] + [3])
    for i, l in enumerate(priced["lines"]):
        out.append(f"[{i}] {l['sku']:<{width}}  {l['qty']} x {money(l['unit_cents'])} = {money(l['gross_cents'])}")
        for p in l["promos"]:
            out.append(f"      {p['id']} (v{p['version']}): -{money(p['cents'])}")
        out.append(f"      net {money(l['net_cents'])}")
    if priced["trace"]:
        out.append("did not apply, or not in full:")
        for t in priced["trace"]:
            extra = ""
            if "line" in t:
                extra += f" on [{t['line']}]"
            if "cents" in t:
                extra += f", {money(t['cents'])} not given"
            if "winner" in t:
                extra += f" ({t['winner']} in group {t['group']})"
            out.append(f"  {t['rule']} (v{t['version']}): {REASONS.get(t['reason'], t['reason'])}{extra}")
    out.append(f"gross {money(priced['gross_cents'])}, discount {money(priced['discount_cents'])}, "
               f"total {money(priced['total_cents'])}")
    if points is not None:
        out.append(f"points earned if paid in cash: {points}")
    return "\n".join(out)


def price_files(rules_path: str, basket_path: str) -> tuple[dict, int | None, dict]:
    """(priced basket, points or None without a member, context); raises PriceInputError."""
    from core_ext._select import promo

    body, version = read_rules(load_file(rules_path, "rules"))
    basket = load_file(basket_path, "basket")
    ctx = basket_context(basket)
    try:
        engine = promo.PromoEngine(body, version)
    except promo.PromoRuleError as exc:
        raise PriceInputError([f"rules: {e}" for e in exc.errors]) from None
    try:
        priced = engine.price(basket.get("lines"), **ctx)
    except promo.PromoInputError as exc:
        raise PriceInputError([f"basket: {exc}"]) from None
    points = None
    if ctx["member"]:
        points = engine.points_earned(priced["total_cents"], ctx["member"]["tier"], True)
    return priced, points, ctx


def run(args) -> int:
    try:
        priced, points, ctx = price_files(args.rules, args.basket)
    except PriceInputError as exc:
        for problem in exc.problems:
            print(f"price: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps({**priced, "points_earned": points}, indent=2))
    else:
        print(explain(priced, points, ctx))
    return EXIT_OK
