"""What every ECR/1 request carries, checked the same way for the serial line and the LAN API."""
from __future__ import annotations

from core_ext._limits import MAX_ID, text_problem

MAX_ID_CHARS = MAX_ID


def id_problem(body: dict) -> str | None:
    """Why the request's `id` is not a string of 1 to 64 characters, none of them a control
    character or a lone surrogate (None when it is).

    The core remembers ids only of the requests it commits; quotes and queries need one too, since
    the terminal matches each answer to its request by `re`.
    """
    rid = body.get("id")
    if rid is None:
        return "the request has no id; every request needs a string id of 1 to 64 characters"
    if not isinstance(rid, str):
        return f"id must be a string of 1 to 64 characters, not {type(rid).__name__}"
    if not 1 <= len(rid) <= MAX_ID_CHARS:
        return f"id must be a string of 1 to 64 characters, not {len(rid)}"
    problem = text_problem(rid, MAX_ID)
    return None if problem is None else f"id {problem}"
