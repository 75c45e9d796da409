"""The bytes of UP/1: batch envelopes and the ERP's signed documents, built and checked.

Nothing here does I/O or touches the store: it is the part an ERP team reads to know exactly what
is signed. `signed_bytes` and `document_signed_bytes` are the spec's byte layouts; change nothing in
them without changing the spec.
"""
from __future__ import annotations

import base64
import gc
import hashlib
import io
import threading

import msgpack
import zstandard
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core_ext import GatewayError, docbytes, is_int

VERSION = 1
ZERO_DIGEST = bytes(32)
CODECS = ("zstd", "none")
MASTER_KINDS = ("catalog", "promotions", "members", "recalls", "policy")
DOCUMENT_KINDS = MASTER_KINDS + ("movements",)
# A decompressed body larger than this is refused rather than allocated (a zstd bomb stays small).
MAX_BODY_BYTES = 512 << 20


class UpstreamError(GatewayError):
    """Base of every error of the upstream package."""


class EnvelopeError(UpstreamError):
    """A batch envelope is malformed (`reason` "malformed"), badly signed ("signature"), or does not
    continue the chain ("chain"). `seq` is the batch's seq when it could be read."""

    def __init__(self, problem: str, *, seq: int | None = None, reason: str = "malformed"):
        where = f"batch {seq}" if seq is not None else "batch"
        super().__init__(f"{where}: {problem}")
        self.problem = problem
        self.seq = seq
        self.reason = reason


class DocumentError(UpstreamError):
    """A signed ERP document is malformed (`reason` "malformed") or its signature does not verify
    ("signature")."""

    def __init__(self, problem: str, *, reason: str = "malformed"):
        super().__init__(problem)
        self.problem = problem
        self.reason = reason


_packb = msgpack.Packer(use_bin_type=True).pack


# What MessagePack (and so the signed bytes) can carry; JSON can say more and must be refused.
MAX_UINT = 2 ** 64 - 1



def _is_uint(value) -> bool:
    return is_int(value) and 0 <= value <= MAX_UINT


def unpack(raw: bytes, what: str):
    """MessagePack from outside: anything wrong becomes a ValueError naming `what`."""
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises ExtraData, FormatError, StackError, TypeError, ...
        raise ValueError(f"{what} is not valid MessagePack ({type(exc).__name__})") from None


def unpack_tree(raw: bytes, what: str):
    """`unpack` with the cyclic garbage collector paused: MessagePack decodes to trees, which hold no
    cycles for it to find, yet a body of thousands of documents would be scanned by it again and
    again while being built (three times the decoding's own cost)."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        return unpack(raw, what)
    finally:
        if paused:
            gc.enable()


def to_jsonable(obj):
    """`obj` with every bytes value in standard base64: the JSON form of UP/1 answers."""
    if isinstance(obj, bytes):
        return base64.b64encode(obj).decode("ascii")
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------------
# Batch envelopes

def signed_bytes(env: dict) -> bytes:
    """`msgpack.packb([v, store, seq, prev, created_ms, first_event, last_event, count, codec, body])`."""
    return _packb([env["v"], env["store"], env["seq"], env["prev"], env["created_ms"], env["first_event"],
                   env["last_event"], env["count"], env["codec"], env["body"]])


def digest(env: dict) -> bytes:
    """SHA-256 of `signed_bytes + sig`: what the next batch's `prev` must be."""
    return hashlib.sha256(signed_bytes(env) + env["sig"]).digest()


class _Zstd(threading.local):
    """One compressor and one decompressor per thread: a zstd context is costly to make and must not
    be shared between threads."""

    def __init__(self) -> None:
        # The frame records its content size, so a reader can refuse an oversized body up front.
        # Level 1: on bodies of documents and alerts, faster than the default 3 and no larger.
        self.compressor = zstandard.ZstdCompressor(level=1, write_content_size=True)
        self.decompressor = zstandard.ZstdDecompressor()


_zstd = _Zstd()


def compress(raw: bytes, codec: str) -> bytes:
    if codec == "zstd":
        return _zstd.compressor.compress(raw)
    if codec == "none":
        return raw
    raise ValueError(f"unknown codec {codec!r}; expected one of {', '.join(CODECS)}")


def seal_envelope(*, store: str, seq: int, prev: bytes, created_ms: int, first_event: int, last_event: int,
                  body: dict, private_key: Ed25519PrivateKey, codec: str = "zstd") -> dict:
    """Pack, compress and sign `body` ({"docs", "stock", "alerts"}) into the envelope of batch `seq`."""
    env, _digest = seal_packed(store=store, seq=seq, prev=prev, created_ms=created_ms, first_event=first_event,
                               last_event=last_event, packed_body=_packb(body), count=len(body["docs"]),
                               private_key=private_key, codec=codec)
    return env


def seal_packed(*, store: str, seq: int, prev: bytes, created_ms: int, first_event: int, last_event: int,
                packed_body: bytes, count: int, private_key: Ed25519PrivateKey,
                codec: str = "zstd") -> tuple[dict, bytes]:
    """`seal_envelope` of a body already packed (`count` documents): (the envelope, its digest).
    The signed bytes are built once, for the signature and the digest both."""
    env = {
        "v": VERSION, "store": store, "seq": seq, "prev": prev, "created_ms": created_ms,
        "first_event": first_event, "last_event": last_event, "count": count,
        "codec": codec, "body": compress(packed_body, codec),
    }
    signed = signed_bytes(env)
    env["sig"] = private_key.sign(signed)
    return env, hashlib.sha256(signed + env["sig"]).digest()


def encode_envelope(env: dict) -> bytes:
    return _packb(env)


def check_envelope(env) -> None:
    """Raise EnvelopeError unless `env` has every field of the spec with the right type."""
    if not isinstance(env, dict):
        raise EnvelopeError(f"is a {type(env).__name__}, not a map")
    seq = env.get("seq") if is_int(env.get("seq")) else None
    ints = ("v", "seq", "created_ms", "first_event", "last_event", "count")
    for name in ints:
        if not is_int(env.get(name)):
            raise EnvelopeError(f"field {name!r} is missing or not an integer", seq=seq)
        if not _is_uint(env[name]):
            raise EnvelopeError(f"field {name!r} is not between 0 and 2**64-1", seq=seq)
    if env["v"] != VERSION:
        raise EnvelopeError(f"version {env['v']} is not {VERSION}", seq=seq)
    if not isinstance(env.get("store"), str):
        raise EnvelopeError("field 'store' is missing or not a string", seq=seq)
    for name, size in (("prev", 32), ("sig", 64)):
        value = env.get(name)
        if not isinstance(value, bytes) or len(value) != size:
            raise EnvelopeError(f"field {name!r} is missing or not {size} bytes", seq=seq)
    if not isinstance(env.get("body"), bytes):
        raise EnvelopeError("field 'body' is missing or not bytes", seq=seq)
    if env.get("codec") not in CODECS:
        raise EnvelopeError(f"codec {env.get('codec')!r} is not one of {', '.join(CODECS)}", seq=seq)
    if env["seq"] < 1 or env["first_event"] < 1 or env["last_event"] < env["first_event"] or env["count"] < 0:
        raise EnvelopeError(
            f"numbers out of range (seq {env['seq']}, events {env['first_event']}..{env['last_event']},"
            f" count {env['count']})", seq=seq)


def decode_envelope(raw: bytes) -> dict:
    """An envelope from bytes received; raises only EnvelopeError."""
    try:
        env = unpack(raw, "the envelope")
    except ValueError as exc:
        raise EnvelopeError(str(exc)) from None
    check_envelope(env)
    return env


def verify_envelope(env: dict, public_key: Ed25519PublicKey, prev_digest: bytes | None,
                    *, expect_seq: int | None = None, expect_first_event: int | None = None) -> bytes:
    """Check one batch: shape, signature, and (when given) that it continues the chain.

    `prev_digest` is the digest of the batch before (ZERO_DIGEST before seq 1; None to check the
    batch alone). Returns this batch's digest, the next one's `prev`. Raises EnvelopeError.
    """
    check_envelope(env)
    seq = env["seq"]
    if expect_seq is not None and seq != expect_seq:
        raise EnvelopeError(f"arrived where batch {expect_seq} was expected (lost, reordered or replayed)",
                            seq=seq, reason="chain")
    signed = signed_bytes(env)
    try:
        public_key.verify(env["sig"], signed)
    except InvalidSignature:
        raise EnvelopeError("signature does not verify with the store's public key",
                            seq=seq, reason="signature") from None
    if seq == 1 and env["prev"] != ZERO_DIGEST:
        raise EnvelopeError("is the first batch but its prev is not 32 zero bytes", seq=seq, reason="chain")
    if prev_digest is not None and env["prev"] != prev_digest:
        raise EnvelopeError("prev is not the digest of the batch before (a batch lost, altered or reordered)",
                            seq=seq, reason="chain")
    if expect_first_event is not None and env["first_event"] != expect_first_event:
        raise EnvelopeError(f"starts at event {env['first_event']}, not {expect_first_event}",
                            seq=seq, reason="chain")
    return hashlib.sha256(signed + env["sig"]).digest()


def _decompressed(env: dict, max_bytes: int) -> bytes:
    """The body's bytes of a checked envelope, decompressed; raises only EnvelopeError."""
    seq = env.get("seq")
    data = env["body"]
    if env["codec"] != "zstd":
        return data
    try:
        params = zstandard.get_frame_parameters(data)
        if params.content_size > max_bytes and params.content_size != zstandard.CONTENTSIZE_UNKNOWN:
            raise EnvelopeError(f"body would decompress to {params.content_size} bytes, over {max_bytes}",
                                seq=seq)
        if params.content_size != zstandard.CONTENTSIZE_UNKNOWN:
            # The size is known and within the limit: one call, no stream.
            raw = _zstd.decompressor.decompress(data)
        else:
            reader = _zstd.decompressor.stream_reader(io.BytesIO(data))
            raw = reader.read(max_bytes + 1)
    except zstandard.ZstdError as exc:
        raise EnvelopeError(f"body is not valid zstd ({exc})", seq=seq) from None
    if len(raw) > max_bytes:
        raise EnvelopeError(f"body decompresses to more than {max_bytes} bytes", seq=seq)
    return raw


def _checked_count(env: dict, docs: int) -> None:
    if docs != env["count"]:
        raise EnvelopeError(f"body holds {docs} documents, the envelope says {env['count']}", seq=env.get("seq"))


def _decoded(env: dict, raw: bytes) -> dict:
    seq = env.get("seq")
    try:
        body = unpack_tree(raw, "the body")
    except ValueError as exc:
        raise EnvelopeError(str(exc), seq=seq) from None
    if not isinstance(body, dict):
        raise EnvelopeError("body is not a map", seq=seq)
    for name in ("docs", "stock", "alerts"):
        if not isinstance(body.get(name), list):
            raise EnvelopeError(f"body field {name!r} is missing or not a list", seq=seq)
    _checked_count(env, len(body["docs"]))
    return body


def decode_body(env: dict, *, max_bytes: int = MAX_BODY_BYTES) -> dict:
    """The body map of a checked envelope, decompressed; raises only EnvelopeError."""
    return _decoded(env, _decompressed(env, max_bytes))


def count_body(env: dict, *, max_bytes: int = MAX_BODY_BYTES) -> docbytes.BodyCounts:
    """What the body of a checked envelope holds, counted (documents by type, stock rows, alerts),
    as `decode_body` would find it, without building its documents; raises only EnvelopeError."""
    raw = _decompressed(env, max_bytes)
    counts = docbytes.body_counts(raw)
    if counts is None:
        # Not a body: decoding it says what is wrong.
        body = _decoded(env, raw)
        counts = docbytes.BodyCounts(len(body["docs"]), docbytes.count_docs(body["docs"]), len(body["stock"]),
                                     len(body["alerts"]))
    _checked_count(env, counts.docs)
    return counts


# ---------------------------------------------------------------------------------------------
# Signed ERP documents (master data and movements)

def document_signed_bytes(doc: dict) -> bytes:
    """`msgpack.packb([v, kind, version, issued_ms, effective_ms or 0, body])`."""
    return _packb([doc["v"], doc["kind"], doc["version"], doc["issued_ms"], doc.get("effective_ms") or 0,
                   doc["body"]])


def sign_document(kind: str, version: int, body_obj, private_key: Ed25519PrivateKey, issued_ms: int,
                  effective_ms: int | None = None) -> dict:
    """A document the ERP sends: `body_obj` packed, the whole signed with the ERP's key."""
    if kind not in DOCUMENT_KINDS:
        raise ValueError(f"unknown document kind {kind!r}; expected one of {', '.join(DOCUMENT_KINDS)}")
    doc = {"v": VERSION, "kind": kind, "version": version, "issued_ms": issued_ms, "body": _packb(body_obj)}
    if effective_ms is not None:
        doc["effective_ms"] = effective_ms
    doc["sig"] = private_key.sign(document_signed_bytes(doc))
    return doc


def check_document(doc) -> None:
    """Raise DocumentError unless `doc` has the fields of a signed document with the right types."""
    if not isinstance(doc, dict):
        raise DocumentError(f"the document is a {type(doc).__name__}, not a map")
    for name in ("v", "version", "issued_ms"):
        if not is_int(doc.get(name)):
            raise DocumentError(f"field {name!r} is missing or not an integer")
    if doc["v"] != VERSION:
        raise DocumentError(f"version of the format {doc['v']} is not {VERSION}")
    if doc.get("kind") not in DOCUMENT_KINDS:
        raise DocumentError(f"kind {doc.get('kind')!r} is not one of {', '.join(DOCUMENT_KINDS)}")
    for name in ("version", "issued_ms"):
        if not _is_uint(doc[name]):
            raise DocumentError(f"field {name!r} must be between 0 and 2**64-1")
    eff = doc.get("effective_ms")
    if eff is not None and not _is_uint(eff):
        raise DocumentError("field 'effective_ms' must be an integer between 0 and 2**64-1")
    if not isinstance(doc.get("body"), bytes):
        raise DocumentError("field 'body' is missing or not bytes")
    sig = doc.get("sig")
    if not isinstance(sig, bytes) or len(sig) != 64:
        # No signature, or a cut one, is a signature that does not verify (UP/1: 403), not a malformed document.
        raise DocumentError("field 'sig' is missing or not 64 bytes", reason="signature")


def verify_document(doc, public_key: Ed25519PublicKey):
    """Check a signed document's shape and signature; returns its body, unpacked.

    Raises DocumentError: reason "signature" when the ERP's key did not sign exactly these bytes.
    """
    check_document(doc)
    try:
        public_key.verify(doc["sig"], document_signed_bytes(doc))
    except InvalidSignature:
        raise DocumentError("the signature does not verify with the ERP's public key", reason="signature") from None
    try:
        return unpack(doc["body"], "the document body")
    except ValueError as exc:
        raise DocumentError(str(exc)) from None
