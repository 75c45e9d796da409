"""Request identity: the same id with the same content is a repeat, with other content a conflict."""
from __future__ import annotations

import hashlib

import msgpack


def _canonical(obj) -> bytes:
    # Key order and the transport's `t` must not make a repeat look different.
    if isinstance(obj, dict):
        return b"{" + b",".join(_canonical(k) + b":" + _canonical(obj[k]) for k in sorted(obj, key=str)) + b"}"
    if isinstance(obj, (list, tuple)):
        return b"[" + b",".join(_canonical(v) for v in obj) + b"]"
    return msgpack.packb(obj, use_bin_type=True)


def body_hash(body: dict) -> bytes:
    return hashlib.sha256(_canonical({k: v for k, v in body.items() if k != "t"})).digest()[:16]
