"""The few ASGI steps every HTTP app of the gateway shares (POS/1, UP/1, metrics).

Only ASGI messages: hypercorn parses HTTP, these functions never touch a socket.
"""
from __future__ import annotations

import json

from ._limits import MAX_HEADER_BYTES, MAX_HEADERS, invalid_text


async def lifespan(receive, send) -> None:
    """Answer the server's startup and shutdown: the apps hold no state of their own to set up."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def respond(send, status: int, content_type: str, body: bytes, *, extra=(), head: bool = False) -> None:
    """One whole response; `head` sends the headers of a GET without its body."""
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store"), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


# --- what every listener refuses before an app looks further ---------------------------------

# The reason classes of a request refused at the edge (before the core): the values of the
# `reason` label of `gateway_http_refused_total`, a fixed few whatever the clients send.
EDGE_REASONS = ("headers_too_large", "too_many_headers", "unauthorized", "not_found", "method_not_allowed",
                "body_too_large", "unsupported_media_type", "malformed_body", "invalid_text", "bad_request")


class InvalidText(ValueError):
    """A body that decodes, but to a string that is not valid Unicode (a lone surrogate).

    `value` is what was decoded (None for bytes that are not UTF-8): an answer may still name the
    request by its id when that id itself is fine.
    """

    def __init__(self, problem: str, value=None):
        super().__init__(problem)
        self.value = value


def header_problem(scope) -> tuple[str, str] | None:
    """(reason class, words) when the request's header block is over the limits, else None.

    hypercorn (h11) bounds only a header block still arriving: one that came whole in a single read
    is parsed whatever its size, and nothing bounds the number of fields. So both are checked here,
    on what the server parsed, the same for every listener.
    """
    headers = scope.get("headers") or ()
    if len(headers) > MAX_HEADERS:
        return "too_many_headers", f"the request has {len(headers)} header fields, at most {MAX_HEADERS} are allowed"
    # As on the wire: "METHOD target HTTP/1.1\r\n", "name: value\r\n" each, and the empty line.
    query = scope.get("query_string") or b""
    target = len(scope.get("raw_path") or scope.get("path", "").encode()) + (len(query) + 1 if query else 0)
    size = len(scope.get("method", "")) + target + 12 + sum(len(n) + len(v) + 4 for n, v in headers) + 2
    if size > MAX_HEADER_BYTES:
        return "headers_too_large", (f"the request line and headers are {size} bytes, "
                                     f"at most {MAX_HEADER_BYTES} are allowed")
    return None


def decode_json(raw: bytes, where: str = "the body"):
    """JSON from outside: ValueError when it is not JSON (NaN and Infinity are not), `InvalidText`
    when it is but holds text that is not valid Unicode (invalid UTF-8, a lone `\\ud800` escape)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidText(f"{where} is not valid UTF-8 (byte {exc.start})") from None
    value = json.loads(text, parse_constant=_no_constant)
    # Strict UTF-8 never decodes to a surrogate: only a `\u` escape can put one in, so text without
    # any (nearly every body) needs no walk of its strings.
    if "\\u" in text and (problem := invalid_text(value, where)) is not None:
        raise InvalidText(problem, value)
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")
