"""POS/1 and UP/1 fuzzed over real HTTP on loopback, with the real core behind them: never a 5xx
(the store is not under pressure here), every refusal a stable code with words, and a refused
request leaves the ledger as it was."""
from __future__ import annotations

import functools
import json

import msgpack
import pytest
import trio
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from core_ext._verify import verify
from device_plugins.pos_api import Metrics as PosMetrics, make_app
from gateway._http import serve_asgi
from upstream import encode_envelope, sign_document

from . import _fuzz
from ._data import NOW
from ._fuzz import PROFILES, assert_refusal, ledger_state
from .test_pos_api import _request

TOKEN = "tok-lane1-secret"
NOW_MS = int(NOW * 1000)
UP_CODES = {"BAD_REQUEST", "UNAUTHORIZED", "BAD_SIGNATURE", "STALE_VERSION", "INVALID_DOCUMENT", "PRUNED",
            "ACK_BEYOND_LAST", "DUPLICATE_ID_CONFLICT", "TOO_LARGE", "NOT_FOUND", "METHOD_NOT_ALLOWED",
            "UNSUPPORTED_MEDIA_TYPE"}

# Text a terminal could send: no lone surrogates (a known fault, below), bounded lengths.
text = st.text(max_size=12)
scalars = st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False) | text
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(text, inner, max_size=3), max_leaves=10)
line = st.fixed_dictionaries({}, optional={
    "code": st.sampled_from(["SKU-1", "SKU-2", "SKU-4", "4711", "B-100", "NOPE"]) | values,
    "sku": st.sampled_from(["SKU-1", "SKU-4"]) | values, "qty": st.integers(-2, 4) | values,
    "lot": st.sampled_from(["A1", "B2", "L1"]) | values, "serial": st.sampled_from(["S1", "S9"]) | values})
payment = st.fixed_dictionaries({"method": st.sampled_from(["cash", "card", "points"]) | values,
                                 "cents": st.integers(-1, 20_000) | values})
message = st.fixed_dictionaries({"id": st.text(min_size=1, max_size=20)}, optional={
    "lines": st.lists(line, max_size=3) | values, "payments": st.lists(payment, max_size=2) | values,
    "member": st.sampled_from(["M1", "M2", "M404"]) | values, "orig": text, "reason": text, "extra": values})
routes = st.sampled_from(["/pos/v1/quote", "/pos/v1/sales", "/pos/v1/returns"])


async def serve_pos(core, nursery) -> str:
    app = make_app(core.submit, {"lane1": TOKEN}, PosMetrics(CollectorRegistry()))
    [url] = await nursery.start(serve_asgi, app, "127.0.0.1:0")
    return url


def post(url: str, path: str, body: bytes, ctype: str):
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": ctype}
    status, head, raw = _request(url, "POST", path, body, headers)
    answer = json.loads(raw) if head.get("content-type") == "application/json" else msgpack.unpackb(raw)
    return status, answer


def encoded(msg: dict, as_json: bool) -> tuple[bytes, str]:
    if as_json:
        return json.dumps(msg).encode(), "application/json"
    return msgpack.packb(msg, use_bin_type=True), "application/msgpack"


def check_pos_answer(store, status: int, answer: dict, before: dict) -> None:
    assert status < 500, (status, answer)
    if status >= 400:
        assert_refusal(answer)
        assert ledger_state(store) == before


@PROFILES
async def test_fuzzed_pos_bodies_are_never_a_5xx_and_a_refusal_changes_nothing(core, nursery, examples):
    url = await serve_pos(core, nursery)
    statuses = []

    def check(path, msg, as_json, n):
        msg = {**msg, "id": f"{n}-{msg['id']}"[:64]}
        before = ledger_state(core.store)
        status, answer = post(url, path, *encoded(msg, as_json))
        statuses.append(status)
        check_pos_answer(core.store, status, answer, before)

    await trio.to_thread.run_sync(functools.partial(
        _fuzz.run, "POS/1 bodies (HTTP)", examples, check, routes, message, st.booleans(), st.integers(0, 10**6)))
    assert statuses and verify(core.store) == []


@PROFILES
async def test_raw_pos_bytes_are_a_400_never_a_5xx(core, nursery, examples):
    url = await serve_pos(core, nursery)

    def check(path, raw, ctype):
        before = ledger_state(core.store)
        status, answer = post(url, path, raw, ctype)
        assert status in (400, 404, 409, 413, 415, 422), (status, answer)
        check_pos_answer(core.store, status, answer, before)

    await trio.to_thread.run_sync(functools.partial(
        _fuzz.run, "POS/1 raw bytes (HTTP)", examples, check, routes, st.binary(max_size=200),
        st.sampled_from(["application/json", "application/msgpack"])))


async def test_a_lone_surrogate_in_a_pos_string_is_a_400(core, nursery):
    url = await serve_pos(core, nursery)
    before = ledger_state(core.store)
    for field in ("id", "code"):
        msg = {"id": "LS-1", "lines": [{"code": "SKU-4", "qty": 1}], "payments": [{"method": "cash", "cents": 350}]}
        if field == "id":
            msg["id"] = "LS-\ud800"
        else:
            msg["lines"][0]["code"] = "SKU-\udfff"
        status, answer = await trio.to_thread.run_sync(post, url, "/pos/v1/sales", json.dumps(msg).encode(),
                                                       "application/json")
        assert status == 400 and answer["err"] == "BAD_REQUEST", (field, status, answer)
    assert ledger_state(core.store) == before


async def test_an_over_long_pos_string_is_a_400(core, nursery):
    url = await serve_pos(core, nursery)
    msg = {"id": "LONG-1", "lines": [{"code": "C" * 5000, "qty": 1}], "payments": [{"method": "cash", "cents": 1}]}
    status, answer = await trio.to_thread.run_sync(post, url, "/pos/v1/sales", json.dumps(msg).encode(),
                                                   "application/json")
    assert status == 400 and answer["err"] == "BAD_REQUEST", (status, answer)


# --- UP/1 ---------------------------------------------------------------------------------------

def check_up_answer(store, status: int, body, before: dict) -> None:
    assert status < 500, (status, body)
    if status >= 400:
        assert isinstance(body, dict) and body.get("error") in UP_CODES, (status, body)
        assert isinstance(body.get("message"), str) and body["message"].strip(), body
        assert ledger_state(store) == before


up_paths = st.sampled_from([("POST", "/upstream/v1/ack"), ("POST", "/upstream/v1/movements"),
                            ("PUT", "/upstream/v1/master/catalog"), ("PUT", "/upstream/v1/master/members"),
                            ("PUT", "/upstream/v1/master/recalls"), ("PUT", "/upstream/v1/master/policy"),
                            ("GET", "/upstream/v1/batches?after=0&limit=3")])


@PROFILES
async def test_fuzzed_up_bodies_are_never_a_5xx_and_a_refusal_changes_nothing(served, examples):
    token = trio.lowlevel.current_trio_token()

    def check(route, body):
        method, path = route
        before = ledger_state(served.up.store)
        status, _h, answer = trio.from_thread.run(functools.partial(served.call, method, path, body=body),
                                                  trio_token=token)
        check_up_answer(served.up.store, status, answer, before)

    bodies = values | st.binary(max_size=100) | st.fixed_dictionaries(
        {"through": st.integers(-1, 10) | values}) | st.fixed_dictionaries(
        {"v": st.just(1) | values, "kind": st.sampled_from(["catalog", "movements"]) | values,
         "version": st.integers(0, 5) | values, "issued_ms": st.integers(0, NOW_MS) | values,
         "body": st.binary(max_size=30) | values, "sig": st.binary(min_size=64, max_size=64) | values})
    await trio.to_thread.run_sync(functools.partial(_fuzz.run, "UP/1 bodies (HTTP)", examples, check, up_paths, bodies))
    assert verify(served.up.store) == []


async def test_a_document_signed_by_another_key_is_403_and_changes_nothing(served):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    stranger = Ed25519PrivateKey.generate()
    before = ledger_state(served.up.store)
    for kind, path, method, body in (
            ("catalog", "/upstream/v1/master/catalog", "PUT", {"items": []}),
            ("movements", "/upstream/v1/movements", "POST", {"movements": []})):
        doc = sign_document(kind, 9, body, stranger, issued_ms=NOW_MS)
        status, _h, answer = await served.call(method, path, body=encode_envelope(doc))
        assert (status, answer.get("error")) == (403, "BAD_SIGNATURE"), (kind, status, answer)
    assert ledger_state(served.up.store) == before


@pytest.mark.parametrize("sig", [b"", b"\x01" * 63, b"\x01" * 65], ids=["empty", "63", "65"])
async def test_a_signature_of_the_wrong_length_is_403(served, sig):
    doc = sign_document("catalog", 9, {"items": []}, served.up.erp_key, issued_ms=NOW_MS)
    doc["sig"] = sig
    before = ledger_state(served.up.store)
    status, _h, answer = await served.call("PUT", "/upstream/v1/master/catalog", body=encode_envelope(doc))
    assert (status, answer.get("error")) == (403, "BAD_SIGNATURE"), (status, answer)
    assert ledger_state(served.up.store) == before


async def test_huge_headers_are_a_431(served):
    status, _h, _answer = await served.call("GET", "/upstream/v1/status", headers={"X-Pad": "p" * 70_000})
    assert status == 431
