"""The UP/1 HTTP API as a plain ASGI app (served by hypercorn's trio worker).

Reads (batches, status) use a read transaction of the store directly: LMDB readers never wait for
the writer. Everything that changes the store goes through `submit`, so it is one more request of
the core loop, answered only once durable.
"""
from __future__ import annotations

import base64
import json
import logging
import math
import re
import time
import urllib.parse

import msgpack
import trio

from core_ext import Request, errors, u64
from core_ext import asgi
from core_ext import tokens as bearer

from . import _day_close
from ._envelope import MASTER_KINDS, decode_envelope, to_jsonable, unpack
from ._handlers import BAD_SIGNATURE, PRUNED, STATUS
from ._keys import raw_public_key
from ._sealer import ACKED, FIRST_AVAILABLE, SealSignal, Settings, read_head

log = logging.getLogger("gateway.upstream")

PREFIX = "/upstream/v1"
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_WAIT_S = 30.0
_MASTER_PATH = re.compile(r"^/upstream/v1/master/([^/]+)$")
# Not in UP/1 itself: the back office closes a scanner's cycle count (scanners-and-files.md).
_COUNT_CLOSE_PATH = re.compile(r"^/upstream/v1/counts/([^/]+)/close$")
_packb = msgpack.Packer(use_bin_type=True).pack


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


def _from_json_doc(obj):
    # A signed document sent as JSON carries its binaries in base64, as GET answers do.
    if isinstance(obj, dict):
        for key in ("body", "sig"):
            if isinstance(obj.get(key), str):
                try:
                    obj[key] = base64.b64decode(obj[key], validate=True)
                except ValueError:
                    # A signature that is not even base64 is a bad signature (403), like a short one.
                    if key == "sig":
                        raise HttpError(403, BAD_SIGNATURE, "sig is not valid base64") from None
                    raise HttpError(400, errors.BAD_REQUEST, f"{key} is not valid base64",
                                    edge="malformed_body") from None
    return obj


def _int_param(query: dict, name: str, default: int, low: int, high: int) -> int:
    values = query.get(name)
    if not values:
        return default
    try:
        value = int(values[-1])
    except ValueError:
        raise HttpError(400, errors.BAD_REQUEST, f"{name} must be an integer, got {values[-1]!r}",
                        edge="bad_request") from None
    if not low <= value <= high:
        raise HttpError(400, errors.BAD_REQUEST, f"{name} must be between {low} and {high}, got {value}",
                        edge="bad_request")
    return value


def make_app(submit, read_store, config, metrics=None, *, store_id: str, public_key,
             signal: SealSignal | None = None, edge=None):
    """The UP/1 ASGI app.

    `submit` hands requests to the core loop; `read_store()` opens a read transaction (Store.read);
    `config` is the [upstream] section (token, body limit); `metrics` an upstream Metrics or None;
    `public_key` the store's (its raw bytes are in /status); `signal` wakes long polls after a seal;
    `edge(reason)` counts a request refused before the core (one of `core_ext.asgi.EDGE_REASONS`).
    """
    edge = edge or (lambda reason: None)
    settings = Settings.from_config(config)
    # The ERP's token, or its `sha256:` digest; `app.tokens.replace(...)` swaps it while serving.
    tokens = bearer.TokenTable({"erp": settings.token})
    raw_key = raw_public_key(public_key)

    def authorized(headers: dict) -> bool:
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        # Compared by digest in constant time; an empty configured token lets nobody in.
        return scheme == b"Bearer" and tokens.find(given) == "erp"

    # --- reads ------------------------------------------------------------------------------

    def read_batches(after: int, limit: int):
        with read_store() as tx:
            first = tx.meta(FIRST_AVAILABLE, 1)
            if after + 1 < first:
                raise HttpError(410, PRUNED, f"batches before {first} were pruned after acknowledgement",
                                first_available=first)
            last = read_head(tx).seq
            raws = _page(tx, after, limit, settings.page_max_bytes)
        return raws, after + len(raws) < last

    async def batches(query: dict, as_json: bool):
        after = _int_param(query, "after", 0, 0, 2 ** 63)
        limit = _int_param(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        wait_s = 0.0
        if query.get("wait"):
            try:
                wait_s = float(query["wait"][-1])
            except ValueError:
                raise HttpError(400, errors.BAD_REQUEST, f"wait must be a number of seconds, got {query['wait'][-1]!r}",
                                edge="bad_request") from None
            if not math.isfinite(wait_s) or wait_s < 0:
                raise HttpError(400, errors.BAD_REQUEST, f"wait must be between 0 and {MAX_WAIT_S:g}",
                                edge="bad_request")
            wait_s = min(wait_s, MAX_WAIT_S)
        deadline = trio.current_time() + wait_s
        while True:
            waiter = signal.waiter() if signal is not None else None
            # A page may be tens of megabytes: copy it out of LMDB off the event loop.
            raws, more = await trio.to_thread.run_sync(read_batches, after, limit)
            if raws or waiter is None or trio.current_time() >= deadline:
                break
            with trio.move_on_at(deadline):
                await waiter.wait()
        if as_json:
            return {"batches": [to_jsonable(decode_envelope(raw)) for raw in raws], "more": more}
        # The stored envelope bytes go out as they are: no decoding, no re-encoding.
        packer = msgpack.Packer(use_bin_type=True)
        return (b"\x82" + packer.pack("batches") + packer.pack_array_header(len(raws)) + b"".join(raws)
                + packer.pack("more") + packer.pack(more))

    def status():
        with read_store() as tx:
            head = read_head(tx)
            last_event = tx.last_seq()
            versions, pending = {}, {}
            for kind in MASTER_KINDS:
                row = tx.get("master", kind) or {}
                versions[kind] = row.get("version", 0)
                if row.get("pending"):
                    pending[kind] = [[p["version"], p["effective_ms"]] for p in row["pending"]]
            return {
                "store": store_id, "public_key": raw_key, "last_seq": head.seq, "acked_seq": tx.meta(ACKED, 0),
                "backlog": last_event - head.last_event, "last_event": last_event,
                "sealed_event": head.last_event, "first_available": tx.meta(FIRST_AVAILABLE, 1),
                "versions": versions, "pending": pending, "time_ms": int(time.time() * 1000),
            }

    # --- writes -----------------------------------------------------------------------------

    async def through_core(kind: str, body: dict) -> dict:
        response = await submit(Request(kind, body, source="erp", channel="erp"))
        answer = response.body
        if answer.get("ok"):
            return {k: v for k, v in answer.items() if k not in ("t", "re", "ok")}
        code = answer.get("err", errors.UNAVAILABLE)
        extra = {"errors": answer["errors"]} if answer.get("errors") is not None else {}
        raise HttpError(STATUS.get(code, 422), code, answer.get("msg", ""), **extra)

    def decode_request(raw: bytes, headers: dict):
        ctype = headers.get(b"content-type", b"").decode("latin-1").lower()
        if ctype.startswith("application/json"):
            try:
                value = asgi.decode_json(raw)
            except asgi.InvalidText as exc:
                # Decoded and checked here, once: the core and every answer see valid text only.
                raise HttpError(400, errors.BAD_REQUEST, str(exc), edge="invalid_text") from None
            except (ValueError, RecursionError):
                # RecursionError: nesting deeper than the parser's stack, from "[[[[..." alone.
                raise HttpError(400, errors.BAD_REQUEST, "the body is not valid JSON", edge="malformed_body") from None
            return _from_json_doc(value)
        # MessagePack's decoder refuses invalid UTF-8 (lone surrogates included) itself.
        try:
            return unpack(raw, "the body")
        except ValueError as exc:
            raise HttpError(400, errors.BAD_REQUEST, str(exc), edge="malformed_body") from None

    async def read_body(receive, headers: dict) -> bytes:
        limit = settings.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HttpError(413, "TOO_LARGE", f"the body is over the limit of {limit} bytes", edge="body_too_large")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HttpError(400, errors.BAD_REQUEST, "the client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HttpError(413, "TOO_LARGE", f"the body is over the limit of {limit} bytes", edge="body_too_large")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    # --- routing ----------------------------------------------------------------------------

    async def route(method: str, path: str, query: dict, headers: dict, receive, as_json: bool):
        if path == f"{PREFIX}/batches":
            _only(method, "GET")
            return await batches(query, as_json)
        if path == f"{PREFIX}/status":
            _only(method, "GET")
            return status()
        if path == f"{PREFIX}/ack":
            _only(method, "POST")
            body = decode_request(await read_body(receive, headers), headers)
            if not isinstance(body, dict):
                raise HttpError(400, errors.BAD_REQUEST, 'the body must be a map {"through": N}', edge="malformed_body")
            return await through_core("ack", {"through": body.get("through")})
        if path == f"{PREFIX}/movements":
            _only(method, "POST")
            doc = decode_request(await read_body(receive, headers), headers)
            return await through_core("movements", {"doc": doc})
        if path == f"{PREFIX}/day-close" or path.startswith(f"{PREFIX}/day/"):
            async def body():
                return decode_request(await read_body(receive, headers), headers)
            return await _day_close.route(method, path, body, through_core, read_store, HttpError, _only)
        match = _COUNT_CLOSE_PATH.match(path)
        if match:
            _only(method, "POST")
            body = decode_request(await read_body(receive, headers), headers)
            if not isinstance(body, dict) or not isinstance(body.get("id"), str):
                raise HttpError(400, errors.BAD_REQUEST, 'the body must be a map {"id": "<close id>"}',
                                edge="malformed_body")
            return await through_core("count_close", {"id": body["id"], "device": match.group(1)})
        match = _MASTER_PATH.match(path)
        if match:
            _only(method, "PUT")
            kind = match.group(1)
            if kind not in MASTER_KINDS:
                raise HttpError(404, "NOT_FOUND", f"unknown master-data kind {kind!r}; expected one of "
                                                  f"{', '.join(MASTER_KINDS)}", edge="not_found")
            doc = decode_request(await read_body(receive, headers), headers)
            return await through_core("master", {"kind": kind, "doc": doc})
        raise HttpError(404, "NOT_FOUND", f"no such resource {path!r}", edge="not_found")

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            await asgi.lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = {}
        for name, value in scope["headers"]:
            headers[name.lower()] = value
        as_json = b"application/json" in headers.get(b"accept", b"")
        route_name, status_code = "other", 200
        try:
            problem = asgi.header_problem(scope)
            if problem is not None:
                raise HttpError(431, "HEADERS_TOO_LARGE", problem[1], edge=problem[0])
            if not authorized(headers):
                # Nothing else is said: not whether the token was missing or wrong, not the route.
                route_name = "unauthorized"
                raise HttpError(401, "UNAUTHORIZED", "authentication required", edge="unauthorized")
            route_name = _route_name(scope["path"])
            query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
            answer = await route(scope["method"], scope["path"], query, headers, receive, as_json)
        except HttpError as exc:
            status_code = exc.status
            answer = {"error": exc.code, "message": exc.message, **exc.extra}
            if exc.edge:
                edge(exc.edge)
        extra_headers = [(b"www-authenticate", b"Bearer")] if status_code == 401 else []
        if isinstance(answer, bytes):
            payload, ctype = answer, "application/msgpack"
        elif as_json:
            payload, ctype = json.dumps(to_jsonable(answer)).encode(), "application/json"
        else:
            payload, ctype = _packb(answer), "application/msgpack"
        if metrics is not None:
            metrics.request(route_name, status_code)
        await asgi.respond(send, status_code, ctype, payload, extra=extra_headers)

    app.tokens = tokens
    return app


def _page(tx, after: int, limit: int, max_bytes: int) -> list[bytes]:
    """The stored envelopes after `after`: at most `limit`, and no more once `max_bytes` are taken
    (at least one), so a page of big batches never holds the gateway's memory ("at most M": the
    answer says `more` and the ERP asks again)."""
    raws, size = [], 0
    with tx.txn.cursor(db=tx.db["batches"]) as cur:
        if cur.set_range(u64(after + 1)):
            for _key, value in cur:
                raws.append(bytes(value))
                size += len(value)
                if len(raws) >= limit or size >= max_bytes:
                    break
    return raws


def _route_name(path: str) -> str:
    """The metric label of a path: one of a few fixed names, never the path itself."""
    if _MASTER_PATH.match(path):
        return "master"
    name = path[len(PREFIX) + 1:] if path.startswith(PREFIX + "/") else ""
    if name.startswith("day/"):
        return "day"
    return name if name in ("batches", "status", "ack", "movements", "day-close") else "other"


def _only(method: str, allowed: str) -> None:
    if method != allowed:
        raise HttpError(405, "METHOD_NOT_ALLOWED", f"use {allowed} here, not {method}", edge="method_not_allowed")
