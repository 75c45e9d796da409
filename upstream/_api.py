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
from dataclasses import dataclass, field

import msgpack
import trio

from core_ext import Request, errors, u64
from core_ext import asgi, peer
from core_ext import tokens as bearer

from . import _day_close
from ._envelope import MASTER_KINDS, decode_envelope, to_jsonable, unpack
from ._handlers import BAD_SIGNATURE, PRUNED, STATUS
from ._http_error import HttpError, only
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
             signal: SealSignal | None = None, edge=None) -> "UpstreamApp":
    """The UP/1 ASGI app.

    `submit` hands requests to the core loop; `read_store()` opens a read transaction (Store.read);
    `config` is the [upstream] section (token, body limit); `metrics` an upstream Metrics or None;
    `public_key` the store's (its raw bytes are in /status); `signal` wakes long polls after a seal;
    `edge(reason)` counts a request refused before the core (one of `core_ext.asgi.EDGE_REASONS`).
    """
    return UpstreamApp(submit, read_store, Settings.from_config(config), metrics, store_id=store_id,
                       raw_key=raw_public_key(public_key), signal=signal, edge=edge or (lambda reason: None))


@dataclass(slots=True)
class _Call:
    """One HTTP request as the routes see it: its line and headers decoded once, its body read and
    decoded only by the route that takes one."""

    method: str
    path: str
    query: dict
    headers: dict
    receive: object
    as_json: bool
    max_body_bytes: int

    def only(self, allowed: str) -> None:
        only(self.method, allowed)

    async def body(self):
        return _decode_body(await _read_body(self.receive, self.headers, self.max_body_bytes), self.headers)


@dataclass(eq=False)
class UpstreamApp:
    """The UP/1 ASGI app, in layers: `__call__` (ASGI: lifespan, one HTTP request in, one answer
    out), `_answer` (header limits, then the ERP's token, then the route), `_route` (the path to its
    handler, each of which checks its method and decodes its own input), then the handlers.

    `tokens` is the ERP's token table: `app.tokens.replace(...)` swaps it while serving.
    """

    submit: object
    read_store: object
    settings: Settings
    metrics: object
    store_id: str
    raw_key: bytes
    signal: SealSignal | None
    edge: object
    tokens: bearer.TokenTable = field(init=False)

    def __post_init__(self) -> None:
        # The ERP's token, or its `sha256:` digest.
        self.tokens = bearer.TokenTable({"erp": self.settings.token})

    # --- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await asgi.lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = {name.lower(): value for name, value in scope["headers"]}
        as_json = b"application/json" in headers.get(b"accept", b"")
        route_name, status_code, answer = await self._answer(scope, headers, receive, as_json)
        extra_headers = [(b"www-authenticate", b"Bearer")] if status_code == 401 else []
        if isinstance(answer, bytes):
            payload, ctype = answer, "application/msgpack"
        elif as_json:
            payload, ctype = json.dumps(to_jsonable(answer)).encode(), "application/json"
        else:
            payload, ctype = _packb(answer), "application/msgpack"
        if self.metrics is not None:
            self.metrics.request(route_name, status_code)
        await asgi.respond(send, status_code, ctype, payload, extra=extra_headers)

    async def _answer(self, scope, headers: dict, receive, as_json: bool) -> tuple[str, int, object]:
        """(metric label of the route, HTTP status, answer: a map, or bytes already packed)."""
        route_name = "other"
        try:
            problem = asgi.header_problem(scope)
            if problem is not None:
                raise HttpError(431, "HEADERS_TOO_LARGE", problem[1], edge=problem[0])
            if not self._authorized(headers):
                # Nothing else is said: not whether the token was missing or wrong, not the route.
                route_name = "unauthorized"
                raise HttpError(401, "UNAUTHORIZED", "authentication required", edge="unauthorized")
            self._check_certificate(scope)
            route_name = _route_name(scope["path"])
            query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
            call = _Call(scope["method"], scope["path"], query, headers, receive, as_json,
                         self.settings.max_body_bytes)
            return route_name, 200, await self._route(call)
        except HttpError as exc:
            if exc.edge:
                self.edge(exc.edge)
            return route_name, exc.status, {"error": exc.code, "message": exc.message, **exc.extra}

    def _check_certificate(self, scope) -> None:
        """With `tls_client_name`: the client certificate (already verified against the CA by the
        handshake) must name the ERP, so another client of the same CA (a till) cannot use the ERP's
        token."""
        name = self.settings.tls_client_name
        if name and peer.client_common_name(scope) != name:
            raise HttpError(403, "UNAUTHORIZED", "the client certificate does not name the ERP "
                                                 "(upstream.tls_client_name)", edge="unauthorized")

    def _authorized(self, headers: dict) -> bool:
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        # Compared by digest in constant time; an empty configured token lets nobody in.
        return scheme == b"Bearer" and self.tokens.find(given) == "erp"

    # --- routing ------------------------------------------------------------------------------

    async def _route(self, call: _Call):
        path = call.path
        fixed = {f"{PREFIX}/batches": self._batches, f"{PREFIX}/status": self._status, f"{PREFIX}/ack": self._ack,
                 f"{PREFIX}/movements": self._movements}.get(path)
        if fixed is not None:
            return await fixed(call)
        if path == f"{PREFIX}/day-close" or path.startswith(f"{PREFIX}/day/"):
            return await _day_close.route(call, self._through_core, self.read_store)
        match = _COUNT_CLOSE_PATH.match(path)
        if match:
            return await self._count_close(call, match.group(1))
        match = _MASTER_PATH.match(path)
        if match:
            return await self._master(call, match.group(1))
        raise HttpError(404, "NOT_FOUND", f"no such resource {path!r}", edge="not_found")

    # --- reads --------------------------------------------------------------------------------

    async def _batches(self, call: _Call):
        call.only("GET")
        after = _int_param(call.query, "after", 0, 0, 2 ** 63)
        limit = _int_param(call.query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        deadline = trio.current_time() + _wait_param(call.query)
        while True:
            waiter = self.signal.waiter() if self.signal is not None else None
            # A page may be tens of megabytes: copy it out of LMDB off the event loop.
            raws, more = await trio.to_thread.run_sync(self._read_batches, after, limit)
            if raws or waiter is None or trio.current_time() >= deadline:
                break
            with trio.move_on_at(deadline):
                await waiter.wait()
        if call.as_json:
            return {"batches": [to_jsonable(decode_envelope(raw)) for raw in raws], "more": more}
        # The stored envelope bytes go out as they are: no decoding, no re-encoding.
        packer = msgpack.Packer(use_bin_type=True)
        return (b"\x82" + packer.pack("batches") + packer.pack_array_header(len(raws)) + b"".join(raws)
                + packer.pack("more") + packer.pack(more))

    def _read_batches(self, after: int, limit: int) -> tuple[list[bytes], bool]:
        with self.read_store() as tx:
            first = tx.meta(FIRST_AVAILABLE, 1)
            if after + 1 < first:
                raise HttpError(410, PRUNED, f"batches before {first} were pruned after acknowledgement",
                                first_available=first)
            last = read_head(tx).seq
            raws = _page(tx, after, limit, self.settings.page_max_bytes)
        return raws, after + len(raws) < last

    async def _status(self, call: _Call) -> dict:
        call.only("GET")
        with self.read_store() as tx:
            head = read_head(tx)
            last_event = tx.last_seq()
            versions, pending = _master_versions(tx)
            return {
                "store": self.store_id, "public_key": self.raw_key, "last_seq": head.seq,
                "acked_seq": tx.meta(ACKED, 0), "backlog": last_event - head.last_event, "last_event": last_event,
                "sealed_event": head.last_event, "first_available": tx.meta(FIRST_AVAILABLE, 1),
                "versions": versions, "pending": pending, "time_ms": int(time.time() * 1000),
            }

    # --- writes, each one more request of the core loop ---------------------------------------

    async def _ack(self, call: _Call) -> dict:
        call.only("POST")
        body = await call.body()
        if not isinstance(body, dict):
            raise HttpError(400, errors.BAD_REQUEST, 'the body must be a map {"through": N}', edge="malformed_body")
        return await self._through_core("ack", {"through": body.get("through")})

    async def _movements(self, call: _Call) -> dict:
        call.only("POST")
        return await self._through_core("movements", {"doc": await call.body()})

    async def _count_close(self, call: _Call, device: str) -> dict:
        call.only("POST")
        body = await call.body()
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise HttpError(400, errors.BAD_REQUEST, 'the body must be a map {"id": "<close id>"}',
                            edge="malformed_body")
        return await self._through_core("count_close", {"id": body["id"], "device": device})

    async def _master(self, call: _Call, kind: str) -> dict:
        call.only("PUT")
        if kind not in MASTER_KINDS:
            raise HttpError(404, "NOT_FOUND", f"unknown master-data kind {kind!r}; expected one of "
                                              f"{', '.join(MASTER_KINDS)}", edge="not_found")
        return await self._through_core("master", {"kind": kind, "doc": await call.body()})

    async def _through_core(self, kind: str, body: dict) -> dict:
        response = await self.submit(Request(kind, body, source="erp", channel="erp"))
        answer = response.body
        if answer.get("ok"):
            return {k: v for k, v in answer.items() if k not in ("t", "re", "ok")}
        code = answer.get("err", errors.UNAVAILABLE)
        extra = {"errors": answer["errors"]} if answer.get("errors") is not None else {}
        raise HttpError(STATUS.get(code, 422), code, answer.get("msg", ""), **extra)


# --- decoding what a request brings ---------------------------------------------------------------

def _wait_param(query: dict) -> float:
    """A long poll's `wait`, in seconds (0 when absent), at most MAX_WAIT_S."""
    if not query.get("wait"):
        return 0.0
    try:
        wait_s = float(query["wait"][-1])
    except ValueError:
        raise HttpError(400, errors.BAD_REQUEST, f"wait must be a number of seconds, got {query['wait'][-1]!r}",
                        edge="bad_request") from None
    if not math.isfinite(wait_s) or wait_s < 0:
        raise HttpError(400, errors.BAD_REQUEST, f"wait must be between 0 and {MAX_WAIT_S:g}", edge="bad_request")
    return min(wait_s, MAX_WAIT_S)


async def _read_body(receive, headers: dict, limit: int) -> bytes:
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


def _decode_body(raw: bytes, headers: dict):
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


def _master_versions(tx) -> tuple[dict, dict]:
    """The version in force of each master-data kind, and the versions waiting for their time."""
    versions, pending = {}, {}
    for kind in MASTER_KINDS:
        row = tx.get("master", kind) or {}
        versions[kind] = row.get("version", 0)
        if row.get("pending"):
            pending[kind] = [[p["version"], p["effective_ms"]] for p in row["pending"]]
    return versions, pending


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

