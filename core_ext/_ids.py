"""Request identity: the same id with the same content is a repeat, with other content a conflict."""
from __future__ import annotations

import hashlib

import msgpack

from ._errors import bad_request


def _sorted(obj):
    # Key order must not make a repeat look different; MessagePack keeps maps and arrays apart and
    # every item length-delimited, so no two different bodies share an encoding.
    if isinstance(obj, dict):
        return {k: _sorted(obj[k]) for k in sorted(obj, key=lambda k: (type(k).__name__, str(k)))}
    if isinstance(obj, (list, tuple)):
        return [_sorted(v) for v in obj]
    return obj


def body_hash(body: dict) -> bytes:
    """A digest of the request's content, the transport's `t` left out; refuses what cannot be stored."""
    try:
        packed = msgpack.packb(_sorted({k: v for k, v in body.items() if k != "t"}), use_bin_type=True)
    except (OverflowError, TypeError, ValueError) as exc:
        raise bad_request(f"the request holds a value that cannot be stored ({exc}); numbers must fit in 64 bits") from None
    return hashlib.sha256(packed).digest()[:16]
