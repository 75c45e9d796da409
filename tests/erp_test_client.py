"""An ERP as the tests see it: written from the UP/1 spec alone, sharing no code with `upstream`.

It checks every batch's Ed25519 signature with `cryptography` and the hash chain across batches,
so a test that passes shows that what the gateway sends is what the spec promises.
"""
from __future__ import annotations

import base64
import hashlib
import http.client
import json
import ssl
import urllib.parse

import msgpack
import zstandard
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

ZERO = bytes(32)


class ChainBroken(Exception):
    """What an ERP would raise: the batches received are not the store's unbroken chain."""


def spec_signed_bytes(env: dict) -> bytes:
    return msgpack.packb([env["v"], env["store"], env["seq"], env["prev"], env["created_ms"],
                          env["first_event"], env["last_event"], env["count"], env["codec"], env["body"]],
                         use_bin_type=True)


def spec_digest(env: dict) -> bytes:
    return hashlib.sha256(spec_signed_bytes(env) + env["sig"]).digest()


def load_public(pem_path: str):
    with open(pem_path, "rb") as f:
        return serialization.load_pem_public_key(f.read())


def body_of(env: dict) -> dict:
    raw = zstandard.ZstdDecompressor().decompress(env["body"]) if env["codec"] == "zstd" else env["body"]
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)


class ChainChecker:
    """Follows one store's chain batch by batch, as an ERP keeps it between pulls."""

    def __init__(self, public_key, *, store: str | None = None):
        self.public_key = public_key
        self.store = store
        self.seq = 0
        self.digest = ZERO
        self.last_event = 0

    def accept(self, env: dict) -> dict:
        """Check `env` continues the chain; returns its decoded body."""
        if env["seq"] != self.seq + 1:
            raise ChainBroken(f"expected batch {self.seq + 1}, got {env['seq']}")
        if env["prev"] != self.digest:
            raise ChainBroken(f"batch {env['seq']}: prev does not match the digest of batch {self.seq}")
        if env["first_event"] != self.last_event + 1:
            raise ChainBroken(f"batch {env['seq']}: starts at event {env['first_event']}, expected {self.last_event + 1}")
        if self.store is not None and env["store"] != self.store:
            raise ChainBroken(f"batch {env['seq']}: store {env['store']!r}")
        try:
            self.public_key.verify(env["sig"], spec_signed_bytes(env))
        except InvalidSignature:
            raise ChainBroken(f"batch {env['seq']}: bad signature") from None
        body = body_of(env)
        if len(body["docs"]) != env["count"]:
            raise ChainBroken(f"batch {env['seq']}: count does not match the body")
        seqs = [d["seq"] for d in body["docs"]]
        if seqs != list(range(env["first_event"], env["last_event"] + 1)):
            raise ChainBroken(f"batch {env['seq']}: documents do not cover its events in order")
        self.seq, self.digest, self.last_event = env["seq"], spec_digest(env), env["last_event"]
        return body

    def accept_all(self, envelopes) -> list[dict]:
        return [self.accept(env) for env in envelopes]


def from_json(obj, binary_keys=("prev", "body", "sig", "public_key")):
    """Undo the JSON form of a GET: binaries came as standard base64."""
    if isinstance(obj, dict):
        return {k: (base64.b64decode(v) if k in binary_keys and isinstance(v, str) else from_json(v))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_json(v) for v in obj]
    return obj


def request(base_url: str, method: str, path: str, *, token: str | None, body: bytes | None = None,
            headers: dict | None = None, cafile: str | None = None, timeout: float = 40.0):
    """One plain HTTP request; returns (status, headers dict, decoded body or raw bytes)."""
    url = urllib.parse.urlsplit(base_url)
    if url.scheme == "https":
        context = ssl.create_default_context(cafile=cafile)
        conn = http.client.HTTPSConnection(url.hostname, url.port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    if body is not None:
        all_headers.setdefault("Content-Type", "application/msgpack")
    try:
        conn.request(method, path, body=body, headers=all_headers)
        resp = conn.getresponse()
        data = resp.read()
        got = {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()
    ctype = got.get("content-type", "")
    if ctype.startswith("application/json"):
        return resp.status, got, json.loads(data)
    if ctype.startswith("application/msgpack") and data:
        return resp.status, got, msgpack.unpackb(data, raw=False, strict_map_key=False)
    return resp.status, got, data
