"""Legacy POS files (scanners-and-files.md, "Legacy POS file drops"), as the core sees them.

A file reaches the core as requests of two kinds, so that no file, however large, holds the writer:

- `csv_check` only reads: which of a bounded list of the file's codes the catalog does not know, and
  how far the file has been applied already (its progress).
- `csv_slice` applies a bounded run of the file's baskets, in order, and records how far the file
  has come in the same transaction (table `files`), so a restart continues where the last durable
  slice left it. Each basket is also remembered by its document id (table `ids`), so it is applied
  exactly once whatever is sent again.

The sales already happened at the counter, so they are recorded as they happened: stock the ledger
lacks goes to the SKU's unallocated balance, and a recalled or expired lot is sold and alerted
(`RECALLED_LOT_SOLD`, `EXPIRED_LOT_SOLD`, an `alert` event naming the file, basket and lot).
"""
from __future__ import annotations

import re
import time

from . import _alerts, _errors as E, _sales
from ._errors import Refused, bad_request
from ._ids import body_hash
from ._limits import MAX_LINES, check_id
from ._localtime import today
from ._records import Move, refusal_logged
from ._select import ledger
from ._types import is_int

# What one request may carry; the watcher sends far less (a slice is sized for milliseconds).
MAX_CHECK_CODES = 1000
MAX_SLICE_DOCS = 1000
MAX_SLICE_LINES = 10_000

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _file_key(request) -> str:
    """The `files` key of the request's file: the device and the file's content hash."""
    digest = request.body.get("hash")
    if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
        raise bad_request("hash must be the file's SHA-256 in 64 lower-case hex digits")
    return f"{request.source}:{digest}"


def _progress_answer(progress: dict | None) -> dict | None:
    if progress is None:
        return None
    return {"next": progress["next"], "baskets": progress["baskets"], "done": progress["done"]}


# --- csv_check -------------------------------------------------------------------------------

def _code_problem(tx, code) -> str | None:
    """Why a file's `code` cannot be sold, or None when the catalog knows it as sellable."""
    if not isinstance(code, str) or not code:
        return "code must be a non-empty string"
    item, _facts = _sales.resolve_code(tx, code)
    if item is None:
        return f"code {code!r} matches nothing in the catalog"
    if not item.active:
        return f"code {code!r} is {item['sku']}, which is not sellable (inactive in the catalog)"
    return None


def handle_csv_check(tx, request, ctx) -> dict:
    """Read only: the codes of `codes` the catalog does not know, and the file's progress."""
    key = _file_key(request)
    codes = request.body.get("codes")
    if not isinstance(codes, list) or len(codes) > MAX_CHECK_CODES:
        raise bad_request(f"codes must be a list of at most {MAX_CHECK_CODES} codes")
    unknown = []
    for code in codes:
        problem = _code_problem(tx, code)
        if problem is not None:
            unknown.append([code, E.UNKNOWN_ITEM, problem])
    return {"unknown": unknown, "progress": _progress_answer(tx.get("files", key))}


# --- csv_slice -------------------------------------------------------------------------------

def _slice_docs(body: dict) -> list:
    docs = body.get("docs")
    if not isinstance(docs, list) or not 1 <= len(docs) <= MAX_SLICE_DOCS:
        raise bad_request(f"docs must be a list of 1 to {MAX_SLICE_DOCS} baskets")
    lines = sum(len(d["lines"]) for d in docs if isinstance(d, dict) and isinstance(d.get("lines"), list))
    if lines > MAX_SLICE_LINES:
        raise bad_request(f"a slice may carry at most {MAX_SLICE_LINES} lines, this one has {lines}")
    return docs


def _progress(tx, key: str, body: dict, now_ms: int) -> dict:
    """The file's progress, begun on its first slice; the totals must match what it began with."""
    for name in ("first", "baskets", "rows"):
        if not is_int(body.get(name)) or body[name] < 0:
            raise bad_request(f"{name} must be an integer >= 0")
    file = body.get("file")
    if not isinstance(file, str) or not 1 <= len(file) <= 255:
        raise bad_request("file must be the file's name, 1 to 255 characters")
    progress = tx.get("files", key)
    if progress is None:
        return {"file": file, "baskets": body["baskets"], "rows": body["rows"], "next": 0, "applied": 0,
                "duplicates": 0, "refused": 0, "done": False, "started_ms": now_ms, "updated_ms": now_ms}
    if (progress["baskets"], progress["rows"]) != (body["baskets"], body["rows"]):
        raise bad_request(f"the file was begun as {progress['baskets']} baskets in {progress['rows']} rows, "
                          f"this slice says {body['baskets']} in {body['rows']} (was the mapping changed?)")
    return progress


def handle_csv_slice(tx, request, ctx) -> dict:
    """Apply baskets `first`, `first + 1`, ... of a file, and its progress, in one transaction.

    Baskets before the file's progress were applied by an earlier slice and are skipped; a slice
    starting beyond it is refused (a basket would be missed). A basket the core refuses now (its
    code left the catalog since the check, say) is recorded as a `refusal` and the file goes on.
    """
    body = request.body
    key = _file_key(request)
    docs = _slice_docs(body)
    progress = _progress(tx, key, body, ctx.now_ms)
    first = body["first"]
    if first > progress["next"]:
        raise bad_request(f"the file has been applied up to basket {progress['next']}, not {first}")
    if first + len(docs) > progress["baskets"]:
        raise bad_request(f"baskets {first} to {first + len(docs) - 1} are beyond the file's {progress['baskets']}")
    todo = [doc for index, doc in enumerate(docs) if first + index >= progress["next"]]
    started = time.perf_counter()
    answer = _all_baskets(tx, request, ctx, todo, progress["file"])
    if answer is None:
        # A basket was refused: each basket again in a transaction of its own, so that only the
        # refused one is rolled back (and recorded).
        answer = _new_answer()
        for doc in todo:
            _one_basket(tx, request, ctx, doc, progress["file"], answer)
    progress["next"] = max(progress["next"], first + len(docs))
    progress["done"] = progress["next"] == progress["baskets"]
    progress["updated_ms"] = ctx.now_ms
    for name in ("applied", "duplicates"):
        progress[name] += answer[name]
    progress["refused"] += len(answer["refused"])
    tx.put("files", key, progress)
    answer.update(_progress_answer(progress))
    # How long the slice held the writer: the watcher sizes its next slices by it (`_pace.py`).
    answer["held_ms"] = (time.perf_counter() - started) * 1000
    return answer


def _new_answer() -> dict:
    return {"applied": 0, "duplicates": 0, "rows": 0, "seqs": [], "refused": [], "alerts": []}


def _all_baskets(tx, request, ctx, docs: list, file: str) -> dict | None:
    """Apply `docs` in one nested transaction (a file was checked whole: refusals are rare, and a
    transaction per basket costs as much as a basket's stock moves); None, with nothing applied,
    if any basket is refused."""
    answer = _new_answer()
    child = tx.child()
    try:
        for doc in docs:
            _count_basket(answer, doc, *_apply_basket(child, request, ctx, doc, file))
        child.commit()
    except Refused:
        child.abort()
        return None
    except BaseException:
        child.abort()
        raise
    return answer


def _count_basket(answer: dict, doc, outcome: str, seq: int | None, alerts: list) -> None:
    if outcome == "duplicate":
        answer["duplicates"] += 1
        return
    answer["applied"] += 1
    answer["rows"] += len(doc.get("rows") or ())
    answer["seqs"].append(seq)
    answer["alerts"] += alerts


def _one_basket(tx, request, ctx, doc, file: str, answer: dict) -> None:
    """Apply one basket in a nested transaction; a refusal rolls it back and is recorded instead."""
    child = tx.child()
    try:
        outcome, seq, alerts = _apply_basket(child, request, ctx, doc, file)
        child.commit()
    except Refused as exc:
        child.abort()
        answer["refused"].append(_record_refusal(tx, request, ctx, doc, file, exc))
        return
    except BaseException:
        child.abort()
        raise
    _count_basket(answer, doc, outcome, seq, alerts)


def _basket_lines(doc) -> tuple[list, bool]:
    """The basket's lines, checked, and whether any of them brings goods back (a qty below zero)."""
    if not isinstance(doc, dict):
        raise bad_request("each basket must be a map")
    check_id(doc.get("id"), "basket id")
    lines = doc.get("lines")
    if not isinstance(lines, list) or not 1 <= len(lines) <= MAX_LINES:
        raise bad_request(f"a basket needs 1 to {MAX_LINES} lines")
    backs = False
    for i, line in enumerate(lines):
        qty = line.get("qty") if isinstance(line, dict) else None
        if not is_int(qty) or qty == 0:
            raise bad_request(f"lines[{i}] must be a map with a non-zero integer qty")
        if qty < 0:
            backs = True
    return lines, backs


def _apply_basket(tx, request, ctx, doc, file: str) -> tuple[str, int | None, list]:
    """("applied", seq, alerts) or ("duplicate", None, []) when the basket was applied before."""
    lines, backs = _basket_lines(doc)
    key = f"{request.source}:{doc['id']}"
    digest = body_hash(doc)
    first = tx.get("ids", key)
    if first is not None:
        if first["h"] != digest:
            raise Refused(E.DUPLICATE_ID_CONFLICT, f"basket {doc['id']!r} was applied before with other rows")
        return "duplicate", None, []
    if backs:
        seq, alerts = _sale_and_return(tx, request, ctx, doc, file, lines, key)
    else:
        # Nearly every basket only sells: it is priced as it came, without a copy of it.
        seq, warnings = _sales.RECORD_SALE(tx, request, ctx, doc, key)
        alerts = _alert_sold(tx, request, ctx, doc, file, seq, warnings) if warnings else []
    tx.put("ids", key, {"h": digest, "seq": seq, "res": {"ok": True, "seq": seq}})
    return "applied", seq, alerts


def _sale_and_return(tx, request, ctx, doc: dict, file: str, lines: list, key: str) -> tuple[int, list]:
    """A basket with goods brought back: what it sold recorded as a sale, what came back as a return
    (under its own id when the basket also sold); the first event's seq, and the sale's alerts."""
    sales = [line for line in lines if line["qty"] > 0]
    seq, alerts = None, []
    if sales:
        seq, warnings = _sales.RECORD_SALE(tx, request, ctx, {**doc, "lines": sales}, key)
        alerts = _alert_sold(tx, request, ctx, doc, file, seq, warnings) if warnings else []
    backs = {**doc, "lines": [line for line in lines if line["qty"] < 0]}
    back = _stock_return(tx, request, ctx, backs, key + (":return" if sales else ""))
    return (seq if seq is not None else back), alerts


def _alert_sold(tx, request, ctx, doc: dict, file: str, sale_seq: int, warnings: list) -> list:
    """One `alert` event per recalled or expired lot the basket sold (each lot once): the sale's
    warnings that are maps (the others are words, `UNKNOWN_MEMBER`)."""
    raised, seen = [], set()
    for finding in warnings:
        if not isinstance(finding, dict):
            continue
        what = (finding["kind"], finding["sku"], finding["lot"])
        if what in seen:
            continue
        seen.add(what)
        kind, sku, lot = what
        event = {"type": "alert", "id": f"{request.source}:{doc['id']}:{kind}:{sku}:{lot or ''}",
                 "source": request.source, "ts_ms": ctx.now_ms, **finding, "file": file,
                 "basket": doc["id"], "rows": list(doc.get("rows") or ()), "sale_seq": sale_seq, "moves": []}
        tx.append_event(event)
        raised.append({"kind": kind, "basket": doc["id"], "sku": sku, "lot": lot})
    return raised


def _refunds(doc: dict, out: list) -> dict:
    """A file's refund goes back the way its basket says it was paid (cash unless named; CLOSE/1)."""
    cents = sum(line["refund_cents"] for line in out)
    method = doc.get("payment") if doc.get("payment") in ("cash", "card", "insurance") else "cash"
    return {method: cents} if cents > 0 else {}


def _stock_return(tx, request, ctx, doc: dict, doc_id: str) -> int:
    """Negative rows of a POS file: goods back to stock, refunded at the catalog price."""
    lines = _sales.resolve_lines(tx, [{**line, "qty": -line["qty"]} for line in doc["lines"]])
    moves, out = [], []
    for line in lines:
        moves.append(Move(line.sku, line.lot, line.qty, line.expiry, (line.serial,) if line.serial else ()))
        out.append({"sku": line.sku, "lot": line.lot, "qty": line.qty, "refund_cents": line.qty * line.item.unit_cents})
    ledger.apply_moves(tx, moves)
    seq = tx.append_event({"type": "return", "id": doc_id, "source": request.source, "orig": None, "ts_ms": ctx.now_ms,
                           "lines": out, "refund_cents": sum(line["refund_cents"] for line in out),
                           "refunds": _refunds(doc, out), "moves": moves})
    _alerts.after_moves(tx, moves, today(ctx.now_ms, ctx.settings.timezone), ctx.now_ms)
    return seq


def _record_refusal(tx, request, ctx, doc, file: str, exc: Refused) -> dict:
    """A basket refused while its file is applied: in the log for the ERP, and in the answer."""
    basket = doc.get("id") if isinstance(doc, dict) else None
    rows = doc.get("rows") if isinstance(doc, dict) and isinstance(doc.get("rows"), list) else []
    tx.append_event(refusal_logged(exc.record, request_id=f"{request.source}:{basket}", source=request.source,
                                   code=exc.code, message=exc.message, seq=tx.last_seq() + 1, now_ms=ctx.now_ms,
                                   type="refusal", request="csv_slice", file=file, basket=basket, rows=rows))
    return {"basket": basket, "rows": rows, "err": exc.code, "msg": exc.message}
