"""Request identity: the same id with the same content is a repeat, with other content a conflict.

The digest is the sale path's (`_salepath_py.body_hash`, compiled in `_salepath_c.pyx`): every
idempotent request hashes its body on the writer.
"""
from __future__ import annotations

from ._select import salepath


def body_hash(body: dict) -> bytes:
    """A digest of the request's content, the transport's `t` left out; refuses what cannot be stored."""
    return salepath.body_hash(body)
