"""PROMO/1, the readable reference: validate a promotions body, price a basket with it, count points.

`_promo_c.pyx` is the compiled twin of `PromoEngine`; both give the same cents for the same input (the
property tests compare them). Validation, rule loading and points live here only and the twin imports
them: they run once per rule set, not once per basket.

Pricing works on units kept as counts. Each line is a list of segments `[n, net, closed, used]`: `n`
units whose current net adds up to `net`; `closed` once a non-stackable rule discounted them, `used`
once a buy-X-get-Y or bundle rule took them. A rule is first planned on the current state (nothing
changes, so the members of an exclusive group can be compared), then committed.
"""
from __future__ import annotations

from functools import cmp_to_key

from ._records import Priced, PricedLine

# Money is integer cents and rates are basis points. The bounds keep every product the compiled twin
# forms within 128 bits and every sum within 64.
MAX_CENTS = 10**14
MAX_QTY = 1_000_000
MAX_COUNT = 10**9
MAX_UNITS = 10**9
SALE_CHANNELS = ("ecr", "pos", "csv")

ITEM_KINDS = ("percent_off", "amount_off", "fixed_price", "qty_tier", "bundle", "buy_x_get_y")
ORDER_KINDS = ("threshold", "order_percent_off")

# Kind codes shared with the compiled twin.
PERCENT_OFF, AMOUNT_OFF, FIXED_PRICE, QTY_TIER, BUNDLE, BUY_X_GET_Y, THRESHOLD, ORDER_PERCENT_OFF = range(8)
KIND_CODES = {name: code for code, name in enumerate(ITEM_KINDS + ORDER_KINDS)}

_RULE_KEYS = {"id", "version", "name", "kind", "params", "target", "when", "where", "who", "coupon",
              "priority", "stackable", "exclusive_group", "max_discount_cents", "clawback_on_return"}
_PARAM_KEYS = {
    "percent_off": ({"pct_bp"}, set()),
    "amount_off": ({"cents"}, set()),
    "fixed_price": ({"unit_cents"}, set()),
    "qty_tier": ({"mode", "tiers"}, set()),
    "bundle": ({"items", "price_cents"}, {"max_sets"}),
    "buy_x_get_y": ({"buy", "get", "pct_bp"}, {"max_applications"}),
    "order_percent_off": ({"pct_bp"}, {"min_cents"}),
}


class PromoRuleError(ValueError):
    """A promotions body that cannot run; `errors` names each offending rule or entry."""

    def __init__(self, errors: list[str]):
        super().__init__("invalid promotions: " + "; ".join(errors))
        self.errors = list(errors)


class PromoInputError(ValueError):
    """A basket the engine cannot price; the message names the line and field."""


# --- validation ------------------------------------------------------------------------------

def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int_in(v, lo: int, hi: int) -> bool:
    return _is_int(v) and lo <= v <= hi


def _str_list(v) -> bool:
    return isinstance(v, list) and all(isinstance(s, str) and s for s in v)


def _check_keys(where: str, d: dict, allowed, errors: list[str]) -> None:
    for key in sorted(set(d) - set(allowed), key=str):
        errors.append(f"{where}: unknown key {key!r}")


def _check_ceiling(c, errors: list[str]) -> None:
    if not isinstance(c, dict):
        errors.append("ceiling must be a map")
        return
    _check_keys("ceiling", c, ("default_max_pct_bp", "by_category"), errors)
    if "default_max_pct_bp" in c and not _int_in(c["default_max_pct_bp"], 0, 10000):
        errors.append("ceiling.default_max_pct_bp must be an integer 0..10000")
    by_cat = c.get("by_category", {})
    if not isinstance(by_cat, dict):
        errors.append("ceiling.by_category must be a map of category to basis points")
        return
    for cat, bp in by_cat.items():
        if not isinstance(cat, str) or not _int_in(bp, 0, 10000):
            errors.append(f"ceiling.by_category[{cat!r}] must be an integer 0..10000")


def _check_points(p, errors: list[str]) -> None:
    if not isinstance(p, dict):
        errors.append("points must be a map")
        return
    _check_keys("points", p, ("earn_per_cents", "earn_points", "tier_multiplier_bp"), errors)
    if not _int_in(p.get("earn_per_cents"), 1, MAX_CENTS):
        errors.append(f"points.earn_per_cents must be an integer 1..{MAX_CENTS}")
    if not _int_in(p.get("earn_points"), 0, MAX_COUNT):
        errors.append(f"points.earn_points must be an integer 0..{MAX_COUNT}")
    mult = p.get("tier_multiplier_bp", {})
    if not isinstance(mult, dict):
        errors.append("points.tier_multiplier_bp must be a map of tier to basis points")
        return
    for tier, bp in mult.items():
        if not isinstance(tier, str) or not _int_in(bp, 0, 1_000_000):
            errors.append(f"points.tier_multiplier_bp[{tier!r}] must be an integer 0..1000000")


def _check_params(kind: str, p: dict, errors: list) -> None:
    """Appends (key, problem) pairs for the params of a rule of `kind`."""
    if kind == "threshold":
        shape = ({"ladder"}, set()) if "ladder" in p else ({"every_cents", "off_cents"}, {"max_times"})
    else:
        shape = _PARAM_KEYS[kind]
    required, optional = shape
    for key in sorted(required - set(p)):
        errors.append((f"params.{key}", "is missing"))
    for key in sorted(set(p) - required - optional, key=str):
        errors.append((f"params.{key}", "is not a parameter of " + kind))

    def need(key: str, lo: int, hi: int) -> None:
        if key in p and not _int_in(p[key], lo, hi):
            errors.append((f"params.{key}", f"must be an integer {lo}..{hi}"))

    def need_opt(key: str, lo: int, hi: int) -> None:
        if p.get(key) is not None:
            need(key, lo, hi)

    need("pct_bp", 0, 10000)
    need("cents", 0, MAX_CENTS)
    need("unit_cents", 0, MAX_CENTS)
    need("price_cents", 0, MAX_CENTS)
    need("buy", 1, MAX_QTY)
    need("get", 1, MAX_QTY)
    need("every_cents", 1, MAX_CENTS)
    need("off_cents", 0, MAX_CENTS)
    need_opt("max_sets", 1, MAX_COUNT)
    need_opt("max_applications", 1, MAX_COUNT)
    need_opt("max_times", 1, MAX_COUNT)
    need_opt("min_cents", 0, MAX_CENTS)
    if kind == "qty_tier":
        if "mode" in p and p["mode"] not in ("all_units", "incremental"):
            errors.append(("params.mode", "must be 'all_units' or 'incremental'"))
        _check_steps(p.get("tiers"), "params.tiers", ("min_qty", 1, MAX_COUNT), ("pct_bp", 0, 10000), errors)
    elif kind == "threshold" and "ladder" in p:
        _check_steps(p["ladder"], "params.ladder", ("min_cents", 0, MAX_CENTS), ("off_cents", 0, MAX_CENTS), errors)
    elif kind == "bundle" and "items" in p:
        items = p["items"]
        ok = isinstance(items, list) and items and all(
            isinstance(it, list) and len(it) == 2 and isinstance(it[0], str) and it[0] and _int_in(it[1], 1, MAX_QTY)
            for it in items)
        if not ok:
            errors.append(("params.items", f"must be a non-empty list of [sku, qty 1..{MAX_QTY}]"))
        elif len({it[0] for it in items}) != len(items):
            errors.append(("params.items", "names a SKU twice (give its quantity once)"))


def _check_steps(steps, key: str, first: tuple, second: tuple, errors: list) -> None:
    """A non-empty list of [a, b] pairs, `first`/`second` = (name, lo, hi), increasing in a."""
    ok = isinstance(steps, list) and steps and all(
        isinstance(s, list) and len(s) == 2 and _int_in(s[0], *first[1:]) and _int_in(s[1], *second[1:])
        for s in steps)
    if not ok:
        errors.append((key, f"must be a non-empty list of [{first[0]}, {second[0]}] with {first[0]} "
                            f"{first[1]}..{first[2]} and {second[0]} {second[1]}..{second[2]}"))
    elif any(a[0] >= b[0] for a, b in zip(steps, steps[1:])):
        errors.append((key, "must be in strictly increasing order of its first element"))


def _scope(r: dict, key: str):
    # Absent or null is "no restriction"; any other non-map (a stray [] or false) is an error, never
    # read as "no restriction", which would widen a promotion to every item, time or customer.
    value = r.get(key)
    return {} if value is None else value


def _check_rule(r: dict) -> list:
    """(key, problem) pairs for one rule."""
    errs: list = []
    for key in sorted(set(r) - _RULE_KEYS, key=str):
        errs.append((str(key), "is not a rule key"))
    _check_what(r, errs)
    for name, (keys, check) in _SCOPES.items():
        scope = _scope(r, name)
        if not isinstance(scope, dict):
            errs.append((name, "must be a map"))
            continue
        for key in sorted(set(scope) - keys, key=str):
            errs.append((f"{name}.{key}", f"is not a {name} key"))
        check(scope, errs)
    _check_options(r, errs)
    return errs


def _check_what(r: dict, errs: list) -> None:
    """The rule's id, version, name, kind and its kind's params."""
    if not isinstance(r.get("id"), str) or not r.get("id"):
        errs.append(("id", "must be a non-empty string"))
    if not _int_in(r.get("version"), 0, 2**62):
        errs.append(("version", "must be an integer >= 0"))
    if "name" in r and not isinstance(r["name"], str):
        errs.append(("name", "must be a string"))
    kind = r.get("kind")
    if not isinstance(kind, str) or kind not in KIND_CODES:
        errs.append(("kind", "must be one of " + ", ".join(ITEM_KINDS + ORDER_KINDS)))
    params = r.get("params")
    if not isinstance(params, dict):
        errs.append(("params", "must be a map"))
    elif isinstance(kind, str) and kind in KIND_CODES:
        _check_params(kind, params, errs)


def _check_target(target: dict, errs: list) -> None:
    for key in ("skus", "categories", "exclude_skus"):
        if key in target and not _str_list(target[key]):
            errs.append((f"target.{key}", "must be a list of non-empty strings"))


def _check_when(when: dict, errs: list) -> None:
    for key in ("from_ms", "to_ms"):
        if when.get(key) is not None and not _int_in(when[key], 0, 2**62):
            errs.append((f"when.{key}", "must be Unix milliseconds"))
    if _is_int(when.get("from_ms")) and _is_int(when.get("to_ms")) and when["from_ms"] >= when["to_ms"]:
        errs.append(("when", "from_ms must be before to_ms"))
    wd = when.get("weekdays")
    if wd is not None and not (isinstance(wd, list) and all(_int_in(d, 1, 7) for d in wd)):
        errs.append(("when.weekdays", "must be a list of 1..7 (Monday = 1)"))
    mins = when.get("minutes")
    if mins is not None and not (isinstance(mins, list) and all(
            isinstance(m, list) and len(m) == 2 and _int_in(m[0], 0, 1440) and _int_in(m[1], 0, 1440)
            and m[0] != m[1] for m in mins)):
        errs.append(("when.minutes", "must be a list of [start, end] minutes 0..1440 with start != end"))


def _check_where(where: dict, errs: list) -> None:
    if where.get("stores") is not None and not _str_list(where["stores"]):
        errs.append(("where.stores", "must be a list of store ids"))
    ch = where.get("channels")
    if ch is not None and not (isinstance(ch, list) and all(c in SALE_CHANNELS for c in ch)):
        errs.append(("where.channels", "must be a list of " + ", ".join(SALE_CHANNELS)))


def _check_who(who: dict, errs: list) -> None:
    if "members_only" in who and not isinstance(who["members_only"], bool):
        errs.append(("who.members_only", "must be true or false"))
    if who.get("tiers") is not None and not _str_list(who["tiers"]):
        errs.append(("who.tiers", "must be a list of tier names"))


# A rule's scopes: the keys each may hold, and the check of their values.
_SCOPES = {
    "target": ({"skus", "categories", "exclude_skus"}, _check_target),
    "when": ({"from_ms", "to_ms", "weekdays", "minutes"}, _check_when),
    "where": ({"stores", "channels"}, _check_where),
    "who": ({"members_only", "tiers"}, _check_who),
}


def _check_options(r: dict, errs: list) -> None:
    """The coupon, priority and the flags and limits of how the rule combines."""
    if r.get("coupon") is not None and not (isinstance(r["coupon"], str) and r["coupon"].strip()):
        errs.append(("coupon", "must be a non-empty string or null"))
    if "priority" in r and not _int_in(r["priority"], -2**62, 2**62):
        errs.append(("priority", "must be an integer"))
    for key in ("stackable", "clawback_on_return"):
        if key in r and not isinstance(r[key], bool):
            errs.append((key, "must be true or false"))
    if r.get("exclusive_group") is not None and not (isinstance(r["exclusive_group"], str) and r["exclusive_group"]):
        errs.append(("exclusive_group", "must be a non-empty string or null"))
    if r.get("max_discount_cents") is not None and not _int_in(r["max_discount_cents"], 0, MAX_CENTS):
        errs.append(("max_discount_cents", f"must be an integer 0..{MAX_CENTS} or null"))


def validate_promotions(body) -> list[str]:
    """Every problem of a promotions body, each naming the offending rule or entry; [] when valid."""
    if not isinstance(body, dict):
        return ["promotions must be a map with ceiling, points and rules"]
    errors: list[str] = []
    _check_keys("promotions", body, ("ceiling", "points", "rules"), errors)
    if "ceiling" in body:
        _check_ceiling(body["ceiling"], errors)
    if "points" in body:
        _check_points(body["points"], errors)
    rules = body.get("rules", [])
    if not isinstance(rules, list):
        return errors + ["rules must be a list"]
    seen: dict[str, int] = {}
    layers: dict[str, tuple[int, str]] = {}
    for i, r in enumerate(rules):
        if not isinstance(r, dict):
            errors.append(f"rules[{i}]: must be a map")
            continue
        label = f"rules[{i}] (id {r['id']!r})" if isinstance(r.get("id"), str) else f"rules[{i}]"
        errors.extend(f"{label}: {key} {problem}" for key, problem in _check_rule(r))
        rid = r.get("id")
        if isinstance(rid, str) and rid:
            if rid in seen:
                errors.append(f"{label}: id repeats rules[{seen[rid]}] (one version of a rule per rule set)")
            else:
                seen[rid] = i
        group = r.get("exclusive_group")
        if isinstance(group, str) and isinstance(r.get("kind"), str) and r["kind"] in KIND_CODES:
            layer = 0 if r["kind"] in ITEM_KINDS else 1
            if group in layers and layers[group][0] != layer:
                errors.append(f"{label}: exclusive_group {group!r} mixes item-layer and order-layer rules "
                              f"(see {layers[group][1]}); a group is compared within one layer")
            layers.setdefault(group, (layer, label))
    return errors


# --- loaded rules ----------------------------------------------------------------------------

class Rule:
    """One validated rule, flattened for evaluation. `rank` is its place in evaluation order."""

    __slots__ = ("id", "version", "kind", "layer", "priority", "stackable", "group", "cap", "clawback", "rank",
                 "every", "skus", "categories", "excludes", "bundle_qty", "from_ms", "to_ms", "weekdays",
                 "minutes", "stores", "channels", "members_only", "tiers", "coupon",
                 "a", "b", "c", "d", "steps")

    def __init__(self, r: dict):
        p = r["params"]
        target = r.get("target") or {}
        when = r.get("when") or {}
        where = r.get("where") or {}
        who = r.get("who") or {}
        self.id = r["id"]
        self.version = r["version"]
        self.kind = KIND_CODES[r["kind"]]
        self.layer = 0 if r["kind"] in ITEM_KINDS else 1
        self.priority = r.get("priority", 0)
        self.stackable = r.get("stackable", True)
        self.group = r.get("exclusive_group")
        self.cap = -1 if r.get("max_discount_cents") is None else r["max_discount_cents"]
        self.clawback = r.get("clawback_on_return", False)
        self.rank = 0
        self.skus = frozenset(target.get("skus") or ())
        self.categories = frozenset(target.get("categories") or ())
        self.excludes = frozenset(target.get("exclude_skus") or ())
        self.every = not self.skus and not self.categories
        self.bundle_qty = {}
        self.from_ms = when.get("from_ms")
        self.to_ms = when.get("to_ms")
        self.weekdays = None if when.get("weekdays") is None else frozenset(when["weekdays"])
        self.minutes = None if when.get("minutes") is None else tuple((m[0], m[1]) for m in when["minutes"])
        self.stores = None if where.get("stores") is None else frozenset(where["stores"])
        self.channels = None if where.get("channels") is None else frozenset(where["channels"])
        self.members_only = who.get("members_only", False)
        self.tiers = None if who.get("tiers") is None else frozenset(who["tiers"])
        self.coupon = None if r.get("coupon") is None else coupon_key(r["coupon"])
        # Kind parameters in four integer slots plus a step list, so both flavours read them alike.
        self.a = self.b = self.c = self.d = 0
        self.steps = ()
        kind = self.kind
        if kind in (PERCENT_OFF, ORDER_PERCENT_OFF):
            self.a = p["pct_bp"]
            self.b = p.get("min_cents") or 0
        elif kind == AMOUNT_OFF:
            self.a = p["cents"]
        elif kind == FIXED_PRICE:
            self.a = p["unit_cents"]
        elif kind == QTY_TIER:
            self.a = 1 if p["mode"] == "incremental" else 0
            self.steps = tuple((s[0], s[1]) for s in p["tiers"])
        elif kind == BUNDLE:
            self.a = p["price_cents"]
            self.b = p.get("max_sets") or 0
            self.steps = tuple((it[0], it[1]) for it in p["items"])
            self.bundle_qty = {it[0]: it[1] for it in p["items"]}
        elif kind == BUY_X_GET_Y:
            self.a, self.b, self.c = p["buy"], p["get"], p["pct_bp"]
            self.d = p.get("max_applications") or 0
        elif kind == THRESHOLD:
            if "ladder" in p:
                self.steps = tuple((s[0], s[1]) for s in p["ladder"])
            else:
                self.a, self.b, self.c = p["every_cents"], p["off_cents"], p.get("max_times") or 0

    def matches(self, sku: str, category: str) -> bool:
        """Whether a unit of this SKU and category is eligible (before closed or used units are left out)."""
        if sku in self.excludes:
            return False
        if self.kind == BUNDLE and sku not in self.bundle_qty:
            return False
        return self.every or sku in self.skus or category in self.categories

    def index_keys(self):
        """("sku"|"category"|"every", key) entries under which a basket finds this rule."""
        if self.kind == BUNDLE:
            return [("sku", sku) for sku in self.bundle_qty]
        if self.every:
            return [("every", None)]
        return [("sku", s) for s in sorted(self.skus)] + [("category", c) for c in sorted(self.categories)]


def coupon_key(code: str) -> str:
    # Cashiers type coupons; "spring10" and " SPRING10" are the same coupon.
    return code.strip().upper()


def coupon_codes(coupons) -> set[str]:
    """The coupon keys a basket carries; PromoInputError for anything but a list of strings."""
    if isinstance(coupons, str) or not isinstance(coupons, (list, tuple, set, frozenset)):
        raise PromoInputError("coupons must be a list of strings")
    for i, c in enumerate(coupons):
        if not isinstance(c, str):
            raise PromoInputError(f"coupons[{i}] must be a string, got {type(c).__name__}")
    return {coupon_key(c) for c in coupons}


def load_rules(body: dict | None):
    """Validate and load a body: (rules in evaluation order, indexes, ceiling, points). Raises PromoRuleError."""
    if body is None:
        body = {}
    errors = validate_promotions(body)
    if errors:
        raise PromoRuleError(errors)
    rules = [Rule(r) for r in body.get("rules", [])]
    rules.sort(key=lambda r: (r.layer, -r.priority, r.id))
    by_sku: dict[str, list[Rule]] = {}
    by_category: dict[str, list[Rule]] = {}
    every: list[Rule] = []
    for rank, rule in enumerate(rules):
        rule.rank = rank
        for where, key in rule.index_keys():
            if where == "every":
                every.append(rule)
            else:
                (by_sku if where == "sku" else by_category).setdefault(key, []).append(rule)
    ceiling = body.get("ceiling") or {}
    ceiling = (ceiling.get("default_max_pct_bp", 10000), dict(ceiling.get("by_category") or {}))
    points = body.get("points")
    points = None if points is None else (points["earn_per_cents"], points["earn_points"],
                                          dict(points.get("tier_multiplier_bp") or {}))
    return rules, by_sku, by_category, every, ceiling, points


def points_earned(points, cash_paid_cents: int, tier: str | None, is_member: bool) -> int:
    """floor(floor(cash / earn_per_cents) * earn_points * multiplier_bp / 10000); nothing without a member."""
    if not is_member or points is None or cash_paid_cents <= 0:
        return 0
    per, each, multipliers = points
    multiplier = multipliers.get(tier, 10000) if tier is not None else 10000
    return (cash_paid_cents // per) * each * multiplier // 10000


def check_lines(lines) -> None:
    """Raise PromoInputError naming the first line the engine cannot price."""
    if not isinstance(lines, (list, tuple)):
        raise PromoInputError("lines must be a list")
    total = units = 0
    for i, line in enumerate(lines):
        if not isinstance(line, dict):
            raise PromoInputError(f"lines[{i}] must be a map")
        if not isinstance(line.get("sku"), str) or not line["sku"]:
            raise PromoInputError(f"lines[{i}].sku must be a non-empty string")
        if not _int_in(line.get("qty"), 1, MAX_QTY):
            raise PromoInputError(f"lines[{i}].qty must be an integer 1..{MAX_QTY}")
        if not _int_in(line.get("unit_cents"), 0, MAX_CENTS):
            raise PromoInputError(f"lines[{i}].unit_cents must be an integer 0..{MAX_CENTS}")
        if not isinstance(line.get("category", ""), str):
            raise PromoInputError(f"lines[{i}].category must be a string")
        total += line["qty"] * line["unit_cents"]
        units += line["qty"]
    if total > MAX_CENTS:
        raise PromoInputError(f"the basket's gross exceeds {MAX_CENTS} cents")
    if units > MAX_UNITS:
        raise PromoInputError(f"the basket holds more than {MAX_UNITS} units")


def trace_entry(rule: Rule, reason: str, **extra) -> dict:
    return {"rule": rule.id, "version": rule.version, "reason": reason, **extra}


def half_up(cents_times_bp: int) -> int:
    return (cents_times_bp + 5000) // 10000


def spread(total: int, weights: list[int]) -> list[int]:
    """`total` over `weights` by largest remainder (ties to the earlier); parts add up to `total`.

    With total <= sum(weights) no part exceeds its weight.
    """
    whole = sum(weights)
    if whole == 0:
        return [0] * len(weights)
    parts, rems = [], []
    for w in weights:
        q, rem = divmod(total * w, whole)
        parts.append(q)
        rems.append(rem)
    left = total - sum(parts)
    if left:
        for i in sorted(range(len(weights)), key=lambda i: (-rems[i], i))[:left]:
            parts[i] += 1
    return parts


# --- pricing ---------------------------------------------------------------------------------

class _Seg:
    __slots__ = ("n", "net", "closed", "used")

    def __init__(self, n: int, net: int, closed: bool = False, used: bool = False):
        self.n = n
        self.net = net
        self.closed = closed
        self.used = used


class _Line:
    __slots__ = ("sku", "category", "qty", "unit", "gross", "limit", "disc", "segs", "promos")

    def __init__(self, line: dict, ceiling):
        # A plain str and plain ints in the answer whatever subclass came in (as the compiled engine gives).
        self.sku = str(line["sku"])
        self.category = line.get("category", "")
        self.qty = int(line["qty"])
        self.unit = int(line["unit_cents"])
        self.gross = self.qty * self.unit
        default_bp, by_category = ceiling
        self.limit = self.gross * by_category.get(self.category, default_bp) // 10000
        self.disc = 0
        self.segs = [_Seg(self.qty, self.gross)]
        self.promos: list[tuple[Rule, int]] = []


class _Plan:
    """What a rule would do on the current state.

    `pieces`: (line, segment, units, their net, discounted) in the order they were drawn; `applied`:
    line -> cents after the ceiling; `trace`: cap and ceiling entries; `reason`: why it did not apply.
    """

    __slots__ = ("rule", "pieces", "applied", "saving", "trace", "reason")

    def __init__(self, rule: Rule, reason: str | None = None):
        self.rule = rule
        self.pieces: list = []
        self.applied: dict[int, int] = {}
        self.saving = 0
        self.trace: list[dict] = []
        self.reason = reason


def _by_unit_net(dearest_first: bool):
    """Sort key over (line, line object, segment, order): net per unit compared exactly by
    cross-multiplying, ties by line order."""
    def cmp(a, b) -> int:
        left = a[2].net * b[2].n
        right = b[2].net * a[2].n
        if left != right:
            return (-1 if left > right else 1) if dearest_first else (-1 if left < right else 1)
        return a[3] - b[3]
    return cmp_to_key(cmp)


_DESC = _by_unit_net(True)
_ASC = _by_unit_net(False)


class PromoEngine:
    """A loaded rule set: prices baskets and counts points. Loading validates (PromoRuleError)."""

    def __init__(self, body: dict | None, version: int = 0):
        (self._rules, self._by_sku, self._by_category, self._every,
         self._ceiling, self._points) = load_rules(body)
        self.version = version
        self.clawback_ids = frozenset(r.id for r in self._rules if r.clawback)

    def points_earned(self, cash_paid_cents: int, tier: str | None, is_member: bool) -> int:
        return points_earned(self._points, cash_paid_cents, tier, is_member)

    # The candidates: rules a line's SKU or category can reach, whose when/where/who/coupon hold.
    def _candidates(self, lines: list[_Line], member, coupons, store, channel, ts_ms, weekday, minute):
        found: dict[int, Rule] = {}
        for rule in self._every:
            found[rule.rank] = rule
        for line in lines:
            for rule in self._by_sku.get(line.sku, ()):
                found[rule.rank] = rule
            for rule in self._by_category.get(line.category, ()):
                found[rule.rank] = rule
        tier = member.get("tier") if member else None
        codes = coupon_codes(coupons)
        out = []
        for rank in sorted(found):
            rule = found[rank]
            if rule.from_ms is not None and ts_ms < rule.from_ms:
                continue
            if rule.to_ms is not None and ts_ms >= rule.to_ms:
                continue
            if rule.weekdays is not None and weekday not in rule.weekdays:
                continue
            if rule.minutes is not None and not any(
                    (start <= minute < end) if start < end else (minute >= start or minute < end)
                    for start, end in rule.minutes):
                continue
            if rule.stores is not None and store not in rule.stores:
                continue
            if rule.channels is not None and channel not in rule.channels:
                continue
            if (rule.members_only or rule.tiers is not None) and not member:
                continue
            if rule.tiers is not None and tier not in rule.tiers:
                continue
            if rule.coupon is not None and rule.coupon not in codes:
                continue
            out.append(rule)
        return out

    def price(self, lines: list[dict], *, member: dict | None = None, coupons=(), store: str = "",
              channel: str = "ecr", ts_ms: int = 0, weekday: int = 1, minute: int = 0) -> dict:
        """The priced basket as PROMO/1 documents it (`price_typed(...).to_doc()`)."""
        return self.price_typed(lines, member=member, coupons=coupons, store=store, channel=channel, ts_ms=ts_ms,
                                weekday=weekday, minute=minute).to_doc()

    def price_typed(self, lines: list[dict], *, member: dict | None = None, coupons=(), store: str = "",
                    channel: str = "ecr", ts_ms: int = 0, weekday: int = 1, minute: int = 0) -> Priced:
        """The priced basket as typed records (`Priced`, its lines `PricedLine`), for the sale path."""
        check_lines(lines)
        state = [_Line(line, self._ceiling) for line in lines]
        trace: list[dict] = []
        cands = self._candidates(state, member, coupons, store, channel, ts_ms, weekday, minute)
        groups: dict[str, list[Rule]] = {}
        for rule in cands:
            if rule.group is not None:
                groups.setdefault(rule.group, []).append(rule)
        sku_lines: dict[str, list[int]] = {}
        category_lines: dict[str, list[int]] = {}
        for li, line in enumerate(state):
            sku_lines.setdefault(line.sku, []).append(li)
            category_lines.setdefault(line.category, []).append(li)
        everything = range(len(state))

        def plan(rule: Rule) -> _Plan | None:
            return _plan(rule, state, _lines_of(rule, state, sku_lines, category_lines, everything))

        for rule in cands:
            if rule.group is None:
                p = plan(rule)
                if p is not None:
                    _settle(p, state, trace)
                continue
            members = groups.get(rule.group)
            if members is None or members[0] is not rule:
                continue  # the group was evaluated where its first member stands
            plans = [p for p in map(plan, members) if p is not None]
            best = None
            for p in plans:
                if p.saving > 0 and (best is None or p.saving > best.saving):
                    best = p  # ties keep the earlier: higher priority, then lower id
            for p in plans:
                if p is best or p.saving == 0:
                    _settle(p, state, trace)
                else:
                    trace.append(trace_entry(p.rule, "exclusive_group", group=rule.group, winner=best.rule.id))
        return _answer(self.version, state, trace)


def _settle(plan: _Plan, state: list[_Line], trace: list[dict]) -> None:
    """Commit a plan that saves something; otherwise record why it did not apply."""
    trace.extend(plan.trace)
    if plan.saving == 0:
        if plan.reason is not None:
            trace.append(trace_entry(plan.rule, plan.reason))
        return
    rule = plan.rule
    xy = rule.kind == BUNDLE or rule.kind == BUY_X_GET_Y
    # Split partly taken segments in the order the plan drew them, so each piece's net is the one planned.
    taken = []
    for li, seg, k, net, discounted in plan.pieces:
        if k < seg.n:
            part = _Seg(k, net, seg.closed, seg.used)
            seg.n -= k
            seg.net -= net
            state[li].segs.append(part)
            seg = part
        if xy:
            seg.used = True
        if discounted:
            taken.append((li, seg))
    for li, cents in plan.applied.items():
        segs = [seg for lj, seg in taken if lj == li]
        line = state[li]
        if cents:
            for seg, part in zip(segs, spread(cents, [seg.net for seg in segs])):
                seg.net -= part
                if not rule.stackable:
                    seg.closed = True
            line.disc += cents
            line.promos.append((rule, cents))


def _lines_of(rule: Rule, state: list[_Line], sku_lines: dict, category_lines: dict, everything) -> list[int]:
    """The basket's lines eligible for `rule`, in basket order, found through the basket's own indexes
    (a rule names a few SKUs or categories; scanning every line for each rule would cost lines x rules)."""
    if rule.every and rule.kind != BUNDLE:
        found = everything
    else:
        hits: set[int] = set()
        skus = rule.bundle_qty if rule.kind == BUNDLE else rule.skus
        for sku in (skus if len(skus) < len(sku_lines) else [s for s in sku_lines if s in skus]):
            hits.update(sku_lines.get(sku, ()))
        if rule.kind != BUNDLE:
            for category in rule.categories:
                hits.update(category_lines.get(category, ()))
        found = sorted(hits)
    return [li for li in found if rule.matches(state[li].sku, state[li].category)]


def _plan(rule: Rule, state: list[_Line], lines: list[int]) -> _Plan | None:
    """What `rule` would do now on its eligible `lines`; None when the basket has none."""
    if not lines:
        return None
    # The segments the rule may still act on, as (line, index, segment, order) (a buy-X-get-Y or
    # bundle skips segments already used), and whether any segment of these lines is open at all.
    xy = rule.kind == BUNDLE or rule.kind == BUY_X_GET_Y
    segs = []
    any_open = False
    for li in lines:
        line = state[li]
        for seg in line.segs:
            if seg.closed:
                continue
            any_open = True
            if xy and seg.used:
                continue
            segs.append((li, line, seg, len(segs)))
    if not segs:
        return _Plan(rule, "units_used" if any_open else "units_closed")
    plan = _Plan(rule)
    amount, reason = _amount(rule, segs, plan.pieces)
    if reason or amount == 0:
        plan.reason = reason or "no_saving"
        return plan
    if rule.cap >= 0 and amount > rule.cap:
        plan.trace.append(trace_entry(rule, "capped", cents=amount - rule.cap))
        amount = rule.cap
    _share_out(plan, rule, state, amount)
    return plan


def _amount(rule: Rule, segs: list, pieces: list) -> tuple[int, str]:
    """(the rule's whole saving on `segs`, "") with the units it counts in `pieces`; or (0, why it
    gives none)."""
    kind = rule.kind
    if kind == BUY_X_GET_Y:
        amount = _plan_xy(rule, segs, pieces)
        return (amount, "") if amount >= 0 else (0, "not_enough_units")
    if kind == BUNDLE:
        amount = _plan_bundle(rule, segs, pieces)
        return (amount, "") if amount >= 0 else (0, "no_complete_set")
    # Every eligible unit takes a share of the amount (step 5 names only buy-X-get-Y and bundles
    # as exceptions), so a fixed price too is spread by net over all of them.
    net = over = off = 0
    for li, _line, seg, _o in segs:
        net += seg.net
        pieces.append((li, seg, seg.n, seg.net, True))
        if kind == FIXED_PRICE and seg.net > rule.a * seg.n:
            # Only units above the fixed price count: the rule never raises a price.
            over += seg.net - rule.a * seg.n
        elif kind == AMOUNT_OFF:
            off += min(rule.a * seg.n, seg.net)
    if kind == FIXED_PRICE:
        return over, ""
    if kind == AMOUNT_OFF:
        return off, ""
    if kind == PERCENT_OFF:
        return half_up(net * rule.a), ""
    if kind == QTY_TIER:
        amount = _qty_tier(rule, segs, net)
        return (amount, "") if amount >= 0 else (0, "qty_tier_not_reached")
    if kind == THRESHOLD:
        amount = _threshold(rule, net)
        return (min(amount, net), "") if amount >= 0 else (0, "threshold_not_reached")
    if kind == ORDER_PERCENT_OFF:
        return (half_up(net * rule.a), "") if net >= rule.b else (0, "below_min_cents")
    return 0, ""


def _threshold(rule: Rule, net: int) -> int:
    """A threshold rule's saving at `net`: its highest step reached, or `b` for every full `a`
    (at most `c` times when set); -1 when not reached."""
    if rule.steps:
        amount = -1
        for least, off in rule.steps:
            if net >= least:
                amount = off
        return amount
    times = net // rule.a
    if rule.c and times > rule.c:
        times = rule.c
    return times * rule.b if times else -1


def _share_out(plan: _Plan, rule: Rule, state: list[_Line], amount: int) -> None:
    """Spread `amount` over the lines of the discounted units, weighted by their current net, then
    the ceiling. Lines go in basket order whatever order the units were drawn in, so remainder ties
    go to the earlier line."""
    weight: dict[int, int] = {}
    for li, _seg, _k, net, discounted in plan.pieces:
        if discounted:
            weight[li] = weight.get(li, 0) + net
    order = sorted(weight)
    shares = spread(amount, [weight[li] for li in order])
    for li, share in zip(order, shares):
        line = state[li]
        room = line.limit - line.disc
        cents = share if share <= room else room
        if cents < share:
            plan.trace.append(trace_entry(rule, "ceiling", line=li, cents=share - cents))
        plan.applied[li] = cents
        plan.saving += cents


def _draw(order, count: int, used: dict, pieces: list, discounted: bool) -> None:
    """Take `count` units along `order`, recording pieces; `used` holds (units, net) taken per segment."""
    for li, _line, seg, _o in order:
        if count == 0:
            return
        took_n, took_net = used.get(id(seg), (0, 0))
        left = seg.n - took_n
        if left == 0:
            continue
        k = count if count < left else left
        left_net = seg.net - took_net
        net = left_net * k // left
        pieces.append((li, seg, k, net, discounted))
        used[id(seg)] = (took_n + k, took_net + net)
        count -= k


def _plan_xy(rule: Rule, segs, pieces: list) -> int:
    """Buy `a` get `b` at `c` bp: qualifying units from the dearest down, rewarded from the cheapest up."""
    units = 0
    for _li, _line, seg, _o in segs:
        units += seg.n
    apps = units // (rule.a + rule.b)
    if rule.d and apps > rule.d:
        apps = rule.d
    if apps == 0:
        return -1
    used: dict = {}
    _draw(sorted(segs, key=_DESC), apps * rule.a, used, pieces, False)
    first = len(pieces)
    _draw(sorted(segs, key=_ASC), apps * rule.b, used, pieces, True)
    rewarded = 0
    for piece in pieces[first:]:
        rewarded += piece[3]
    return half_up(rewarded * rule.c)


def _plan_bundle(rule: Rule, segs, pieces: list) -> int:
    """Complete sets at `price_cents` each, their units taken from the dearest down."""
    sets = -1
    for sku, qty in rule.steps:
        have = 0
        for _li, line, seg, _o in segs:
            if line.sku == sku:
                have += seg.n
        if sets < 0 or have // qty < sets:
            sets = have // qty
    if rule.b and sets > rule.b:
        sets = rule.b
    if sets <= 0:
        return -1
    used: dict = {}
    for sku, qty in rule.steps:
        _draw(sorted((s for s in segs if s[1].sku == sku), key=_DESC), sets * qty, used, pieces, True)
    net = 0
    for piece in pieces:
        net += piece[3]
    over = net - sets * rule.a
    return over if over > 0 else 0


def _qty_tier(rule: Rule, segs, net: int) -> int:
    """The tier amount on all eligible units; -1 when the first tier is not reached."""
    units = 0
    for _li, _line, seg, _o in segs:
        units += seg.n
    steps = rule.steps
    if units < steps[0][0]:
        return -1
    if rule.a == 0:  # all units at the highest tier reached
        pct = 0
        for least, bp in steps:
            if units >= least:
                pct = bp
        return half_up(net * pct)
    # Incremental: the k-th eligible unit, counted in basket order, takes the tier k falls in.
    acc = 0
    first = 0  # units before this segment
    for _li, _line, seg, _o in segs:
        for t, (least, bp) in enumerate(steps):
            upto = steps[t + 1][0] - 1 if t + 1 < len(steps) else first + seg.n
            lo = least if least > first + 1 else first + 1
            hi = upto if upto < first + seg.n else first + seg.n
            if hi >= lo and bp:
                a = lo - first - 1
                b = hi - first
                acc += (seg.net * b // seg.n - seg.net * a // seg.n) * bp
        first += seg.n
    return half_up(acc)


def _answer(version: int, state: list[_Line], trace: list[dict]) -> Priced:
    lines = [PricedLine(line.sku, line.qty, line.unit, line.gross, line.disc,
                        [[rule.id, rule.version, cents] for rule, cents in line.promos]) for line in state]
    return Priced(version, lines, sum(line.gross for line in state), sum(line.disc for line in state), trace)
