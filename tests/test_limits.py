"""The limits of ECR/1 and of the HTTP edges, on every way in, over real HTTP on loopback.

Invalid text is a 400 and never a retry; strings, lists and types are bounded the same for the serial
line and POS/1 (one check in the single writer); header blocks are bounded on every listener (431).
"""
from __future__ import annotations

import json
import logging
import socket
import threading
from urllib.parse import quote as pct, urlsplit

import msgpack
import pytest
import trio
from hypothesis import HealthCheck, given, settings, strategies as st
from prometheus_client import CollectorRegistry

from core_ext import Store, check_request, errors, limits
from core_ext._asgi import EDGE_REASONS, header_problem
from core_ext._barcodes import Scan, ScanError
from device_plugins.pos_api import Metrics, make_app
from device_plugins.scanner_serial import Rejected, Scanned, ScannerConnection
from device_plugins.scanner_serial._protocol import within_limits
from gateway._app_core import build_core
from gateway._http import serve_asgi
from gateway._metrics import EdgeMetrics, make_app as make_metrics_app

from ._data import GTIN_STRIPS, NOW, STORE, seed, stored_on_hand
from ._upstream import TOKEN, serve as serve_upstream
from .test_adversarial_core import snapshot
from .test_pos_api import AUTH, JSON_AUTH, TOKENS, _request, call

GS = "\x1d"
# Every code an answer may carry: ECR/1's table, and POS/1's own for a missing token.
STABLE_CODES = {errors.BAD_REQUEST, errors.UNKNOWN_ITEM, errors.RECALLED_LOT, errors.EXPIRED_LOT,
                errors.INSUFFICIENT_STOCK, errors.PAYMENT_MISMATCH, errors.POINTS_INSUFFICIENT,
                errors.UNKNOWN_SALE, errors.RETURN_EXCEEDS_SALE, errors.DUPLICATE_ID_CONFLICT,
                errors.UNAVAILABLE, "UNAUTHORIZED"}
POST_PATHS = {"quote": "/pos/v1/quote", "sale": "/pos/v1/sales", "return": "/pos/v1/returns"}


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def edge(registry):
    return EdgeMetrics(registry)


@pytest.fixture
async def pos(core, nursery, registry, edge):
    """The base URL of a POS/1 listener on loopback, over the real core."""
    app = make_app(core.submit, TOKENS, Metrics(registry), edge=edge.counter("pos_api"))
    [url] = await nursery.start(serve_asgi, app, "127.0.0.1:0")
    return url


def refused(registry, listener: str, reason: str) -> float:
    return registry.get_sample_value("gateway_http_refused_total", {"listener": listener, "reason": reason}) or 0.0


async def post_raw(url: str, path: str, raw: bytes, content_type: str = "application/json"):
    """(status, answer): the answer must decode as strict UTF-8 JSON (or MessagePack)."""
    status, head, body = await call(url, "POST", path, raw, {**AUTH, "Content-Type": content_type})
    if content_type == "application/json":
        return status, json.loads(body.decode("utf-8"))
    return status, msgpack.unpackb(body, raw=False)


def sale_body(sid: str, **fields) -> dict:
    return {"id": sid, "lines": [{"code": "SKU-4", "qty": 1}], "payments": [{"method": "cash", "cents": 350}],
            **fields}


def body_for(kind: str, sid: str) -> dict:
    if kind == "return":
        return {"id": sid, "orig": "S-0", "lines": [{"sku": "SKU-4", "qty": 1}]}
    body = sale_body(sid)
    if kind == "quote":
        del body["payments"]
    return body


# --- 1. invalid text is a BAD_REQUEST, never a retry --------------------------------------------

@pytest.mark.parametrize("kind", ["quote", "sale", "return"])
@pytest.mark.parametrize("field, where", [
    ("id", "id"), ("code", "lines[0].code"), ("member", "member"), ("lot", "lines[0].lot"),
    ("coupon", "coupons[0]"),
])
async def test_a_lone_surrogate_is_a_400_never_a_retry(pos, core, caplog, kind, field, where):
    body = body_for(kind, "U-1")
    if field == "id":
        body["id"] = "\ud800"
    elif field in ("code", "lot"):
        body["lines"][0]["sku" if kind == "return" and field == "code" else field] = "L\udc00T"
        where = "lines[0].sku" if kind == "return" and field == "code" else where
    elif field == "member":
        body["member"] = "M\udfff"
    else:
        body["coupons"] = ["\ud83d"]
    before = snapshot(core.store)
    # json.dumps writes the lone surrogate as the escape a client would send: `"\ud800"`.
    with caplog.at_level(logging.WARNING):
        status, answer = await post_raw(pos, POST_PATHS[kind], json.dumps(body).encode())
    assert status == 400 and answer["err"] == "BAD_REQUEST" and answer["ok"] is False, answer
    assert f"{where} is not valid text" in answer["msg"]
    assert answer["re"] == (None if field == "id" else "U-1")
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert snapshot(core.store) == before


@pytest.mark.parametrize("kind", ["quote", "sale", "return"])
async def test_invalid_utf8_in_messagepack_is_a_400(pos, core, kind):
    # msgpack cannot even pack a lone surrogate: the bytes are built by hand (fixstr of ED A0 80).
    raw = msgpack.packb(body_for(kind, "U-2"), use_bin_type=True)
    raw = raw.replace(b"\xa3U-2", b"\xa3\xed\xa0\x80")
    status, answer = await post_raw(pos, POST_PATHS[kind], raw, "application/msgpack")
    assert status == 400 and answer["err"] == "BAD_REQUEST" and "invalid text" in answer["msg"]
    assert answer["re"] is None


@pytest.mark.parametrize("path, status, words", [
    ("/pos/v1/members/" + pct("\ud800".encode("utf-8", "surrogatepass")), 400, "percent-encoded UTF-8"),
    ("/pos/v1/members/M%00", 400, "U+0000"),
    ("/pos/v1/members/%E2%80%AEM1", 400, "U+202E"),
    ("/pos/v1/members/" + "M" * (limits.MAX_TEXT + 1), 400, f"at most {limits.MAX_TEXT}"),
    ("/pos/v1/stock/" + "C" * (limits.MAX_CODE + 1), 400, f"at most {limits.MAX_CODE}"),
    ("/pos/v1/lanes/" + "L" * (limits.MAX_TEXT + 1) + "/basket", 400, "lane in the path"),
    ("/pos/v1/lanes/L%0A1/basket", 400, "U+000A"),
    # A scanned code carries GS between its fields: allowed in a stock code, so this is looked up.
    ("/pos/v1/stock/" + pct(f"]d201{GTIN_STRIPS}10A1{GS}21X"), 200, ""),
    ("/pos/v1/members/" + "M" * limits.MAX_TEXT, 404, "no member"),
])
async def test_path_parameters_are_held_to_the_body_fields_limits(pos, path, status, words):
    got, _head, raw = await call(pos, "GET", path, None, AUTH)
    answer = json.loads(raw.decode("utf-8"))
    assert got == status, answer
    assert words in answer.get("msg", "")


# --- 2. one check of every ECR/1 request, in the single writer ------------------------------------

LONG = "L" * 10_000
LIMIT_CASES = [
    ("sale", sale_body("X-1", lines=[{"code": "SKU-1", "qty": 1, "lot": LONG}]),
     "lines[0].lot is 10000 characters long, at most 64 are allowed"),
    ("sale", sale_body("X-2", lines=[{"code": "SKU-1", "qty": 1, "serial": LONG}]),
     "lines[0].serial is 10000 characters long"),
    ("sale", sale_body("X\x00-3"), "id holds the character U+0000 at position 1"),
    ("quote", {"id": "\u202eQ-4", "lines": [{"code": "SKU-4", "qty": 1}]}, "id holds the character U+202E"),
    ("sale", sale_body("X-5", lane=7), "lane must be a string, got int"),
    ("quote", {"id": "Q-6", "lines": [{"code": "SKU-4", "qty": 1}] * (limits.MAX_LINES + 1)},
     f"lines has {limits.MAX_LINES + 1} entries, at most {limits.MAX_LINES} are allowed"),
    ("quote", {"id": "Q-7", "lines": [{"code": "SKU-4", "qty": 1}], "coupons": ["C"] * (limits.MAX_COUPONS + 1)},
     f"coupons has {limits.MAX_COUPONS + 1} entries"),
    ("quote", {"id": "Q-8", "lines": [{"code": "C" * (limits.MAX_CODE + 1), "qty": 1}]},
     f"lines[0].code is {limits.MAX_CODE + 1} characters long"),
    ("quote", {"id": "Q-9", "member": "M" * 65, "lines": [{"code": "SKU-4", "qty": 1}]}, "member is 65 characters"),
    ("quote", {"id": "Q-10", "coupons": ["SPRING10", "C" * 65], "lines": [{"code": "SKU-4", "qty": 1}]},
     "coupons[1] is 65 characters"),
    ("quote", {"id": "Q-11", "lines": [{"code": "SKU-1", "qty": 1, "expiry": 20270101}]},
     "lines[0].expiry must be an ISO date"),
    ("quote", {"id": "Q-12", "lines": [{"code": "SKU-4", "qty": "1"}]}, "lines[0].qty must be an integer, got str"),
    ("quote", {"id": "Q-13", "lines": [{"code": "SKU-4", "qty": 1}, "SKU-4"]}, "lines[1] must be a map"),
    ("sale", sale_body("X-14", payments=[{"method": 1, "cents": 350}]), "payments[0].method must be a string"),
    ("sale", sale_body("X-15", payments=[{"method": "cash", "cents": "350"}]), "payments[0].cents must be an integer"),
    ("sale", sale_body("X-16", payments={"cash": 350}), "payments must be a list"),
    ("return", {"id": "R-17", "orig": "O" * 65, "lines": [{"sku": "SKU-4", "qty": 1}]}, "orig is 65 characters"),
    ("return", {"id": "R-18", "orig": "S-0", "lines": [{"sku": "SKU-1", "qty": 1, "lot": "L" * 65}]},
     "lines[0].lot is 65 characters"),
    ("return", {"id": "R-19", "orig": "S-0", "lines": [{"sku": "SKU-4", "qty": 1}], "reason": "r" * 257},
     "reason is 257 characters"),
    ("return", {"id": "R-20", "lines": [{"sku": "SKU-4", "qty": 1}]}, "orig is missing"),
    ("member", {"id": "K-21", "member": "M\x07"}, "member holds the character U+0007"),
    ("stock", {"id": "K-22", "code": "C" * (limits.MAX_CODE + 1)}, f"code is {limits.MAX_CODE + 1} characters"),
    ("ping", {"id": "P" * (limits.MAX_ID + 1)}, f"id is {limits.MAX_ID + 1} characters long"),
]


@pytest.mark.parametrize("kind, body, words", LIMIT_CASES, ids=[f"{c[0]}-{c[2][:24]}" for c in LIMIT_CASES])
async def test_the_core_refuses_what_is_over_the_limits_and_changes_nothing(core, kind, body, words):
    before = snapshot(core.store)
    res = await core.request(kind, {**body, "t": kind})
    assert res.body["ok"] is False and res.body["err"] == "BAD_REQUEST", res.body
    assert words in res.body["msg"]
    assert snapshot(core.store) == before


async def test_a_long_lot_is_not_sold_from_the_unallocated_balance(core):
    """The finding: a 10,000-character lot was sold as units beyond the ledger while real lots had stock."""
    with core.store.read() as tx:
        before = stored_on_hand(tx, "SKU-1")
    res = await core.request("sale", {"id": "LL-1", "lines": [{"code": "SKU-1", "qty": 1, "lot": LONG}],
                                      "payments": [{"method": "cash", "cents": 1990}]})
    assert res.body["err"] == "BAD_REQUEST"
    with core.store.read() as tx:
        assert stored_on_hand(tx, "SKU-1") == before and tx.get("ids", "lane1:LL-1") is None


@pytest.mark.parametrize("kind, body", [
    ("quote", {"id": "I" * limits.MAX_ID, "lines": [{"code": "SKU-1", "qty": 1, "lot": "A" * limits.MAX_TEXT}]}),
    ("quote", {"id": "A-2", "lines": [{"code": "SKU-4", "qty": 1}] * limits.MAX_LINES,
               "coupons": [f"C{i}" for i in range(limits.MAX_COUPONS)], "member": "M1", "lane": "1"}),
    ("quote", {"id": "A-3", "lines": [{"code": f"]d201{GTIN_STRIPS}10A1{GS}21SER", "qty": 1}]}),
    ("quote", {"id": "A-4", "lane": "", "lines": [{"sku": "SKU-4", "qty": 1}]}),
    ("stock", {"id": "A-5", "code": f"]d201{GTIN_STRIPS}10A1{GS}21SER"}),
    ("ping", {"id": "A-6"}),
])
async def test_what_is_at_the_limits_is_taken(core, kind, body):
    res = await core.request(kind, {**body, "t": kind})
    assert res.body["ok"] is True, res.body


@pytest.mark.parametrize("kind, body, words", [c for c in LIMIT_CASES if c[0] in POST_PATHS],
                         ids=[f"{c[0]}-{c[2][:24]}" for c in LIMIT_CASES if c[0] in POST_PATHS])
async def test_pos_and_the_serial_line_get_the_same_answer(rig, pos, kind, body, words):
    status, answer = await post_raw(pos, POST_PATHS[kind], json.dumps(body).encode())
    assert status == 400 and words in answer["msg"], answer
    [serial] = await rig.request({**body, "t": kind})
    assert (serial["err"], serial["msg"]) == (answer["err"], answer["msg"])


def test_check_request_names_the_field():
    body = {"id": "S-1", "lines": [{"code": "SKU-1", "qty": 1}] * 3 + [{"code": "SKU-1", "qty": 1, "lot": LONG}]}
    with pytest.raises(Exception) as caught:
        check_request("quote", body)
    assert caught.value.code == "BAD_REQUEST"
    assert caught.value.message == "lines[3].lot is 10000 characters long, at most 64 are allowed"
    check_request("quote", {"id": "S-1", "lines": [{"code": "SKU-1", "qty": 1}]})  # and fine is fine


# --- scans ---------------------------------------------------------------------------------------

def test_a_scan_longer_than_a_sale_line_takes_is_rejected_at_the_scanner():
    # A valid GS1 string (three company-internal fields of 90) of 297 characters: parsed, but no
    # terminal could send it as a line's code.
    line = (f"]d201{GTIN_STRIPS}91" + "A" * 90 + GS + "92" + "B" * 90 + GS + "93" + "C" * 90).encode()
    conn = ScannerConnection()
    conn.receive_data(line + b"\r\n", 0.0)
    [event] = [conn.next_event()]
    assert isinstance(event, Rejected) and event.code == "too_long" and f"at most {limits.MAX_CODE}" in event.reason
    conn.receive_data(f"]d201{GTIN_STRIPS}10A1".encode() + b"\r\n", 0.0)
    assert isinstance(conn.next_event(), Scanned)


@pytest.mark.parametrize("field", ["lot", "serial"])
def test_a_scanned_lot_or_serial_over_the_limit_is_rejected(field):
    scan = Scan(raw="x", symbology=None, kind="gs1", gtin=GTIN_STRIPS, **{field: "Z" * (limits.MAX_TEXT + 1)})
    with pytest.raises(ScanError) as caught:
        within_limits(scan)
    assert caught.value.code == f"{field}_too_long" and f"at most {limits.MAX_TEXT}" in caught.value.reason
    fine = Scan(raw="x", symbology=None, kind="gs1", gtin=GTIN_STRIPS, **{field: "Z" * limits.MAX_TEXT})
    assert within_limits(fine) is fine


# --- 4. header blocks: size and count, on every listener ---------------------------------------------

def exchange(url: str, data: bytes) -> tuple[int, bytes]:
    """Send `data` as it is on a fresh connection; (status, body) of the answer, read to the close."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered (431) and closed before all of it was read
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def get_with(path: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: gateway", "Connection: close", *(f"{n}: {v}" for n, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@pytest.fixture
async def listeners(nursery, registry, edge, upstream):
    """The three listeners of the gateway, each counting its refusals at the edge."""
    pos_app = make_app(upstream.submit, TOKENS, Metrics(registry), edge=edge.counter("pos_api"))
    [pos_url] = await nursery.start(serve_asgi, pos_app, "127.0.0.1:0")
    metrics_app = make_metrics_app(registry, lambda: (True, {}), lambda: (True, {}), edge=edge.counter("metrics"))
    [metrics_url] = await nursery.start(serve_asgi, metrics_app, "127.0.0.1:0")
    up = await serve_upstream(nursery, upstream, edge=edge.counter("upstream"))
    return {"pos_api": (pos_url, "/pos/v1/lanes/1/basket", AUTH["Authorization"]),
            "metrics": (metrics_url, "/healthz", ""),
            "upstream": (up.url, "/upstream/v1/status", f"Bearer {TOKEN}")}


def auth(token: str) -> list[tuple[str, str]]:
    return [("Authorization", token)] if token else []


@pytest.mark.parametrize("listener", ["pos_api", "upstream", "metrics"])
async def test_big_header_blocks_and_many_headers_are_431(listeners, registry, listener):
    url, path, token = listeners[listener]
    ok = get_with(path, auth(token))
    assert (await trio.to_thread.run_sync(exchange, url, ok))[0] == 200
    # Up to the limits: served.
    fill = limits.MAX_HEADERS - 2 - len(auth(token))  # Host and Connection count too
    at_limit = get_with(path, auth(token) + [(f"X-F{i}", "v") for i in range(fill)])
    assert (await trio.to_thread.run_sync(exchange, url, at_limit))[0] == 200
    # One field more: refused by the app, which counts it.
    over = get_with(path, auth(token) + [(f"X-F{i}", "v") for i in range(fill + 1)])
    assert (await trio.to_thread.run_sync(exchange, url, over))[0] == 431
    assert refused(registry, listener, "too_many_headers") == 1
    # A 100 KB header and ten thousand headers: refused whether the server or the app sees it first.
    for data in (get_with(path, auth(token) + [("X-Big", "b" * 100_000)]),
                 get_with(path, auth(token) + [(f"X-{i}", "v") for i in range(10_000)])):
        assert (await trio.to_thread.run_sync(exchange, url, data))[0] == 431
    # And the listener still serves.
    assert (await trio.to_thread.run_sync(exchange, url, ok))[0] == 200


def scope_with(headers: list, path: str = "/x") -> dict:
    return {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
            "headers": headers}


def test_the_header_block_is_measured_as_on_the_wire():
    base = len(b"GET /x HTTP/1.1\r\n") + len(b"\r\n")
    pad = limits.MAX_HEADER_BYTES - base - len(b"x-pad: \r\n")
    assert header_problem(scope_with([(b"x-pad", b"p" * pad)])) is None
    reason, words = header_problem(scope_with([(b"x-pad", b"p" * (pad + 1))]))
    assert reason == "headers_too_large" and f"at most {limits.MAX_HEADER_BYTES}" in words
    many = [(b"x", b"")] * (limits.MAX_HEADERS + 1)
    assert header_problem(scope_with(many))[0] == "too_many_headers"
    assert header_problem(scope_with(many[:-1])) is None


async def test_a_big_header_block_that_arrives_whole_is_refused_by_the_app(core, registry, edge):
    """h11 bounds only a header block still arriving; the app refuses one that came in one piece."""
    app = make_app(core.submit, TOKENS, Metrics(registry), edge=edge.counter("pos_api"))
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    headers = [(b"authorization", AUTH["Authorization"].encode()), (b"x-big", b"b" * 100_000)]
    await app(scope_with(headers, "/pos/v1/lanes/1/basket"), receive, send)
    assert sent[0]["status"] == 431
    answer = json.loads(sent[1]["body"])
    assert answer["ok"] is False and answer["err"] == "BAD_REQUEST"
    assert refused(registry, "pos_api", "headers_too_large") == 1


def test_edge_labels_stay_bounded(registry):
    edge = EdgeMetrics(registry)
    count = edge.counter("pos_api")
    count("something a client made up")
    assert refused(registry, "pos_api", "bad_request") == 1
    with pytest.raises(ValueError):
        edge.counter("a listener nobody configured")
    assert "bad_request" in EDGE_REASONS


async def test_refusals_at_the_edge_are_counted_by_listener_and_class(pos, registry):
    await call(pos, "GET", "/pos/v1/lanes/1/basket", None, {})
    await call(pos, "GET", "/pos/v1/nowhere", None, AUTH)
    await post_raw(pos, "/pos/v1/quote", b'{"id": "\\ud800"}')
    await post_raw(pos, "/pos/v1/quote", b"{not json")
    assert refused(registry, "pos_api", "unauthorized") == 1
    assert refused(registry, "pos_api", "not_found") == 1
    assert refused(registry, "pos_api", "invalid_text") == 1
    assert refused(registry, "pos_api", "malformed_body") == 1
    # A refusal by the core (BAD_REQUEST on a limit) is not an edge refusal.
    await post_raw(pos, "/pos/v1/quote", json.dumps({"id": "Q", "lines": [{"code": "SKU-4", "qty": 1,
                                                                           "lot": LONG}]}).encode())
    assert refused(registry, "pos_api", "bad_request") == 0


async def test_the_whole_gateway_counts_refusals_at_each_listener(tmp_path, nursery):
    from gateway._app import Gateway
    from gateway._config import load_config
    from .test_gateway_e2e import make_keys, write_config
    make_keys(tmp_path)
    gateway = await nursery.start(Gateway(load_config(write_config(tmp_path))).run)
    urls = {name: found[0] for name, found in gateway.urls.items()}
    assert (await call(urls["pos_api"], "GET", "/pos/v1/lanes/1/basket"))[0] == 401
    assert (await call(urls["upstream"], "GET", "/upstream/v1/status"))[0] == 401
    many = get_with("/healthz", [(f"X-{i}", "v") for i in range(limits.MAX_HEADERS)])
    assert (await trio.to_thread.run_sync(exchange, urls["metrics"], many))[0] == 431
    status, _head, text = await call(urls["metrics"], "GET", "/metrics")
    assert status == 200
    for listener, reason in (("pos_api", "unauthorized"), ("upstream", "unauthorized"),
                             ("metrics", "too_many_headers")):
        assert (f'gateway_http_refused_total{{listener="{listener}",reason="{reason}"}} 1.0'
                in text.decode()), listener
    nursery.cancel_scope.cancel()


# --- hypothesis: arbitrary bodies never make a 5xx, and a refused one commits nothing ----------------

class PosInAThread:
    """A core loop and a POS/1 listener in a trio loop of their own thread, so that a sync hypothesis
    test can send many bodies to one running gateway (a loop per example would start hypercorn
    hundreds of times)."""

    def __init__(self, store: Store):
        self.store = store
        self.url = ""
        self._started = threading.Event()
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        self._started.wait(30)
        if self._failure is not None or not self.url:
            raise RuntimeError("the POS/1 listener did not start") from self._failure
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)
        if self._failure is not None:
            raise self._failure

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported by __exit__ in the test's thread
            self._failure = exc
            self._started.set()

    async def _main(self) -> None:
        async with trio.open_nursery() as nursery:
            loop = build_core(self.store, STORE, clock=lambda: NOW)
            await nursery.start(loop.run)
            app = make_app(loop.submit, TOKENS, Metrics(CollectorRegistry()))
            [self.url] = await nursery.start(serve_asgi, app, "127.0.0.1:0")
            self._started.set()
            await trio.to_thread.run_sync(self._stop.wait)
            nursery.cancel_scope.cancel()


@pytest.fixture(scope="module")
def pos_thread(tmp_path_factory):
    store = Store(str(tmp_path_factory.mktemp("limits") / "data"))
    seed(store)
    with PosInAThread(store) as served:
        yield served
    store.close()


_bad_text = st.one_of(st.sampled_from(["\ud800", "a\udfffb", "L\x00T", "\u202eLOT", "", GS, "\x1b[31m"]),
                      st.sampled_from([65, 257, 10_000]).map(lambda n: "x" * n))
_good_text = st.sampled_from(["SKU-1", "SKU-2", "SKU-4", "4711", "A1", "B2", "C3", "M1", "M2", "1", "cash", "card",
                              "points", "SPRING10", f"]d201{GTIN_STRIPS}10A1"])
_text = st.one_of(_good_text, _bad_text, st.text(max_size=8),
                  st.text(st.characters(categories=["Cs", "Cc", "Lu"]), max_size=4))
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), _text)
_value = st.recursive(_scalar, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(_text, kids, max_size=3),
                      max_leaves=8)
_line = st.fixed_dictionaries({}, optional={
    "code": st.one_of(_text, _value), "sku": st.one_of(_text, _value), "qty": st.one_of(st.integers(-2, 3), _value),
    "lot": st.one_of(_text, _value), "serial": st.one_of(_text, _value),
    "expiry": st.one_of(st.sampled_from(["2027-03-31", "2020-01-01", "31/12/2027"]), _value)})
_payment = st.fixed_dictionaries({"method": st.one_of(st.sampled_from(["cash", "card", "points"]), _value),
                                  "cents": st.one_of(st.integers(0, 20_000), _value)})
_known = st.fixed_dictionaries(
    {"id": st.one_of(st.integers(0, 10**6).map(lambda n: f"H-{n}"), _text, _value)},
    optional={
        "lines": st.one_of(st.lists(_line, max_size=3), _value,
                           st.just([{"code": "SKU-4", "qty": 1}] * (limits.MAX_LINES + 1))),
        "payments": st.one_of(st.lists(_payment, max_size=2), _value),
        "coupons": st.one_of(st.lists(_text, max_size=3), st.just(["C"] * (limits.MAX_COUPONS + 1)), _value),
        "member": st.one_of(_text, _value), "lane": st.one_of(_text, _value), "orig": st.one_of(_text, _value),
        "reason": st.one_of(_text, _value), "t": _value,
    })
# Whatever else a client adds, under any key.
_body = st.tuples(_known, st.dictionaries(_text, _value, max_size=2)).map(lambda pair: {**pair[1], **pair[0]})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(path=st.sampled_from(sorted(POST_PATHS.values())), body=_body)
def test_arbitrary_bodies_get_a_stable_answer_and_a_refusal_commits_nothing(pos_thread, path, body):
    before = snapshot(pos_thread.store)
    # ensure_ascii: a lone surrogate goes out as the `\udXXX` escape a JSON client would write.
    raw = json.dumps(body, ensure_ascii=True).encode()
    status, _head, reply = _request(pos_thread.url, "POST", path, raw, JSON_AUTH)
    assert 200 <= status < 300 or 400 <= status < 500, (status, reply[:300])
    answer = json.loads(reply.decode("utf-8"))
    assert isinstance(answer["ok"], bool) and answer["t"] == "res"
    assert answer["re"] is None or isinstance(answer["re"], str)
    if answer["ok"]:
        assert status in (200, 201)
    else:
        assert answer["err"] in STABLE_CODES and isinstance(answer["msg"], str) and answer["msg"]
    if not answer["ok"] or path == POST_PATHS["quote"]:
        assert snapshot(pos_thread.store) == before
