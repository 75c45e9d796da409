"""POS/1: the ECR/1 messages over HTTP on the store LAN, as a plain ASGI callable.

hypercorn parses HTTP; this module only routes, authenticates, bounds and decodes bodies, turns each
call into one `Request` for the core, and maps the core's answer to a status code.
"""
from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass
from urllib.parse import unquote

import msgpack

from core_ext import Request, Submit, answer_refused, asgi, errors, limits, peer
from core_ext import tokens as bearer

from .._messages import id_problem
from ._metrics import Metrics

log = logging.getLogger("gateway.pos_api")

# Not an ECR/1 code: a terminal without a valid token never reaches the core.
UNAUTHORIZED = "UNAUTHORIZED"

JSON = "application/json"
MSGPACK = "application/msgpack"
_MSGPACK_TYPES = (MSGPACK, "application/x-msgpack", "application/vnd.msgpack")

BAD_REQUEST = errors.BAD_REQUEST
UNAVAILABLE = errors.UNAVAILABLE
STATUS_OF_ERR = {
    errors.BAD_REQUEST: 400,
    errors.UNKNOWN_ITEM: 404,
    errors.UNKNOWN_SALE: 404,
    errors.DUPLICATE_ID_CONFLICT: 409,
    errors.UNAVAILABLE: 503,
}
BUSINESS_REFUSAL = 422

# route name -> (method, request kind); the names are also the metrics' `route` label.
_POSTS = {"quote": "quote", "sales": "sale", "returns": "return", "drawer-counts": "drawer_count"}
_MAX_DEPTH = 32
# A path parameter is what the body field of the same name would be: (most characters, GS allowed).
_PARAM_LIMITS = {"members": (limits.MAX_TEXT, False), "stock": (limits.MAX_CODE, True),
                 "lanes_basket": (limits.MAX_TEXT, False)}


class _Refusal(Exception):
    """An answer decided before (or instead of) asking the core."""

    def __init__(self, status: int, err: str, msg: str, *, reason: str = "",
                 headers: tuple = (), edge: str = "", re: str | None = None):
        super().__init__(msg)
        self.status = status
        self.err = err
        self.msg = msg
        self.reason = reason or err
        self.headers = headers
        # The reason class (core_ext.asgi.EDGE_REASONS) of a refusal decided here, before the core.
        self.edge = edge
        # The request's id when it is known and itself acceptable (the answer's `re`).
        self.re = re


class _Disconnected(Exception):
    """The client went away while sending its body."""


@dataclass(frozen=True, slots=True)
class _Route:
    name: str
    method: str
    kind: str
    param: str = ""


def make_app(submit: Submit, tokens: dict[str, str], metrics: Metrics, *,
             max_body: int = 1 << 20, edge=None, client_certs: bool = False):
    """The POS/1 ASGI app: `tokens` maps terminal name -> bearer token (or `sha256:<hex>` of it);
    `edge(reason)` counts a request refused before the core (reason: one of
    `core_ext.asgi.EDGE_REASONS`); `client_certs`: each request's connection must carry a client
    certificate (ASGI TLS extension) whose CN is the terminal its token names."""
    return PosApp(submit, tokens, metrics, max_body=max_body, edge=edge, client_certs=client_certs)


class PosApp:
    def __init__(self, submit: Submit, tokens: dict[str, str], metrics: Metrics, *,
                 max_body: int = 1 << 20, edge=None, client_certs: bool = False):
        self.submit = submit
        self.tokens = bearer.TokenTable(tokens)
        self.client_certs = client_certs
        self.metrics = metrics
        self.max_body = max_body
        self.edge = edge or (lambda reason: None)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await asgi.lifespan(receive, send)
        elif scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": 1008})
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _http(self, scope, receive, send) -> None:
        started = time.perf_counter()
        headers = _headers(scope)
        terminal, route_name, re = "", "other", None
        fmt = _reply_format(scope["method"], headers)
        extra: tuple = ()
        try:
            problem = asgi.header_problem(scope)
            if problem is not None:
                raise _Refusal(431, BAD_REQUEST, problem[1], reason="HEADERS_TOO_LARGE", edge=problem[0],
                               headers=((b"connection", b"close"),))
            try:
                route, unrouted = _route(scope), None
                route_name = route.name
            except _Refusal as refusal:
                route, unrouted = None, refusal
            # Nobody learns anything, not even which routes exist, without a token.
            terminal = self._authenticate(headers)
            self._check_certificate(scope, terminal)
            if unrouted is not None:
                raise unrouted
            if route.method == "POST":
                fmt = _body_format(headers)
                body = await self._message(scope, receive, headers, fmt, route)
                re = body["id"]
            else:
                body = _query_body(route)
            status, answer = await self._ask(route, body, terminal)
            reason = "" if answer.get("ok") else str(answer.get("err"))
            if status == 503:
                extra = ((b"retry-after", b"1"),)
        except _Disconnected:
            return
        except _Refusal as refusal:
            status, reason, extra = refusal.status, refusal.reason, refusal.headers
            answer = answer_refused(refusal.re or re, refusal.err, refusal.msg)
            if refusal.edge:
                self.edge(refusal.edge)
        # Counted before sending, so that a client which has its answer also sees it counted.
        self.metrics.requests.labels(terminal, route_name, str(status)).inc()
        if reason:
            self.metrics.rejects.labels(reason).inc()
        self.metrics.seconds.labels(route_name).observe(time.perf_counter() - started)
        await _send(send, status, answer, fmt, extra)

    def _authenticate(self, headers: dict) -> str:
        values = headers.get(b"authorization", [])
        scheme, _, given = values[0].partition(b" ") if len(values) == 1 else (b"", b"", b"")
        given = given.strip()
        # Compared by digest with every token, in constant time (core_ext.tokens).
        found = self.tokens.find(given) if scheme.lower() == b"bearer" else ""
        if not found:
            raise _Refusal(401, UNAUTHORIZED, "a valid 'Authorization: Bearer <terminal token>' "
                                              "header is required",
                           headers=((b"www-authenticate", b'Bearer realm="pos"'),), edge="unauthorized")
        return found

    def _check_certificate(self, scope, terminal: str) -> None:
        """With client certificates: the certificate's CN must be the terminal the token names, so a
        token copied off one till is no use from a machine holding another till's certificate."""
        if not self.client_certs:
            return
        name = peer.client_common_name(scope)
        if name != terminal:
            raise _Refusal(403, UNAUTHORIZED, "this token belongs to another terminal than the client "
                                              "certificate names", reason="CERTIFICATE_MISMATCH", edge="unauthorized")

    async def _message(self, scope, receive, headers: dict, fmt: str, route: _Route) -> dict:
        """A POST's message for the core: its body decoded, its type the route's, its id usable. A
        refusal after the body is read names the id (the answer's `re`) when it is usable."""
        message = await self._body(receive, headers, fmt)
        re = _usable_id(message)
        if message.get("t", route.kind) != route.kind:
            raise _Refusal(400, BAD_REQUEST, f"t is {message['t']!r} but {scope['path']} takes {route.kind!r}",
                           edge="bad_request", re=re)
        problem = id_problem(message)
        if problem:
            raise _Refusal(400, BAD_REQUEST, problem, edge="bad_request", re=re)
        return {**message, "t": route.kind}

    async def _body(self, receive, headers: dict, fmt: str) -> dict:
        lengths = headers.get(b"content-length", [])
        if lengths:
            try:
                length = int(lengths[0])
            except ValueError:
                length = -1
            if length < 0:
                raise _Refusal(400, BAD_REQUEST, "Content-Length is not a number of bytes", edge="bad_request")
            if length > self.max_body:
                raise self._too_large()
        chunks, size = [], 0
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                raise _Disconnected()
            if event["type"] != "http.request":
                continue
            chunk = event.get("body", b"")
            size += len(chunk)
            # Counted while streaming too: a chunked body has no Content-Length to check first.
            if size > self.max_body:
                raise self._too_large()
            chunks.append(chunk)
            if not event.get("more_body", False):
                break
        return decode_body(b"".join(chunks), fmt)

    def _too_large(self) -> _Refusal:
        return _Refusal(413, BAD_REQUEST, f"the body is over {self.max_body} bytes",
                        reason="TOO_LARGE", headers=((b"connection", b"close"),), edge="body_too_large")

    async def _ask(self, route: _Route, body: dict, terminal: str) -> tuple[int, dict]:
        request = Request(kind=route.kind, body=body, source=terminal, channel="pos")
        try:
            response = await self.submit(request)
        except Exception:
            log.exception("pos_api: the core failed on %s from %s", route.kind, terminal)
            # Whether or not it was applied, the same id again is safe: it is applied at most once.
            raise _Refusal(503, UNAVAILABLE, "the gateway could not answer; send the same request "
                                             "again later", headers=((b"retry-after", b"1"),))
        answer = response.body
        if answer.get("ok"):
            created = route.kind in ("sale", "return", "drawer_count") and not response.replayed
            return (201 if created else 200), answer
        return STATUS_OF_ERR.get(answer.get("err"), BUSINESS_REFUSAL), answer


def decode_body(raw: bytes, fmt: str) -> dict:
    """The message of a POST body; raises only `_Refusal` (400) for anything it cannot take.

    Decoded and checked once, here: past this point every string is valid Unicode, so every answer
    (which may repeat some of them) can be encoded.
    """
    try:
        if fmt == JSON:
            value = asgi.decode_json(raw)
        else:
            value = msgpack.unpackb(raw, raw=False, strict_map_key=True, ext_hook=_no_ext)
    except (asgi.InvalidText, UnicodeDecodeError) as exc:
        # MessagePack's decoder refuses invalid UTF-8 (a surrogate included) with UnicodeDecodeError.
        raise _Refusal(400, BAD_REQUEST, f"the body holds invalid text: {exc}", edge="invalid_text",
                       re=_usable_id(getattr(exc, "value", None))) from None
    # The decoders raise a zoo of errors on bad bytes (ValueError, RecursionError, msgpack's own);
    # all of them mean the same thing to the terminal.
    except Exception as exc:  # noqa: BLE001
        kind = "JSON" if fmt == JSON else "MessagePack"
        raise _Refusal(400, BAD_REQUEST, f"the body is not {kind}: {exc}", edge="malformed_body") from None
    if not isinstance(value, dict):
        raise _Refusal(400, BAD_REQUEST, f"the body must be a map, not {_type_name(value)}",
                       edge="malformed_body")
    problem = _not_plain(value)
    if problem:
        raise _Refusal(400, BAD_REQUEST, problem, edge="malformed_body")
    return value


def _usable_id(message) -> str | None:
    """The message's id if it is acceptable, else None: a bad id may not even be encodable."""
    rid = message.get("id") if isinstance(message, dict) else None
    return rid if limits.text_problem(rid, limits.MAX_ID) is None else None


def _no_ext(code: int, data: bytes):
    raise ValueError(f"extension type {code} is not part of ECR/1")


def _not_plain(value) -> str:
    """Why `value` is not a tree of maps with string keys, lists and scalars ("" when it is)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > _MAX_DEPTH:
            return f"the body nests deeper than {_MAX_DEPTH} levels"
        if isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    return f"map keys must be strings, not {_type_name(key)}"
                stack.append((sub, depth + 1))
        elif isinstance(item, list):
            stack.extend((sub, depth + 1) for sub in item)
        elif isinstance(item, int) and not isinstance(item, bool) and not -2**63 <= item < 2**64:
            # JSON has no limit, MessagePack (the ids' digest, the store) stops at 64 bits.
            return f"the integer {item} does not fit in 64 bits"
        elif not (item is None or isinstance(item, (bool, int, float, str))):
            return f"{_type_name(item)} values are not part of ECR/1"
    return ""


def _type_name(value) -> str:
    names = {dict: "a map", list: "a list", str: "a string", bytes: "binary", bool: "a boolean",
             int: "an integer", float: "a float", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _headers(scope) -> dict[bytes, list[bytes]]:
    headers: dict[bytes, list[bytes]] = {}
    for name, value in scope.get("headers", []):
        headers.setdefault(bytes(name).lower(), []).append(bytes(value))
    return headers


def _media_type(value: bytes) -> str:
    return value.split(b";", 1)[0].strip().lower().decode("latin-1")


def _body_format(headers: dict) -> str:
    values = headers.get(b"content-type", [])
    if not values:
        return JSON
    media = _media_type(values[0])
    if media == JSON:
        return JSON
    if media in _MSGPACK_TYPES:
        return MSGPACK
    raise _Refusal(415, BAD_REQUEST, f"Content-Type {media!r} is neither {JSON} nor {MSGPACK}",
                   reason="UNSUPPORTED_MEDIA_TYPE", edge="unsupported_media_type")


def _reply_format(method: str, headers: dict) -> str:
    """The answer's type: a POST's own body type, else JSON unless Accept asks for MessagePack."""
    if method == "POST":
        try:
            return _body_format(headers)
        except _Refusal:
            return JSON
    accepted = b",".join(headers.get(b"accept", []))
    if any(_media_type(part) in _MSGPACK_TYPES for part in accepted.split(b",")):
        return MSGPACK
    return JSON


def _route(scope) -> _Route:
    """The route of a request, from the raw path so that an id holding `%2F` stays one segment."""
    raw = scope.get("raw_path") or scope["path"].encode()
    raw = raw.split(b"?", 1)[0]
    try:
        parts = [unquote(p.decode("ascii"), errors="strict") for p in raw.split(b"/")]
    except UnicodeError:
        raise _Refusal(400, BAD_REQUEST, "the path is not percent-encoded UTF-8", edge="invalid_text") from None
    method = scope["method"]
    if parts[:3] != ["", "pos", "v1"] or len(parts) < 4:
        raise _not_found(scope)
    rest = parts[3:]
    if len(rest) == 1 and rest[0] in _POSTS:
        route = _Route(rest[0], "POST", _POSTS[rest[0]])
    elif len(rest) == 2 and rest[0] == "members":
        route = _Route("members", "GET", "member", rest[1])
    elif len(rest) == 2 and rest[0] == "stock":
        route = _Route("stock", "GET", "stock", rest[1])
    elif len(rest) == 3 and rest[0] == "lanes" and rest[2] == "basket":
        route = _Route("lanes_basket", "GET", "lane_basket", rest[1])
    else:
        raise _not_found(scope)
    if method != route.method:
        raise _Refusal(405, BAD_REQUEST, f"{scope['path']} takes {route.method}, not {method}",
                       reason="METHOD_NOT_ALLOWED", headers=((b"allow", route.method.encode()),),
                       edge="method_not_allowed")
    if route.method == "GET":
        max_len, allow_gs = _PARAM_LIMITS[route.name]
        problem = limits.text_problem(route.param, max_len, allow_gs=allow_gs)
        if problem is not None:
            what = "lane" if route.name == "lanes_basket" else route.kind
            raise _Refusal(400, BAD_REQUEST, f"the {what} in the path {problem}", edge="bad_request")
    return route


def _not_found(scope) -> _Refusal:
    return _Refusal(404, BAD_REQUEST, f"there is no POS/1 route {scope['method']} {scope['path']}",
                    reason="NOT_FOUND", edge="not_found")


def _query_body(route: _Route) -> dict:
    # Queries commit nothing, so their ids are not remembered; a fresh one keeps them apart in logs.
    qid = "q-" + secrets.token_hex(8)
    if route.kind == "member":
        return {"t": "member", "id": qid, "member": route.param}
    if route.kind == "stock":
        return {"t": "stock", "id": qid, "code": route.param}
    return {"id": qid, "lane": route.param}


# One encoder for every answer: `json.dumps` with options builds a new one each call.
_encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


async def _send(send, status: int, answer: dict, fmt: str, extra: tuple) -> None:
    try:
        if fmt == MSGPACK:
            payload = msgpack.packb(answer, use_bin_type=True)
        else:
            payload = _encode_json(answer).encode()
    except (TypeError, ValueError):
        log.exception("pos_api: cannot encode the answer to %r", answer.get("re"))
        status, fmt = 500, JSON
        payload = json.dumps(answer_refused(None, UNAVAILABLE, "the answer could not be encoded")).encode()
    await asgi.respond(send, status, fmt, payload, extra=extra)
