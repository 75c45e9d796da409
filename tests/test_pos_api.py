"""POS/1 over real HTTP on loopback: routing, tokens, body types and limits, statuses, and the real core."""
from __future__ import annotations

import http.client
import json
from functools import partial
from urllib.parse import urlsplit

import msgpack
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from core_ext import Request, Response
from device_plugins.pos_api import STATUS_OF_ERR, Metrics, make_app
from device_plugins.pos_api._app import _Refusal, decode_body
from gateway._http import serve_asgi
from ._data import stored_on_hand

TOKENS = {"lane1": "tok-lane1-secret", "kiosk": "tok-kiosk-secret"}
AUTH = {"Authorization": "Bearer tok-lane1-secret"}
JSON_AUTH = {**AUTH, "Content-Type": "application/json"}


def _request(url: str, method: str, path: str, body=None, headers=None, *, chunks=None):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        if chunks is not None:
            try:
                conn.request(method, path, body=iter(chunks), headers=headers or {}, encode_chunked=True)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered and closed before the last chunk (a 413 mid-stream): read it
        else:
            conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


async def call(url, method, path, body=None, headers=None, **kw):
    return await trio.to_thread.run_sync(partial(_request, url, method, path, body, headers, **kw))


async def post_json(url, path, message, headers=JSON_AUTH):
    status, head, raw = await call(url, "POST", path, json.dumps(message).encode(), headers)
    assert head["content-type"] == "application/json"
    return status, json.loads(raw)


class FakeCore:
    """Answers with `answer(request)`; a sale or return id seen before is answered as a replay."""

    def __init__(self, answer=lambda r: {"ok": True}):
        self.answer = answer
        self.requests: list[Request] = []
        self.committed: set[str] = set()

    async def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        body = {"t": "res", "re": request.body.get("id"), **self.answer(request)}
        key = f"{request.source}:{request.body.get('id')}"
        replayed = request.kind in ("sale", "return") and key in self.committed
        if body["ok"] and request.kind in ("sale", "return"):
            self.committed.add(key)
        return Response(body, replayed=replayed)


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def serve_pos(nursery, registry):
    """`await serve_pos(submit, max_body=...)` -> the base URL of a POS/1 listener on loopback."""

    async def start(submit, **kwargs):
        app = make_app(submit, TOKENS, Metrics(registry), **kwargs)
        [url] = await nursery.start(serve_asgi, app, "127.0.0.1:0")
        return url

    return start


# --- routes and tokens --------------------------------------------------------------------------

@pytest.mark.parametrize("method, path, message, kind, expected", [
    ("POST", "/pos/v1/quote", {"id": "Q1", "lines": [{"code": "SKU-1", "qty": 1}]}, "quote",
     {"t": "quote", "id": "Q1", "lines": [{"code": "SKU-1", "qty": 1}]}),
    ("POST", "/pos/v1/sales", {"id": "S1", "lines": [], "payments": []}, "sale",
     {"t": "sale", "id": "S1", "lines": [], "payments": []}),
    ("POST", "/pos/v1/returns", {"t": "return", "id": "R1", "orig": "S1"}, "return",
     {"t": "return", "id": "R1", "orig": "S1"}),
    ("GET", "/pos/v1/members/M%2042%2F7", None, "member", {"t": "member", "member": "M 42/7"}),
    ("GET", "/pos/v1/stock/%5Dd2010690123456789217", None, "stock",
     {"t": "stock", "code": "]d2010690123456789217"}),
    ("GET", "/pos/v1/lanes/3/basket", None, "lane_basket", {"lane": "3"}),
])
async def test_each_route_is_one_request_from_the_terminal(serve_pos, method, path, message, kind, expected):
    core = FakeCore()
    url = await serve_pos(core)
    body = None if message is None else json.dumps(message).encode()
    status, head, raw = await call(url, method, path, body, JSON_AUTH)
    assert status == 200 if kind != "sale" and kind != "return" else status == 201
    assert json.loads(raw)["ok"] is True
    [request] = core.requests
    assert (request.kind, request.source, request.channel) == (kind, "lane1", "pos")
    got = dict(request.body)
    if method == "GET":
        assert got.pop("id").startswith("q-")
    assert got == expected


async def test_a_sale_is_201_when_committed_and_200_when_repeated(serve_pos):
    url = await serve_pos(FakeCore(lambda r: {"ok": True, "seq": 7}))
    sale = {"id": "S9", "lines": [{"code": "SKU-1", "qty": 1}], "payments": [{"method": "cash", "cents": 1}]}
    assert await post_json(url, "/pos/v1/sales", sale) == (201, {"t": "res", "re": "S9", "ok": True, "seq": 7})
    assert await post_json(url, "/pos/v1/sales", sale) == (200, {"t": "res", "re": "S9", "ok": True, "seq": 7})
    # Another terminal's id of the same name is its own sale.
    kiosk = {"Authorization": "Bearer tok-kiosk-secret", "Content-Type": "application/json"}
    assert (await post_json(url, "/pos/v1/sales", sale, kiosk))[0] == 201


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": "Bearer "},
    {"Authorization": "Basic tok-lane1-secret"},
    {"Authorization": "tok-lane1-secret"},
    {"Authorization": "Bearer tok-lane1-secretX"},
])
async def test_a_missing_or_wrong_token_is_401_and_reaches_nothing(serve_pos, registry, headers):
    core = FakeCore()
    url = await serve_pos(core)
    for method, path in (("POST", "/pos/v1/sales"), ("GET", "/pos/v1/no/such/route")):
        status, head, raw = await call(url, method, path, b"{}", headers)
        assert status == 401
        assert head["www-authenticate"].startswith("Bearer")
        assert json.loads(raw)["err"] == "UNAUTHORIZED"
    assert core.requests == []
    assert registry.get_sample_value("gateway_pos_rejects_total", {"reason": "UNAUTHORIZED"}) == 2
    assert registry.get_sample_value("gateway_pos_requests_total",
                                     {"terminal": "", "route": "sales", "status": "401"}) == 1


async def test_the_kiosk_token_names_the_kiosk(serve_pos):
    core = FakeCore()
    url = await serve_pos(core)
    status, _, _ = await call(url, "GET", "/pos/v1/stock/SKU-1", None, {"Authorization": "bearer tok-kiosk-secret"})
    assert status == 200 and core.requests[0].source == "kiosk"


# --- statuses ---------------------------------------------------------------------------------

@pytest.mark.parametrize("err, status", [
    ("BAD_REQUEST", 400), ("UNKNOWN_ITEM", 404), ("UNKNOWN_SALE", 404), ("DUPLICATE_ID_CONFLICT", 409),
    ("RECALLED_LOT", 422), ("EXPIRED_LOT", 422), ("INSUFFICIENT_STOCK", 422), ("PAYMENT_MISMATCH", 422),
    ("POINTS_INSUFFICIENT", 422), ("RETURN_EXCEEDS_SALE", 422), ("UNAVAILABLE", 503),
])
async def test_refusals_carry_their_status_and_the_ecr_body(serve_pos, registry, err, status):
    url = await serve_pos(FakeCore(lambda r: {"ok": False, "err": err, "msg": "words"}))
    got = await post_json(url, "/pos/v1/sales", {"id": "S1"})
    assert got == (status, {"t": "res", "re": "S1", "ok": False, "err": err, "msg": "words"})
    assert STATUS_OF_ERR.get(err, 422) == status
    assert registry.get_sample_value("gateway_pos_rejects_total", {"reason": err}) == 1
    assert registry.get_sample_value("gateway_pos_requests_total",
                                     {"terminal": "lane1", "route": "sales", "status": str(status)}) == 1


async def test_a_core_that_fails_is_503_and_says_to_send_again(serve_pos):
    async def broken(request):
        raise RuntimeError("core loop gone")

    url = await serve_pos(broken)
    status, head, raw = await call(url, "POST", "/pos/v1/sales", b'{"id": "S1"}', JSON_AUTH)
    assert status == 503 and head["retry-after"] == "1"
    assert json.loads(raw)["err"] == "UNAVAILABLE"


@pytest.mark.parametrize("method, path, status, allow", [
    ("GET", "/pos/v1/sales", 405, "POST"),
    ("POST", "/pos/v1/stock/SKU-1", 405, "GET"),
    ("GET", "/pos/v1/unknown", 404, None),
    ("GET", "/pos/v2/quote", 404, None),
    ("GET", "/pos/v1/members/", 400, None),
    ("GET", "/pos/v1/lanes/1/basket/extra", 404, None),
    ("GET", "/", 404, None),
    ("GET", "/pos/v1/members/M%00", 400, None),
    ("GET", "/pos/v1/members/%FF", 400, None),
    ("GET", "/pos/v1/members/" + "M" * 65, 400, None),
])
async def test_paths_and_methods_outside_the_table(serve_pos, method, path, status, allow):
    core = FakeCore()
    url = await serve_pos(core)
    got, head, raw = await call(url, method, path, None, AUTH)
    assert got == status
    assert head.get("allow") == allow
    assert json.loads(raw)["err"] == "BAD_REQUEST" and core.requests == []


# --- bodies -----------------------------------------------------------------------------------

async def test_messagepack_in_is_messagepack_out(serve_pos):
    core = FakeCore(lambda r: {"ok": True, "total_cents": 3980})
    url = await serve_pos(core)
    headers = {**AUTH, "Content-Type": "application/msgpack"}
    status, head, raw = await call(url, "POST", "/pos/v1/quote",
                                   msgpack.packb({"id": "Q1", "lines": [{"code": "SKU-1", "qty": 2}]}), headers)
    assert status == 200 and head["content-type"] == "application/msgpack"
    assert msgpack.unpackb(raw) == {"t": "res", "re": "Q1", "ok": True, "total_cents": 3980}
    assert core.requests[0].body["lines"] == [{"code": "SKU-1", "qty": 2}]


async def test_a_get_answers_messagepack_only_when_accepted(serve_pos):
    url = await serve_pos(FakeCore(lambda r: {"ok": True, "on_hand": 3}))
    _, head, raw = await call(url, "GET", "/pos/v1/stock/SKU-1", None, AUTH)
    assert head["content-type"] == "application/json" and json.loads(raw)["on_hand"] == 3
    _, head, raw = await call(url, "GET", "/pos/v1/stock/SKU-1", None,
                              {**AUTH, "Accept": "text/html, application/msgpack;q=0.9"})
    assert head["content-type"] == "application/msgpack" and msgpack.unpackb(raw)["on_hand"] == 3


@pytest.mark.parametrize("content_type, body, words", [
    ("application/json", b"{not json", "the body is not JSON"),
    ("application/json", b"", "the body is not JSON"),
    ("application/json", b"[1, 2]", "the body must be a map, not a list"),
    ("application/json", b'{"id": NaN}', "the body is not JSON"),
    ("application/json", b'{"id": "\xff"}', "the body is not valid UTF-8"),
    ("application/json", b'{"id": "\\ud800"}', "id is not valid text: a lone surrogate U+D800"),
    ("application/json", b'{"id": "Q1", "lines": [{"lot": "\\udfff"}]}', "lines[0].lot is not valid text"),
    ("application/msgpack", b"\x81\xa2id\xa3\xed\xa0\x80", "the body holds invalid text"),
    ("application/json", b'{"a":' * 40 + b"1" + b"}" * 40, "nests deeper than 32"),
    ("application/json", b'{"t": "sale", "id": "Q1"}', "t is 'sale' but /pos/v1/quote takes 'quote'"),
    ("application/msgpack", b"\xc1", "the body is not MessagePack"),
    ("application/msgpack", msgpack.packb({1: "x"}), "the body is not MessagePack"),
    ("application/msgpack", msgpack.packb({"id": b"raw"}), "binary values are not part of ECR/1"),
    ("application/msgpack", msgpack.packb({"id": "Q1"}) + b"\x00", "the body is not MessagePack"),
    ("application/msgpack", msgpack.packb(msgpack.ExtType(5, b"x")), "the body is not MessagePack"),
])
async def test_a_body_that_is_not_an_ecr_map_is_400(serve_pos, content_type, body, words):
    core = FakeCore()
    url = await serve_pos(core)
    status, head, raw = await call(url, "POST", "/pos/v1/quote", body, {**AUTH, "Content-Type": content_type})
    assert status == 400 and core.requests == []
    answer = json.loads(raw) if content_type == "application/json" else msgpack.unpackb(raw)
    assert answer["err"] == "BAD_REQUEST" and words in answer["msg"]


async def test_an_unknown_content_type_is_415(serve_pos):
    url = await serve_pos(FakeCore())
    status, head, raw = await call(url, "POST", "/pos/v1/quote", b"id=Q1",
                                   {**AUTH, "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415 and "neither application/json nor application/msgpack" in json.loads(raw)["msg"]


async def test_a_body_at_the_limit_is_read_and_one_byte_more_is_413(serve_pos, registry):
    core = FakeCore()
    url = await serve_pos(core, max_body=100)
    body = json.dumps({"id": "Q1", "pad": ""}).encode()
    body = body.replace(b'""', b'"' + b"x" * (100 - len(body)) + b'"')
    assert len(body) == 100
    status, _, _ = await call(url, "POST", "/pos/v1/quote", body, JSON_AUTH)
    assert status == 200
    status, head, raw = await call(url, "POST", "/pos/v1/quote", body + b" ", JSON_AUTH)
    assert status == 413 and "over 100 bytes" in json.loads(raw)["msg"]
    assert len(core.requests) == 1
    assert registry.get_sample_value("gateway_pos_rejects_total", {"reason": "TOO_LARGE"}) == 1


def _claim_big_body(url: str, claimed: int):
    """Send only the headers of a request claiming `claimed` bytes: the answer must come unread."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest("POST", "/pos/v1/sales")
        for name, value in {**JSON_AUTH, "Content-Length": str(claimed)}.items():
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


async def test_a_large_content_length_is_refused_before_the_body_is_sent(serve_pos):
    core = FakeCore()
    url = await serve_pos(core)
    status, raw = await trio.to_thread.run_sync(_claim_big_body, url, (1 << 20) + 1)
    assert status == 413 and json.loads(raw)["err"] == "BAD_REQUEST" and core.requests == []


async def test_a_chunked_body_is_counted_while_it_streams(serve_pos):
    core = FakeCore()
    url = await serve_pos(core, max_body=1000)
    status, _, raw = await call(url, "POST", "/pos/v1/quote", None, JSON_AUTH,
                                chunks=[b'{"id": "Q1", "pad": "', b"x" * 600, b"x" * 600, b'"}'])
    assert status == 413 and core.requests == []
    status, _, _ = await call(url, "POST", "/pos/v1/quote", None, JSON_AUTH,
                              chunks=[b'{"id": "Q1", ', b'"pad": "xx"}'])
    assert status == 200 and core.requests[0].body["pad"] == "xx"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["application/json", "application/msgpack"]))
def test_decoding_arbitrary_bytes_raises_only_a_refusal(raw, fmt):
    try:
        message = decode_body(raw, fmt)
    except _Refusal as refusal:
        assert refusal.status == 400 and refusal.msg
    else:
        assert isinstance(message, dict) and all(isinstance(k, str) for k in message)


async def test_every_answer_is_counted_and_timed(serve_pos, registry):
    url = await serve_pos(FakeCore())
    for _ in range(3):
        await call(url, "GET", "/pos/v1/lanes/2/basket", None, AUTH)
    assert registry.get_sample_value("gateway_pos_requests_total",
                                     {"terminal": "lane1", "route": "lanes_basket", "status": "200"}) == 3
    assert registry.get_sample_value("gateway_pos_request_seconds_count", {"route": "lanes_basket"}) == 3
    assert registry.get_sample_value("gateway_pos_request_seconds_sum", {"route": "lanes_basket"}) > 0


# --- the real core behind it ------------------------------------------------------------------

async def priced_sale(url, sale_id: str, lines: list[dict]) -> dict:
    status, quote = await post_json(url, "/pos/v1/quote", {"id": "Q-" + sale_id, "lines": lines})
    assert status == 200 and quote["ok"], quote
    return {"id": sale_id, "lines": lines, "payments": [{"method": "card", "cents": quote["total_cents"]}]}


def on_hand(store, sku: str) -> tuple[int, int]:
    with store.read() as tx:
        return tx.last_seq(), stored_on_hand(tx, sku, 0)


async def test_a_real_sale_is_201_then_200_and_applied_once(core, serve_pos):
    url = await serve_pos(core.submit)
    seq0, stock0 = on_hand(core.store, "SKU-2")
    sale = await priced_sale(url, "P-1", [{"code": "4711", "qty": 2}])
    status, first = await post_json(url, "/pos/v1/sales", sale)
    assert status == 201 and first["ok"] and first["seq"] > seq0
    assert on_hand(core.store, "SKU-2") == (first["seq"], stock0 - 2)
    status, again = await post_json(url, "/pos/v1/sales", sale)
    assert status == 200 and again == first
    assert on_hand(core.store, "SKU-2") == (first["seq"], stock0 - 2)
    with core.store.read() as tx:
        assert tx.event(first["seq"])["id"] == "lane1:P-1"


async def test_a_real_id_reused_with_another_basket_is_409(core, serve_pos):
    url = await serve_pos(core.submit)
    sale = await priced_sale(url, "P-2", [{"code": "4711", "qty": 1}])
    assert (await post_json(url, "/pos/v1/sales", sale))[0] == 201
    before = on_hand(core.store, "SKU-2")
    other = await priced_sale(url, "P-2", [{"code": "4711", "qty": 3}])
    status, answer = await post_json(url, "/pos/v1/sales", other)
    assert status == 409 and answer["err"] == "DUPLICATE_ID_CONFLICT"
    assert on_hand(core.store, "SKU-2") == before


async def test_real_refusals_change_nothing(core, serve_pos):
    url = await serve_pos(core.submit)
    before = on_hand(core.store, "SKU-2")
    status, answer = await post_json(url, "/pos/v1/sales", {
        "id": "P-3", "lines": [{"code": "NO-SUCH", "qty": 1}], "payments": [{"method": "cash", "cents": 1}]})
    assert status == 404 and answer["err"] == "UNKNOWN_ITEM"
    status, answer = await post_json(url, "/pos/v1/sales", {
        "id": "P-4", "lines": [{"code": "4711", "qty": 1}], "payments": [{"method": "cash", "cents": 1}]})
    assert status == 422 and answer["err"] == "PAYMENT_MISMATCH"
    status, answer = await post_json(url, "/pos/v1/sales", {"id": "P-5", "lines": "many"})
    assert status == 400 and answer["err"] == "BAD_REQUEST"
    assert on_hand(core.store, "SKU-2") == before


async def test_real_queries_answer_from_the_ledger(core, serve_pos):
    url = await serve_pos(core.submit)
    status, head, raw = await call(url, "GET", "/pos/v1/stock/SKU-1", None, AUTH)
    stock = json.loads(raw)
    assert status == 200 and stock["on_hand"] == on_hand(core.store, "SKU-1")[1]
    assert {lot["lot"] for lot in stock["lots"]} == {"A1", "B2", "C3"}
    status, head, raw = await call(url, "GET", "/pos/v1/members/M1", None, {**AUTH, "Accept": "application/msgpack"})
    member = msgpack.unpackb(raw)
    assert status == 200 and (member["tier"], member["points_balance"]) == ("gold", 1000)
    status, head, raw = await call(url, "GET", "/pos/v1/lanes/1/basket", None, AUTH)
    assert status == 200 and json.loads(raw)["lines"] == []


@pytest.mark.parametrize("message, words", [
    ({"lines": [{"code": "SKU-1", "qty": 1}]}, "no id"),
    ({"id": "", "lines": [{"code": "SKU-1", "qty": 1}]}, "not 0"),
    ({"id": "x" * 65, "lines": [{"code": "SKU-1", "qty": 1}]}, "not 65"),
    ({"id": 17, "lines": [{"code": "SKU-1", "qty": 1}]}, "not int"),
])
@pytest.mark.parametrize("path", ["/pos/v1/quote", "/pos/v1/sales", "/pos/v1/returns"])
async def test_a_post_without_a_usable_id_is_400_and_reaches_nothing(serve_pos, registry, path,
                                                                      message, words):
    core = FakeCore()
    url = await serve_pos(core)
    status, answer = await post_json(url, path, message)
    assert status == 400 and answer["err"] == "BAD_REQUEST" and answer["ok"] is False
    assert "id" in answer["msg"] and words in answer["msg"]
    assert core.requests == []
    # An id of exactly 64 characters is fine.
    status, _ = await post_json(url, path, {**message, "id": "y" * 64})
    assert status in (200, 201) and len(core.requests) == 1


async def test_a_real_return_is_201_then_200_and_applied_once(core, serve_pos):
    url = await serve_pos(core.submit)
    sale = await priced_sale(url, "P-6", [{"code": "4711", "qty": 2}])
    assert (await post_json(url, "/pos/v1/sales", sale))[0] == 201
    before = on_hand(core.store, "SKU-2")
    ret = {"id": "P-6R", "orig": "P-6", "lines": [{"sku": "SKU-2", "qty": 1}], "reason": "defect"}
    status, first = await post_json(url, "/pos/v1/returns", ret)
    assert status == 201 and first["ok"] and first["refund_cents"] > 0
    assert on_hand(core.store, "SKU-2") == (first["seq"], before[1] + 1)
    status, again = await post_json(url, "/pos/v1/returns", ret)
    assert status == 200 and again == first
    assert on_hand(core.store, "SKU-2") == (first["seq"], before[1] + 1)
