"""Master data in force: validating and applying catalog, members, recalls and policy documents,
and reading them back for the handlers. Promotions are validated by the promotion engine.

Each document replaces what it names whole (members may also come as a delta); entries are checked
one by one and every error names the entry, so the ERP can fix them all at once.
"""
from __future__ import annotations

import re
import dataclasses
from dataclasses import dataclass

from ._limits import MAX_BATCH_EVENTS, MAX_POINTS, MAX_STOCK_UNITS, MAX_WARN_DAYS
from ._promo_py import MAX_CENTS
from ._records import Item, within
from ._store import lot_key
from ._types import is_int

KINDS = ("catalog", "promotions", "members", "recalls", "policy")

POLICY_DEFAULTS = {
    "negative_stock": "allow",
    "expiry_warn_days": 30,
    "points_offline_cap": 10000,
    "points_value_cents": 1,
    "batch_max_events": None,   # None: the configuration's value
    "batch_max_age_s": None,
}

# The policy's integers: (key, lowest, highest).
_POLICY_INTS = (("expiry_warn_days", 0, MAX_WARN_DAYS), ("points_offline_cap", 0, MAX_POINTS),
                ("points_value_cents", 1, MAX_CENTS), ("batch_max_events", 1, MAX_BATCH_EVENTS))

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def gtin14(code: str) -> str | None:
    """A GTIN-8/12/13/14 as GTIN-14, or None when `code` is not one (length or check digit)."""
    if not code.isdigit() or len(code) not in (8, 12, 13, 14):
        return None
    code = code.zfill(14)
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(code[:13]))
    return code if (10 - total % 10) % 10 == int(code[13]) else None


# Keys of the store are at most 511 bytes; a SKU, code, member id or lot is part of one.
MAX_KEY_BYTES = 128


def _too_long(v) -> bool:
    return isinstance(v, str) and len(v.encode()) > MAX_KEY_BYTES



def _str_list(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) and x for x in v)


def _validate_catalog(body) -> list[str]:
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list):
        return ["items: must be a list of catalog items"]
    errors = []
    seen_sku, seen_code = set(), {}
    for i, item in enumerate(items):
        where = f"items[{i}]"
        if not isinstance(item, dict):
            errors.append(f"{where}: must be a map")
            continue
        sku = item.get("sku")
        if _too_long(sku):
            errors.append(f"{where}: sku is longer than {MAX_KEY_BYTES} bytes")
            continue
        if isinstance(sku, str) and sku:
            where = f"items[{i}] (sku {sku!r})"
            if sku in seen_sku:
                errors.append(f"{where}: sku appears twice")
            seen_sku.add(sku)
        else:
            errors.append(f"{where}: sku must be a non-empty string")
        errors += _item_field_problems(where, item)
        errors += _item_code_problems(where, item, sku, seen_code)
    return errors


def _item_field_problems(where: str, item: dict) -> list[str]:
    errors = []
    if not isinstance(item.get("name", ""), str):
        errors.append(f"{where}: name must be a string")
    if not isinstance(item.get("category"), str) or not item.get("category"):
        errors.append(f"{where}: category must be a non-empty string")
    if not is_int(item.get("unit_cents")) or not 0 <= item["unit_cents"] <= MAX_CENTS:
        # Beyond what the promotion engine prices: every sale of the item would be refused.
        errors.append(f"{where}: unit_cents must be an integer from 0 to {MAX_CENTS:,}")
    for flag in ("lot_tracked", "serial_tracked", "active"):
        if flag in item and not isinstance(item[flag], bool):
            errors.append(f"{where}: {flag} must be true or false")
    for num in ("reorder_point", "reorder_qty"):
        if num in item and (not is_int(item[num]) or not 0 <= item[num] <= MAX_STOCK_UNITS):
            errors.append(f"{where}: {num} must be an integer from 0 to {MAX_STOCK_UNITS:,}")
    return errors


def _item_code_problems(where: str, item: dict, sku, seen_code: dict) -> list[str]:
    """Problems of an item's GTINs, HIBC and POS codes; `seen_code` (code key -> sku) takes them,
    so a code given to two SKUs is named."""
    errors = []
    for list_key, prefix in (("gtins", "g"), ("hibc", "h"), ("pos_codes", "p")):
        values = item.get(list_key, [])
        if not _str_list(values):
            errors.append(f"{where}: {list_key} must be a list of non-empty strings")
            continue
        for code in values:
            if _too_long(code):
                errors.append(f"{where}: {list_key} entry {code[:20]!r}... is longer than {MAX_KEY_BYTES} bytes")
                continue
            if list_key == "gtins" and gtin14(code) is None:
                errors.append(f"{where}: gtin {code!r} is not a valid GTIN-8/12/13/14")
                continue
            norm = _code_key(prefix, code)
            other = seen_code.get(norm)
            if other is not None and other != sku:
                errors.append(f"{where}: {list_key[:-1] if list_key != 'hibc' else 'hibc'} {code!r} already belongs to sku {other!r}")
            seen_code[norm] = sku
    return errors


def _validate_members(body) -> list[str]:
    if not isinstance(body, dict) or body.get("mode") not in ("full", "delta"):
        return ["mode: must be 'full' or 'delta'"]
    members = body.get("members")
    if not isinstance(members, list):
        return ["members: must be a list"]
    errors = []
    for i, m in enumerate(members):
        if not isinstance(m, dict) or not isinstance(m.get("id"), str) or not m.get("id") or _too_long(m.get("id")):
            errors.append(f"members[{i}]: id must be a non-empty string of at most {MAX_KEY_BYTES} bytes")
            continue
        where = f"members[{i}] (id {m['id']!r})"
        if m.get("tier") is not None and not isinstance(m.get("tier"), str):
            errors.append(f"{where}: tier must be a string or null")
        if not is_int(m.get("points", 0)) or not 0 <= m.get("points", 0) <= MAX_POINTS:
            errors.append(f"{where}: points must be an integer from 0 to {MAX_POINTS:,}")
        if not isinstance(m.get("name", ""), (str, type(None))):
            errors.append(f"{where}: name must be a string")
    return errors


def _validate_recalls(body) -> list[str]:
    recalls = body.get("recalls") if isinstance(body, dict) else None
    if not isinstance(recalls, list):
        return ["recalls: must be a list"]
    errors = []
    for i, r in enumerate(recalls):
        where = f"recalls[{i}]"
        if not isinstance(r, dict):
            errors.append(f"{where}: must be a map")
            continue
        if isinstance(r.get("recall_id"), str) and r["recall_id"]:
            where = f"recalls[{i}] (recall_id {r['recall_id']!r})"
        else:
            errors.append(f"{where}: recall_id must be a non-empty string")
        if _too_long(r.get("sku")) or _too_long(r.get("lot")):
            errors.append(f"{where}: sku and lot must be at most {MAX_KEY_BYTES} bytes")
            continue
        has_gtin, has_sku = isinstance(r.get("gtin"), str), isinstance(r.get("sku"), str)
        if has_gtin == has_sku:
            errors.append(f"{where}: give exactly one of gtin and sku")
        elif has_gtin and gtin14(r["gtin"]) is None:
            errors.append(f"{where}: gtin {r['gtin']!r} is not a valid GTIN")
        if r.get("lot") is not None and (not isinstance(r.get("lot"), str) or not r["lot"]):
            errors.append(f"{where}: lot must be a non-empty string or null (every lot)")
        if not isinstance(r.get("reason", ""), str):
            errors.append(f"{where}: reason must be a string")
    return errors


def _validate_policy(body) -> list[str]:
    if not isinstance(body, dict):
        return ["policy: must be a map"]
    errors = []
    for key in body:
        if key not in POLICY_DEFAULTS:
            errors.append(f"{key}: unknown policy key")
    if "negative_stock" in body and body["negative_stock"] not in ("allow", "refuse"):
        errors.append("negative_stock: must be 'allow' or 'refuse'")
    # Bounded so that both flavours (the compiled one in C integers) take every value accepted.
    for key, low, high in _POLICY_INTS:
        if key in body and (not is_int(body[key]) or not low <= body[key] <= high):
            errors.append(f"{key}: must be an integer from {low} to {high:,}")
    if "batch_max_age_s" in body and (not isinstance(body["batch_max_age_s"], (int, float))
                                      or isinstance(body["batch_max_age_s"], bool) or body["batch_max_age_s"] <= 0):
        errors.append("batch_max_age_s: must be a number > 0")
    return errors


def validate(kind: str, body) -> list[str]:
    """Every problem of a master document's content, each naming the offending entry; [] = valid."""
    if kind == "catalog":
        return _validate_catalog(body)
    if kind == "members":
        return _validate_members(body)
    if kind == "recalls":
        return _validate_recalls(body)
    if kind == "policy":
        return _validate_policy(body)
    if kind == "promotions":
        from ._select import promo
        return promo.validate_promotions(body)
    return [f"kind: unknown master-data kind {kind!r}"]


def _code_key(prefix: str, code: str) -> str:
    if prefix == "g":
        return "g:" + (gtin14(code) or code)
    if prefix == "h":
        return "h:" + code.upper()
    return "p:" + code


def apply(tx, kind: str, version: int, body, issued_ms: int = 0) -> None:
    """Make a validated document the one in force (the caller checked signature, version, content)."""
    # Taken before the tables change, so a first load sees what is committed (see `Tx.state`).
    master = tx.state(MasterState) if kind in VIEW_KINDS or kind == "promotions" else None
    if kind == "catalog":
        tx.clear("catalog")
        tx.clear("codes")
        for item in body["items"]:
            row = dict(item)
            row.setdefault("lot_tracked", False)
            row.setdefault("serial_tracked", False)
            row.setdefault("active", True)
            row.setdefault("reorder_point", 0)
            row.setdefault("reorder_qty", 0)
            tx.put("catalog", item["sku"], row)
            for list_key, prefix in (("gtins", "g"), ("hibc", "h"), ("pos_codes", "p")):
                for code in item.get(list_key) or ():
                    tx.put("codes", _code_key(prefix, code), item["sku"])
    elif kind == "members":
        _apply_members(tx, body, issued_ms)
    elif kind == "recalls":
        tx.clear("recalls")
        for r in body["recalls"]:
            sku = r.get("sku") or tx.get("codes", "g:" + gtin14(r["gtin"]))
            if sku is None:
                continue  # a GTIN this store does not carry: nothing to block here
            tx.put("recalls", lot_key(sku, r.get("lot")), {"recall_id": r["recall_id"], "reason": r.get("reason", "")})
    elif kind == "policy":
        tx.set_meta("policy", body)
    elif kind == "promotions":
        pass  # kept in master_docs by version; the engine is built from there
    else:
        raise ValueError(f"unknown master-data kind {kind!r}")
    if kind == "promotions":
        master.replace(dataclasses.replace(master.view, promotions=version))
    elif master is not None:
        master.replace(_build_view(tx))


def _apply_members(tx, body, issued_ms: int) -> None:
    # The ERP's balance is as of `issued_ms`: points this store moved after that still count.
    existing = {k.decode(): v for k, v in tx.items("members")}
    if body["mode"] == "full":
        tx.clear("members")
    for m in body["members"]:
        old = existing.get(m["id"], {})
        local = [entry for entry in old.get("local", []) if entry[0] > issued_ms]
        points = m.get("points", 0) + sum(delta for _ts, delta in local)
        tx.put("members", m["id"], {"tier": m.get("tier"), "points": points, "name": m.get("name"), "local": local})


def add_points(tx, member_id: str, delta: int, ts_ms: int) -> int:
    """Move a member's balance by `delta`; returns the new balance."""
    row = tx.get("members", member_id) or {"tier": None, "points": 0, "name": None, "local": []}
    row["points"] += delta
    row["local"].append([ts_ms, delta])
    tx.put("members", member_id, row)
    return row["points"]


def policy(tx) -> dict:
    """The store policy in force, defaults filled in (shared: read it, never change it)."""
    return view(tx).policy


def version(tx, kind: str) -> int:
    row = tx.get("master", kind)
    return row["version"] if row else 0


def recalls_of(tx, sku: str) -> dict:
    """{lot: recall} of every recall of this SKU; lot None = every lot (shared: never change it)."""
    return view(tx).recalls.get(sku, _NO_RECALLS)


def recall_of(tx, sku: str, lot: str | None):
    """The recall blocking this SKU and lot (a recall of every lot counts), or None."""
    return view(tx).recall_of(sku, lot)


def item(tx, sku) -> Item | None:
    """The catalog item `sku` names, or None."""
    return view(tx).items.get(sku)


# --- master data decoded once per version ----------------------------------------------------------

# The kinds a `MasterView` is rebuilt for (it also holds the rule-set version in force).
VIEW_KINDS = ("catalog", "recalls", "policy")
_NO_RECALLS: dict = {}


@dataclass(frozen=True, slots=True)
class MasterView:
    """Catalog, codes, recalls and policy in force, decoded once per document applied.

    Handlers read master data for every line of every sale; unpacking it from LMDB each time cost
    more than the sale itself.
    """

    items: dict          # sku -> Item
    codes: dict          # "g:<gtin14>" | "h:<HIBC>" | "p:<pos code>" -> sku
    recalls: dict        # sku -> {lot or None: recall {"recall_id", "reason"}}
    policy: dict
    promotions: int      # the version of the rule set in force (0: none)

    def recall_of(self, sku: str, lot: str | None):
        lots = self.recalls.get(sku)
        if not lots:
            return None
        if lot is not None:
            hit = lots.get(lot)
            if hit is not None:
                return hit
        return lots.get(None)

    def item_for_code(self, prefix: str, code: str) -> Item | None:
        sku = self.codes.get(prefix + code)
        return None if sku is None else self.items.get(sku)


class MasterState:
    """The writer's `MasterView`, replaced when a document is applied and put back when the
    transaction that applied it aborts (the protocol of `Tx.state`)."""

    def __init__(self, view: MasterView):
        self.view = view
        self.seq = 0
        self._undo: list = []

    @classmethod
    def load(cls, tx) -> "MasterState":
        return cls(_build_view(tx))

    def replace(self, view: MasterView) -> None:
        self._undo.append(self.view)
        self.view = view

    def mark(self) -> int:
        return len(self._undo)

    def rollback(self, mark: int) -> None:
        while len(self._undo) > mark:
            self.view = self._undo.pop()

    def forget(self) -> None:
        self._undo.clear()


def view(tx) -> MasterView:
    """The master data in force as the transaction `tx` sees it (kept in memory by the writer;
    decoded afresh for a reader, whose snapshot may be older)."""
    if not tx.write:
        return _build_view(tx)
    return tx.state(MasterState).view


def _build_view(tx) -> MasterView:
    # One string object per SKU, shared with the ledger's and the engine's maps: a lookup by an
    # item's own SKU then matches by identity, without reading a second copy of the key.
    items = {}
    for _, row in tx.items("catalog"):
        item = Item.of(row)
        items[item.sku] = item
    codes = {k.decode(): sku for k, sku in tx.items("codes")}
    recalls: dict = {}
    for key, row in tx.items("recalls"):
        sku, _, lot = key.decode().partition("\x00")
        recalls.setdefault(sku, {})[lot or None] = row
    merged = dict(POLICY_DEFAULTS)
    merged.update(tx.meta("policy") or {})
    for key, low, high in _POLICY_INTS:
        merged[key] = within(merged.get(key), low, high)
    return MasterView(items, codes, recalls, merged, version(tx, "promotions"))
