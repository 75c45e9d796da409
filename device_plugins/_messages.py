"""What every ECR/1 request carries, checked the same way for the serial line and the LAN API."""
from __future__ import annotations

from core_ext import limits


def id_problem(body: dict) -> str | None:
    """Why the request's `id` is not an acceptable string of 1 to `limits.MAX_ID` characters (None when it is).

    The core remembers ids only of the requests it commits; quotes and queries need one too, since
    the terminal matches each answer to its request by `re`.
    """
    rid = body.get("id")
    if rid is None:
        return f"the request has no id; every request needs a string id of 1 to {limits.MAX_ID} characters"
    if not isinstance(rid, str):
        return f"id must be a string of 1 to {limits.MAX_ID} characters, not {type(rid).__name__}"
    if not 1 <= len(rid) <= limits.MAX_ID:
        return f"id must be a string of 1 to {limits.MAX_ID} characters, not {len(rid)}"
    problem = limits.text_problem(rid, limits.MAX_ID)
    return None if problem is None else f"id {problem}"
