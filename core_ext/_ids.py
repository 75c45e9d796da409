"""Request identity: the same id with the same content is a repeat, with other content a conflict.

The digest is the sale path's (`_salepath_py.body_hash`, compiled in `_salepath_c.pyx`): every
idempotent request hashes its body on the writer.
"""
from __future__ import annotations

from ._errors import UNAVAILABLE
from ._records import answer_ok, answer_refused
from ._sales import sale_answer_again, sale_memo
from ._select import salepath


def body_hash(body: dict) -> bytes:
    """A digest of the request's content, the transport's `t` left out; refuses what cannot be stored."""
    return salepath.body_hash(body)


def id_record(kind: str, digest: bytes, answer: dict) -> dict:
    """What the `ids` table keeps of a committed request: its body's digest, its event's seq, and
    enough to answer a repeat with the first answer: a sale's is rebuilt from its event and a memo
    of the rest (`_sales.sale_answer_again`), any other request's is kept whole under `res`."""
    seq = answer.get("seq")
    if kind == "sale" and seq is not None:
        return {"h": digest, "seq": seq, "memo": sale_memo(answer)}
    return {"h": digest, "seq": seq, "res": answer}


def sale_of(tx, key: str, record: dict) -> dict | None:
    """The sale event a sale's `record` under `key` names, or None when that event is not it."""
    event = tx.event(record.get("seq") or 0)
    if event is None or event.get("type") != "sale" or event.get("id") != key:
        return None
    return event


def first_answer(tx, key: str, request_id, record: dict) -> dict:
    """The first answer of the request remembered under `key` as `record` (see `id_record`)."""
    if "res" in record:
        return record["res"]
    event = sale_of(tx, key, record)
    if event is None:
        # Only a damaged store gets here (`verify-ledger` names the record): this request alone is
        # refused, and nothing is applied twice.
        return answer_refused(request_id, UNAVAILABLE, f"the first answer to id {request_id!r} cannot be read "
                                                       f"back: its record names event {record['seq']}, which is "
                                                       "not this sale; run verify-ledger")
    return answer_ok(request_id, sale_answer_again(event, record["memo"]))
