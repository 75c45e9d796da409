"""The upstream's request handlers, run by the core loop inside its one write transaction.

seal, prune: the sealer timer's; ack, master, movements: the ERP's (through the API);
master_activate: makes a document sent ahead (`effective_ms` in the future) current when its time comes.
A handler returns the response fields or raises `Refused`, and the core loop rolls back what it did.
"""
from __future__ import annotations

import datetime
import logging

from core_ext import Refused, alerts, errors, is_int, limits, post_movement, u64
from core_ext import master as master_data

from ._envelope import DocumentError, MASTER_KINDS, decode_envelope, verify_document
from ._sealer import ACKED, FIRST_AVAILABLE, STREAM_TRUSTED, SealSignal, Settings, read_head, seal_pending

log = logging.getLogger("gateway.upstream")

# The stable codes of UP/1 refusals, and the HTTP status each answers with (anything else: 422).
BAD_SIGNATURE = "BAD_SIGNATURE"
VERSION_NOT_NEWER = "VERSION_NOT_NEWER"
ACK_BEYOND_LAST = "ACK_BEYOND_LAST"
INVALID_CONTENT = "INVALID_CONTENT"
PRUNED = "PRUNED"
STATUS = {
    errors.BAD_REQUEST: 400, "UNAUTHORIZED": 401, BAD_SIGNATURE: 403, "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405, VERSION_NOT_NEWER: 409, ACK_BEYOND_LAST: 409,
    errors.DUPLICATE_ID_CONFLICT: 409, "ALREADY_CLOSED": 409, PRUNED: 410, "TOO_LARGE": 413, errors.UNAVAILABLE: 503,
}

MOVEMENT_TYPES = ("receipt", "transfer_out", "adjustment", "opening")
# Ids, SKUs and lots become LMDB keys (511 bytes at most, "sku\0lot" among them): bounded well below.
MAX_ID_BYTES = 128


def _doc_key(kind: str, version: int) -> bytes:
    return f"{kind}\x00".encode() + u64(version)


def _verified_body(doc, erp_public_key, kind: str):
    if erp_public_key is None:
        raise Refused(BAD_SIGNATURE, "no ERP public key is installed on this gateway (keys.erp_public_key): "
                                     "documents from the ERP cannot be verified and are refused")
    try:
        body = verify_document(doc, erp_public_key)
    except DocumentError as exc:
        if exc.reason == "signature":
            raise Refused(BAD_SIGNATURE, exc.problem) from None
        raise Refused(errors.BAD_REQUEST, exc.problem) from None
    if doc["kind"] != kind:
        raise Refused(errors.BAD_REQUEST, f"the document is of kind {doc['kind']!r}, sent as {kind!r}")
    return body


def _check_movements(body) -> list[str]:
    """Every problem of a movements document, each naming the movement."""
    movements = body.get("movements") if isinstance(body, dict) else None
    if not isinstance(movements, list):
        return ["movements: must be a list"]
    return [problem for i, m in enumerate(movements) for problem in _movement_problems(i, m)]


def _movement_problems(i: int, m) -> list[str]:
    where = f"movements[{i}]"
    if not isinstance(m, dict):
        return [f"{where}: must be a map"]
    problems = []
    if isinstance(m.get("id"), str) and 0 < len(m["id"].encode()) <= MAX_ID_BYTES:
        where = f"movements[{i}] (id {m['id']!r})"
    else:
        problems.append(f"{where}: id must be a string of 1 to {MAX_ID_BYTES} bytes (UTF-8)")
    kind = m.get("type")
    if kind not in MOVEMENT_TYPES:
        problems.append(f"{where}: type must be one of {', '.join(MOVEMENT_TYPES)}")
    if not isinstance(m.get("sku"), str) or not 0 < len(m["sku"].encode()) <= MAX_ID_BYTES:
        problems.append(f"{where}: sku must be a string of 1 to {MAX_ID_BYTES} bytes (UTF-8)")
    if m.get("lot") is not None and (not isinstance(m["lot"], str)
                                     or not 0 < len(m["lot"].encode()) <= MAX_ID_BYTES):
        problems.append(f"{where}: lot must be a string of 1 to {MAX_ID_BYTES} bytes (UTF-8) or null")
    if not _iso_date_or_none(m.get("expiry")):
        problems.append(f"{where}: expiry must be an ISO date (YYYY-MM-DD) or null")
    serials = m.get("serials", [])
    if serials is not None and (not isinstance(serials, list)
                                or not all(isinstance(s, str) and s for s in serials)):
        problems.append(f"{where}: serials must be a list of non-empty strings")
    problems += _qty_problems(where, kind, m.get("qty"))
    if m.get("reason") is not None and not isinstance(m["reason"], str):
        problems.append(f"{where}: reason must be a string")
    return problems


def _iso_date_or_none(value) -> bool:
    if value is None:
        return True
    if not isinstance(value, str) or len(value) != 10:
        return False
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _qty_problems(where: str, kind, qty) -> list[str]:
    if not is_int(qty):
        return [f"{where}: qty must be an integer"]
    if abs(qty) > limits.MAX_STOCK_UNITS:
        return [f"{where}: qty {qty} is beyond {limits.MAX_STOCK_UNITS} units"]
    if kind == "adjustment" and qty == 0:
        return [f"{where}: an adjustment's qty must not be 0"]
    if kind in ("receipt", "transfer_out", "opening") and qty <= 0:
        return [f"{where}: a {kind}'s qty must be positive"]
    return []


def make_handlers(*, store_id: str, signing_key, erp_public_key, config=None,
                  signal: SealSignal | None = None) -> dict:
    """The upstream handlers by request kind, for the core loop.

    `signing_key` signs batches; `erp_public_key` verifies the ERP's documents; `config` is the
    [upstream] section (see `Settings.from_config`); `signal` is woken after every seal commits.
    """
    return UpstreamHandlers(store_id=store_id, signing_key=signing_key, erp_public_key=erp_public_key,
                            settings=Settings.from_config(config), signal=signal).by_kind()


class UpstreamHandlers:
    """One method a request kind, each `(tx, request, ctx) -> response fields` or `Refused`."""

    def __init__(self, *, store_id: str, signing_key, erp_public_key, settings: Settings,
                 signal: SealSignal | None):
        self.store_id = store_id
        self.signing_key = signing_key
        self.erp_public_key = erp_public_key
        self.settings = settings
        self.signal = signal

    def by_kind(self) -> dict:
        return {"seal": self.seal, "ack": self.ack, "prune": self.prune, "master": self.master,
                "master_activate": self.master_activate, "movements": self.movements}

    def _notify_after_commit(self, ctx) -> None:
        """Long polls and the push client hear of it once the change is durable."""
        if self.signal is not None:
            ctx.after_commit(self.signal.notify)

    # --- the sealer timer's -------------------------------------------------------------------

    def seal(self, tx, request, ctx) -> dict:
        sealed = seal_pending(tx, store_id=self.store_id, private_key=self.signing_key, now_ms=ctx.now_ms,
                              settings=self.settings, flush=bool(request.body.get("flush", True)))
        head = read_head(tx)
        if sealed:
            self._notify_after_commit(ctx)
        return {"sealed": len(sealed), "last_seq": head.seq, "last_event": head.last_event}

    def prune(self, tx, request, ctx) -> dict:
        # Only acknowledged batches go, oldest first; `force` (disk pressure) skips the retention.
        # A batch the NATS stream holds counts as acknowledged only with [nats] trust_stream (chain-nats.md).
        acked = max(tx.meta(ACKED, 0), tx.meta(STREAM_TRUSTED, 0))
        first = tx.meta(FIRST_AVAILABLE, 1)
        keep_after_ms = ctx.now_ms - int(self.settings.retention_acked_s * 1000)
        force = bool(request.body.get("force"))
        pruned = 0
        while first <= acked and pruned < self.settings.prune_max_batches:
            raw = tx.get_raw("batches", u64(first))
            if raw is not None:
                if not force and decode_envelope(raw)["created_ms"] > keep_after_ms:
                    break
                tx.delete("batches", u64(first))
            first += 1
            pruned += 1
        if pruned:
            tx.set_meta(FIRST_AVAILABLE, first)
        return {"pruned": pruned, "first_available": first}

    # --- the ERP's ----------------------------------------------------------------------------

    def ack(self, tx, request, ctx) -> dict:
        through = request.body.get("through")
        if not is_int(through) or through < 0:
            raise Refused(errors.BAD_REQUEST, f"through must be an integer >= 0, got {through!r}")
        last = read_head(tx).seq
        if through > last:
            raise Refused(ACK_BEYOND_LAST, f"batch {through} was never sealed; the last is {last}")
        acked = tx.meta(ACKED, 0)
        if through > acked:
            tx.set_meta(ACKED, through)
            acked = through
            self._notify_after_commit(ctx)
        return {"acked": acked}

    def master(self, tx, request, ctx) -> dict:
        kind = request.body.get("kind")
        if kind not in MASTER_KINDS:
            raise Refused("NOT_FOUND", f"unknown master-data kind {kind!r}; expected one of {', '.join(MASTER_KINDS)}")
        doc = request.body.get("doc")
        body = _verified_body(doc, self.erp_public_key, kind)
        version = doc["version"]
        row = tx.get("master", kind) or {"version": 0, "pending": []}
        _check_master(kind, version, body, row)
        tx.put("master_docs", _doc_key(kind, version), body)
        effective_ms = doc.get("effective_ms") or None
        if effective_ms is not None and effective_ms > ctx.now_ms:
            # Sent ahead: kept until its time (`master_activate`).
            pending = row.get("pending", []) + [{"version": version, "issued_ms": doc["issued_ms"],
                                                 "effective_ms": effective_ms}]
            tx.put("master", kind, {**row, "pending": pending})
            self._notify_after_commit(ctx)
            return {"applied": version, "effective_ms": effective_ms}
        _apply_master(tx, ctx, kind, version, doc["issued_ms"], effective_ms, body)
        return {"applied": version}

    def master_activate(self, tx, request, ctx) -> dict:
        # Every due document in version order: a members delta skipped would lose its changes.
        activated, refused = [], []
        for key, row in list(tx.items("master")):
            kind = key.decode()
            pending = sorted(row.get("pending", []), key=lambda p: p["version"])
            due = [p for p in pending if p["effective_ms"] <= ctx.now_ms]
            if not due:
                continue
            row["pending"] = [p for p in pending if p["effective_ms"] > ctx.now_ms]
            tx.put("master", kind, row)
            for p in due:
                body = tx.get("master_docs", _doc_key(kind, p["version"]))
                # Checked again, as it would be if it came now: a document an older release stored
                # met that release's checks, not necessarily this one's (`docs/upstream.md`).
                problems = master_data.validate(kind, body)
                if problems:
                    tx.delete("master_docs", _doc_key(kind, p["version"]))
                    log.error("%s version %d, sent ahead, is not put in force at its time: %d invalid "
                              "entries: %s", kind, p["version"], len(problems), "; ".join(problems[:5]))
                    refused.append([kind, p["version"], problems[:5]])
                    continue
                _apply_master(tx, ctx, kind, p["version"], p["issued_ms"], p["effective_ms"], body)
                activated.append([kind, p["version"]])
        return {"activated": activated, "refused": refused}

    def movements(self, tx, request, ctx) -> dict:
        doc = request.body.get("doc")
        body = _verified_body(doc, self.erp_public_key, "movements")
        problems = _check_movements(body)
        if problems:
            raise Refused(INVALID_CONTENT, f"{len(problems)} invalid movements: {'; '.join(problems[:5])}",
                          details=problems)
        applied = duplicates = 0
        for i, m in enumerate(body["movements"]):
            if tx.get("movements", m["id"]) is not None:
                duplicates += 1
                continue
            tx.put("movements", m["id"], _post_movement(tx, ctx, i, m))
            applied += 1
        return {"applied": applied, "duplicates": duplicates}


def _check_master(kind: str, version: int, body, row: dict) -> None:
    """Refuse a master-data document that is not newer than every version in force or waiting, or
    whose entries are not valid."""
    newest = max([row.get("version", 0)] + [p["version"] for p in row.get("pending", [])])
    if version <= newest:
        raise Refused(VERSION_NOT_NEWER, f"{kind} version {version} is not newer than {newest}, the newest"
                                         " in force or waiting")
    problems = master_data.validate(kind, body)
    if problems:
        raise Refused(INVALID_CONTENT, f"{kind} version {version}: {len(problems)} invalid entries: "
                                       f"{'; '.join(problems[:5])}", details=problems)


def _apply_master(tx, ctx, kind: str, version: int, issued_ms: int, effective_ms, body) -> None:
    """Put a master-data document in force, with its `master_applied` event."""
    master_data.apply(tx, kind, version, body, issued_ms)
    row = tx.get("master", kind) or {}
    # An older version still waiting for its time is superseded by this one: were it kept, its
    # effective_ms would bring it back over a newer version in force. Never in force, it priced
    # no sale, so its body goes too.
    pending = []
    for p in row.get("pending", []):
        if p["version"] > version:
            pending.append(p)
        else:
            tx.delete("master_docs", _doc_key(kind, p["version"]))
    tx.put("master", kind, {"version": version, "issued_ms": issued_ms, "effective_ms": effective_ms,
                            "pending": pending})
    tx.append_event({"type": "master_applied", "id": f"erp:{kind}:{version}", "kind": kind,
                     "version": version, "issued_ms": issued_ms, "effective_ms": effective_ms,
                     "ts_ms": ctx.now_ms, "moves": []})
    if kind != "promotions":
        # Only rule sets are needed again (to re-price old sales); a catalog a day would fill the disk.
        tx.delete("master_docs", _doc_key(kind, version))
    if kind in ("catalog", "recalls", "policy"):
        # Reorder points, recalled lots and the expiry window may have changed under the stock.
        alerts.refresh_all(tx, ctx.now_ms, ctx.settings.timezone)


def _post_movement(tx, ctx, index: int, movement: dict) -> int:
    """Post one movement of a document (its ledger seq); a refusal refuses the whole document (the
    core loop rolls back the movements before it)."""
    try:
        return post_movement(tx, ctx, movement, f"erp:{movement['id']}")
    except Refused as exc:
        code = INVALID_CONTENT if exc.code == errors.BAD_REQUEST else exc.code
        problem = f"movements[{index}]: {exc.message}"
        raise Refused(code, problem, details=[problem]) from None


def next_activation_ms(tx) -> int | None:
    """When the earliest document waiting for its `effective_ms` is due, or None."""
    times = [p["effective_ms"] for _k, row in tx.items("master") for p in row.get("pending", [])]
    return min(times) if times else None


def read_next_activation(store) -> int | None:
    with store.read() as tx:
        return next_activation_ms(tx)
