"""The UP/1 app's error answer, shared by its routes (`_api.py`, `_day_close.py`)."""
from __future__ import annotations


class HttpError(Exception):
    """An answer other than 200, with the spec's error body."""

    def __init__(self, status: int, code: str, message: str, *, edge: str = "", **extra):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        # The reason class (core_ext.asgi.EDGE_REASONS) of a refusal decided before the core.
        self.edge = edge
        self.extra = extra


def only(method: str, allowed: str) -> None:
    """Refuse any method but `allowed` (405)."""
    if method != allowed:
        raise HttpError(405, "METHOD_NOT_ALLOWED", f"use {allowed} here, not {method}", edge="method_not_allowed")
