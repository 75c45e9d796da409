"""The figures of a business day (CLOSE/1), from its documents: one fold, two users.

The single writer folds every document into the open day's running totals as it is appended
(`_days.py`, with an undo log so a rolled-back request takes its figures with it); the ERP's
reference client recomputes a pulled `day_close` by folding the documents of its range afresh
(`recompute_day`). Both go through `fold` and `finish` here, which touch nothing but the totals they
are given: pure functions of the documents.
"""
from __future__ import annotations

# The payment methods of ECR/1, in the order that breaks ties between equal payments (CLOSE/1).
METHOD_ORDER = ("cash", "card", "insurance", "points")
# What a money refund may be paid back in: points paid come back as points on their own.
REFUND_METHODS = ("cash", "card", "insurance")
LANE_KEYS = ("sales", "returns", "gross_cents", "discount_cents", "net_cents", "refund_cents")
POINT_KEYS = ("points_earned", "points_redeemed")
STOCK_KEYS = ("sold", "returned", "received", "adjusted", "transferred_out")
# Event types whose moves count as stock "adjusted": corrections that set a figure.
_ADJUSTING = frozenset({"adjustment", "count", "opening"})


def empty_totals() -> dict:
    """Running totals of a day with nothing in it yet."""
    return {"lanes": {}, "counts": {}, "promotions": {}, "refusals": {}, "stock": {}}


class Plain:
    """Changes the totals in place (the recomputation's accumulator; the writer's keeps an undo log)."""

    __slots__ = ()

    @staticmethod
    def at(d: dict, key) -> dict:
        sub = d.get(key)
        if sub is None:
            sub = d[key] = {}
        return sub

    @staticmethod
    def add(d: dict, key, n: int) -> None:
        if n:
            d[key] = d.get(key, 0) + n

    @staticmethod
    def put(d: dict, key, value) -> None:
        d[key] = value


PLAIN = Plain()


def promotion_rules(doc: dict):
    """The promotion rules whose day figures `doc` changes (a sale's, through its lines)."""
    if doc.get("type") != "sale":
        return ()
    return {promo[0] for line in doc.get("lines") or () for promo in line.get("promos") or ()}


def _units(doc: dict) -> int:
    return sum(m[2] for m in doc.get("moves") or ())


def fold(doc: dict, totals: dict, acc=PLAIN) -> None:
    """Add what one ledger document says to its day's running totals (through `acc`)."""
    kind = doc.get("type")
    if kind == "sale":
        _fold_sale(doc, totals, acc)
    elif kind == "return":
        _fold_return(doc, totals, acc)
    elif kind == "drawer_count":
        source = doc.get("source") or ""
        acc.at(totals["lanes"], source)  # a lane that only counted still has a line in the close
        acc.put(totals["counts"], source, dict(doc.get("counted") or {}))
    elif kind == "refusal":
        acc.add(totals["refusals"], doc.get("err") or "UNKNOWN", 1)
    elif kind == "receipt":
        acc.add(totals["stock"], "received", _units(doc))
    elif kind in _ADJUSTING:
        acc.add(totals["stock"], "adjusted", _units(doc))
    elif kind == "transfer_out":
        acc.add(totals["stock"], "transferred_out", -_units(doc))


def _fold_sale(doc: dict, totals: dict, acc) -> None:
    lane = acc.at(totals["lanes"], doc.get("source") or "")
    acc.add(lane, "sales", 1)
    acc.add(lane, "gross_cents", doc.get("gross_cents", 0))
    acc.add(lane, "discount_cents", doc.get("discount_cents", 0))
    acc.add(lane, "net_cents", doc.get("total_cents", 0))
    taken = acc.at(lane, "taken")
    for payment in doc.get("payments") or ():
        acc.add(taken, payment["method"], payment["cents"])
    points = doc.get("points") or {}
    acc.add(lane, "points_earned", points.get("earned", 0))
    acc.add(lane, "points_redeemed", points.get("redeemed", 0))
    by_rule: dict = {}
    for line in doc.get("lines") or ():
        for promo in line.get("promos") or ():
            entry = by_rule.setdefault(promo[0], [0, 0])
            entry[0] += line.get("qty", 0)
            entry[1] += promo[2]
    ruleset = doc.get("ruleset") or 0
    for rule_id, (units, cents) in by_rule.items():
        promo = acc.at(totals["promotions"], rule_id)
        if ruleset > promo.get("ruleset", 0):
            acc.put(promo, "ruleset", ruleset)  # the newest rule set that used it that day
        acc.add(promo, "baskets", 1)
        acc.add(promo, "units", units)
        acc.add(promo, "discount_cents", cents)
    acc.add(totals["stock"], "sold", -_units(doc))


def _fold_return(doc: dict, totals: dict, acc) -> None:
    lane = acc.at(totals["lanes"], doc.get("source") or "")
    acc.add(lane, "returns", 1)
    money = doc.get("refund_cents", 0)
    acc.add(lane, "refund_cents", money)
    refunded = acc.at(lane, "refunded")
    # Returns written before refunds were split name no method: their money went back as cash.
    for method, cents in (doc.get("refunds") or ({"cash": money} if money else {})).items():
        acc.add(refunded, method, cents)
    # What points paid comes back as points: the value given back beyond the money.
    acc.add(refunded, "points", doc.get("value_cents", money) - money)
    acc.add(totals["stock"], "returned", _units(doc))


def split_refund(paid: dict, given: dict, cents: int, named: str | None = None) -> dict:
    """Which money methods pay back `cents` (CLOSE/1): the one named, else the sale's methods from
    the one that paid most down (ties: cash, card, insurance), each up to what it paid less what
    earlier returns already gave back through it (`given`)."""
    if cents <= 0:
        return {}
    if named is not None:
        return {named: cents}
    order = sorted((m for m in REFUND_METHODS if paid.get(m, 0) > 0), key=lambda m: (-paid[m], METHOD_ORDER.index(m)))
    out, left = {}, cents
    for method in order:
        take = min(paid[method] - given.get(method, 0), left)
        if take > 0:
            out[method] = take
            left -= take
    if left:
        # Beyond what the sale's money paid (it cannot happen: refunds never exceed the sale):
        # still accounted, on the method that paid most, or cash.
        method = order[0] if order else "cash"
        out[method] = out.get(method, 0) + left
    return out


# --- the close -------------------------------------------------------------------------------

def _method_key(method: str):
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def _lane_figures(lane: dict, counted: dict | None) -> dict:
    taken, refunded = lane.get("taken") or {}, lane.get("refunded") or {}
    methods = set(taken) | set(refunded) | set(counted or ())
    payments = {}
    for method in sorted(methods, key=_method_key):
        t, r = taken.get(method, 0), refunded.get(method, 0)
        c = None if counted is None else counted.get(method)
        payments[method] = {"taken": t, "refunded": r, "expected": t - r, "counted": c,
                            "difference": None if c is None else c - (t - r)}
    out = {key: lane.get(key, 0) for key in LANE_KEYS}
    out["payments"] = payments
    for key in POINT_KEYS:
        out[key] = lane.get(key, 0)
    return out


def _sum_or_none(values: list):
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _sum_lanes(lanes: dict) -> dict:
    out = {key: sum(lane[key] for lane in lanes.values()) for key in LANE_KEYS}
    methods = sorted({m for lane in lanes.values() for m in lane["payments"]}, key=_method_key)
    out["payments"] = {}
    for method in methods:
        rows = [lane["payments"][method] for lane in lanes.values() if method in lane["payments"]]
        out["payments"][method] = {
            "taken": sum(r["taken"] for r in rows), "refunded": sum(r["refunded"] for r in rows),
            "expected": sum(r["expected"] for r in rows),
            "counted": _sum_or_none([r["counted"] for r in rows]),
            "difference": _sum_or_none([r["difference"] for r in rows])}
    for key in POINT_KEYS:
        out[key] = sum(lane[key] for lane in lanes.values())
    return out


def finish(totals: dict) -> dict:
    """The figures of CLOSE/1 (lanes, totals, promotions, refusals, stock) from running totals."""
    counts = totals["counts"]
    lanes = {name: _lane_figures(lane, counts.get(name)) for name, lane in sorted(totals["lanes"].items())}
    promotions = {rule: {"ruleset": p.get("ruleset", 0), "baskets": p.get("baskets", 0),
                         "units": p.get("units", 0), "discount_cents": p.get("discount_cents", 0)}
                  for rule, p in sorted(totals["promotions"].items())}
    stock = {key: totals["stock"].get(key, 0) for key in STOCK_KEYS}
    return {"lanes": lanes, "totals": _sum_lanes(lanes), "promotions": promotions,
            "refusals": dict(sorted(totals["refusals"].items())), "stock": stock}


FIGURES = ("lanes", "totals", "promotions", "refusals", "stock")


# --- the ERP's side --------------------------------------------------------------------------

def recompute_day(docs, close: dict) -> tuple[dict, list[str]]:
    """Every figure of `close` recomputed from `docs` (any documents; those of its range count).

    Returns (figures, problems): problems name documents of the range that are missing or repeated,
    without which no figure can be trusted.
    """
    first, last = close["from_seq"], close["to_seq"]
    totals = empty_totals()
    seen = set()
    problems = []
    for doc in docs:
        seq = doc.get("seq")
        if not isinstance(seq, int) or not first <= seq <= last:
            continue
        if seq in seen:
            problems.append(f"document {seq} appears twice")
            continue
        seen.add(seq)
        fold(doc, totals)
    missing = (last - first + 1) - len(seen)
    if missing:
        problems.append(f"{missing} of the documents {first}..{last} are missing")
    return finish(totals), problems


def differences(close: dict, figures: dict) -> list[tuple[str, object, object]]:
    """(path, what the close says, what the documents give) for every figure that differs."""
    out: list = []
    for key in FIGURES:
        _diff(key, close.get(key), figures.get(key), out)
    return out


def _diff(path: str, said, computed, out: list) -> None:
    if isinstance(said, dict) and isinstance(computed, dict):
        for key in sorted(set(said) | set(computed), key=str):
            _diff(f"{path}.{key}", said.get(key), computed.get(key), out)
    elif said != computed or type(said) is not type(computed):
        out.append((path, said, computed))
