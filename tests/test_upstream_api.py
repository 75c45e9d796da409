"""UP/1 over real HTTP on loopback: batches, long polls, acknowledgement, pruning, auth, TLS, push."""
from __future__ import annotations

import base64
import datetime
import functools
import ipaddress
import json

import msgpack
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import CollectorRegistry

from core_ext import Request
from gateway._http import serve_asgi
from upstream import Metrics, Settings, disk_pressure, encode_envelope, raw_public_key, run_push, sign_document
from upstream._erp_client import ChainVerifier, ErpClient, pull

from .erp_test_client import ChainChecker, from_json
from ._upstream import TOKEN, Upstream, append_sales, handlers_for, sales_and_seal, serve
from .test_adversarial_core import snapshot

# --- reads -----------------------------------------------------------------------------------

async def test_status_tells_the_chain_and_versions(served):
    up = served.up
    await sales_and_seal(up, 3)
    status, _h, body = await served.call("GET", "/upstream/v1/status")
    assert status == 200
    assert body["store"] == "S001" and body["public_key"] == raw_public_key(up.store_key)
    with up.store.read() as tx:
        last_event = tx.last_seq()
    assert body["last_seq"] == len(up.envelopes()) and body["acked_seq"] == 0
    assert body["backlog"] == 0 and body["last_event"] == last_event
    assert body["versions"]["catalog"] == 1 and body["versions"]["promotions"] == 0
    status, headers, as_json = await served.call("GET", "/upstream/v1/status", headers={"Accept": "application/json"})
    assert headers["content-type"].startswith("application/json")
    assert from_json(as_json)["public_key"] == body["public_key"]


async def test_batches_page_in_order_and_verify(served):
    up = served.up
    await sales_and_seal(up, 10)  # 6 seeded + 10 sales (+ alert events) in batches of 4
    total = len(up.envelopes())
    checker = ChainChecker(up.store_key.public_key(), store="S001")
    after, pages = 0, 0
    while True:
        status, _h, page = await served.call("GET", f"/upstream/v1/batches?after={after}&limit=2")
        assert status == 200
        pages += 1
        checker.accept_all(page["batches"])
        after = checker.seq
        if not page["more"]:
            break
    assert checker.seq == total and pages == (total + 1) // 2
    _s, _h, as_json = await served.call("GET", "/upstream/v1/batches?after=0&limit=1000",
                                        headers={"Accept": "application/json"})
    assert [from_json(e) for e in as_json["batches"]] == up.envelopes()


async def test_long_poll_answers_at_the_next_seal(served):
    up = served.up
    await up.seal()
    last = len(up.envelopes())

    async def seal_later():
        # The GET comes through a real socket from a thread: wait until the app is parked on the signal.
        while up.signal.waiter().statistics().tasks_waiting == 0:
            await trio.sleep(0.005)
        await up.sale("late")
        await up.seal()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(seal_later)
        started = trio.current_time()
        status, _h, page = await served.call("GET", f"/upstream/v1/batches?after={last}&wait=20")
    assert status == 200 and len(page["batches"]) == 1
    assert page["batches"][0]["seq"] == last + 1 and trio.current_time() - started < 20
    # Nothing new: the wait runs out and the answer is empty.
    status, _h, page = await served.call("GET", f"/upstream/v1/batches?after={last + 1}&wait=0.2")
    assert status == 200 and page == {"batches": [], "more": False}


@pytest.mark.parametrize("query,problem", [
    ("after=-1", "after"), ("after=x", "after"), ("limit=0", "limit"), ("limit=1001", "limit"),
    ("wait=soon", "wait"), ("wait=-1", "wait"),
])
async def test_bad_query_parameters_are_named(served, query, problem):
    status, _h, body = await served.call("GET", f"/upstream/v1/batches?{query}")
    assert status == 400 and body["error"] == "BAD_REQUEST" and problem in body["message"]


# --- acknowledgement and pruning -------------------------------------------------------------

async def test_ack_moves_forward_only_and_never_past_the_last(served):
    up = served.up
    await sales_and_seal(up, 6)
    last = len(up.envelopes())
    status, _h, body = await served.call("POST", "/upstream/v1/ack", body={"through": 2})
    assert status == 200 and body["acked"] == 2
    status, _h, body = await served.call("POST", "/upstream/v1/ack", body={"through": 1})
    assert status == 200 and body["acked"] == 2
    status, _h, body = await served.call("POST", "/upstream/v1/ack", body={"through": last + 1})
    assert status == 409 and body["error"] == "ACK_BEYOND_LAST" and set(body) == {"error", "message"}
    for bad in ({"through": "3"}, {"through": -1}, {}):
        status, _h, body = await served.call("POST", "/upstream/v1/ack", body=bad)
        assert status == 400 and "through" in body["message"]
    status, _h, body = await served.call("POST", "/upstream/v1/ack", body=b"\xc1")
    assert status == 400 and "MessagePack" in body["message"]
    _s, _h, st = await served.call("GET", "/upstream/v1/status")
    assert st["acked_seq"] == 2
    assert served.metric("gateway_upstream_acked_seq") == 2
    assert served.metric("gateway_upstream_last_seq") == last


async def test_acknowledged_batches_are_pruned_after_retention_and_then_410(served, clock):
    up = served.up
    await sales_and_seal(up, 6)
    last = len(up.envelopes())
    await served.call("POST", "/upstream/v1/ack", body={"through": 2})
    res = await up.submit(Request("prune", {}))
    assert res.body["pruned"] == 0  # acknowledged, but not yet past the retention
    clock.t += up.settings.retention_acked_s + 1
    res = await up.submit(Request("prune", {}))
    assert res.body["pruned"] == 2 and res.body["first_available"] == 3
    # Unacknowledged batches stay whatever happens, even forced.
    res = await up.submit(Request("prune", {"force": True}))
    assert res.body["pruned"] == 0 and [e["seq"] for e in up.envelopes()] == list(range(3, last + 1))
    status, _h, body = await served.call("GET", "/upstream/v1/batches?after=0")
    assert status == 410 and body["error"] == "PRUNED" and body["first_available"] == 3
    status, _h, body = await served.call("GET", "/upstream/v1/batches?after=2")
    assert status == 200 and body["batches"][0]["seq"] == 3


async def test_disk_pressure_is_reported_and_refuses_new_sales(served):
    up = served.up
    assert disk_pressure(up.store) is False and served.metric("gateway_upstream_disk_full") == 0
    up.store.min_free_bytes = up.store.space_left() + 1
    assert disk_pressure(up.store) is True and served.metric("gateway_upstream_disk_full") == 1
    refused = await up.core.request("sale", {"id": "full", "lines": [{"code": "SKU-2", "qty": 1}],
                                             "payments": [{"method": "cash", "cents": 4990}]})
    assert refused.body["err"] == "UNAVAILABLE"
    # Sealing and acknowledging go on: what was accepted still reaches the ERP.
    await up.seal()
    assert len(up.envelopes()) >= 1


# --- authentication and limits ---------------------------------------------------------------

@pytest.mark.parametrize("token", [None, "", "t0ke", "t0ken0", "T0KEN"])
async def test_missing_or_wrong_tokens_get_401_and_change_nothing(served, token):
    up = served.up
    await sales_and_seal(up, 2)
    for method, path, body in [("GET", "/upstream/v1/batches", None), ("GET", "/upstream/v1/status", None),
                               ("POST", "/upstream/v1/ack", {"through": 1}), ("GET", "/nowhere", None)]:
        status, headers, answer = await served.call(method, path, token=token, body=body)
        assert status == 401 and answer == {"error": "UNAUTHORIZED", "message": "authentication required"}
        assert headers["www-authenticate"] == "Bearer"
    with up.store.read() as tx:
        assert tx.meta("upstream.acked", 0) == 0
    assert served.metric("gateway_upstream_requests_total", {"route": "unauthorized", "status": "401"}) == 4


async def test_unknown_routes_and_methods(served):
    status, _h, body = await served.call("GET", "/upstream/v1/nothing")
    assert status == 404 and body["error"] == "NOT_FOUND"
    status, _h, body = await served.call("POST", "/upstream/v1/batches", body={})
    assert status == 405 and "GET" in body["message"]
    status, _h, body = await served.call("PUT", "/upstream/v1/master/prices", body={})
    assert status == 404 and "prices" in body["message"]


async def test_bodies_over_the_limit_get_413(upstream, nursery):
    served = await serve(nursery, upstream, settings=Settings(token=TOKEN, max_body_bytes=1000))
    status, _h, body = await served.call("POST", "/upstream/v1/movements", body=b"\x00" * 5000)
    assert status == 413 and body["error"] == "TOO_LARGE"
    status, _h, body = await served.call("PUT", "/upstream/v1/master/catalog", body={"pad": "x" * 2000})
    assert status == 413
    assert served.metric("gateway_upstream_requests_total", {"route": "movements", "status": "413"}) == 1


# --- TLS -------------------------------------------------------------------------------------

def self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "gateway.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    keyfile.chmod(0o600)  # the gateway refuses a private key other users may read
    return str(certfile), str(keyfile)


async def test_tls_when_cert_and_key_are_configured(upstream, nursery, tmp_path):
    certfile, keyfile = self_signed(tmp_path)
    served = await serve(nursery, upstream, certfile=certfile, keyfile=keyfile)
    assert served.url.startswith("https://")
    await sales_and_seal(upstream, 2)
    status, _h, page = await served.call("GET", "/upstream/v1/batches", cafile=certfile)
    assert status == 200
    ChainChecker(upstream.store_key.public_key()).accept_all(page["batches"])
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        await served.call("GET", "/upstream/v1/status")  # the system's CAs do not know it


# --- catching up -----------------------------------------------------------------------------

async def _catch_up(served, events: int, *, limit: int):
    up = served.up
    append_sales(up.store, events)
    await up.seal_all()
    client = ErpClient(served.url, TOKEN)
    verifier = ChainVerifier(up.store_key.public_key(), store="S001")
    seen = []
    try:
        totals = await trio.to_thread.run_sync(lambda: pull(
            client, verifier, ack=True, limit=limit, on_batch=lambda env, body, s: seen.append(s.last_event)))
    finally:
        client.close()
    return totals, seen, verifier


async def test_a_backlog_of_20000_events_catches_up_in_order(make_core, seeded_store, store_key, erp_key, nursery):
    settings = Settings(token=TOKEN, batch_max_events=500)
    core = await make_core(seeded_store, extra_handlers=handlers_for(store_key, erp_key, settings, None))
    served = await serve(nursery, Upstream(core, store_key, erp_key, settings, None))
    totals, seen, verifier = await _catch_up(served, 20_000, limit=7)
    assert seen == sorted(seen) and seen[-1] == 20_006 and verifier.last_event == 20_006
    assert totals.docs == 20_006 and totals.batches == 41 and totals.acked == 41
    _s, _h, st = await served.call("GET", "/upstream/v1/status")
    assert st["acked_seq"] == 41 and st["backlog"] == 0


@pytest.mark.soak
async def test_a_backlog_of_a_million_events_catches_up_in_order(make_core, tmp_path, store_key, erp_key, nursery):
    from core_ext import Store

    from ._data import seed
    store = Store(str(tmp_path / "big"), map_size=8 << 30)
    seed(store)
    settings = Settings(token=TOKEN, batch_max_events=500, seal_max_events=50_000)
    core = await make_core(store, extra_handlers=handlers_for(store_key, erp_key, settings, None))
    up = Upstream(core, store_key, erp_key, settings, None)
    served = await serve(nursery, up)
    for _ in range(20):  # a day's worth at a time, sealed as it comes
        append_sales(store, 50_000)
        await up.seal_all()
    totals, seen, verifier = await _catch_up(served, 0, limit=1000)
    assert seen == sorted(seen) and verifier.last_event == 1_000_006 and totals.docs == 1_000_006


# --- push mode -------------------------------------------------------------------------------

def receiver(received: list, fail_first: int):
    """A tiny ERP endpoint: answers 500 to the first `fail_first` posts, then 204, recording each."""
    state = {"calls": 0}

    async def app(scope, receive, send):
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        state["calls"] += 1
        status = 500 if state["calls"] <= fail_first else 204
        if status == 204:
            received.append((dict(scope["headers"]).get(b"authorization"), b"".join(chunks)))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app, state


async def test_push_posts_each_batch_in_order_and_2xx_acknowledges(upstream, nursery):
    received = []
    app, state = receiver(received, fail_first=2)
    [url] = await nursery.start(functools.partial(serve_asgi, app, "127.0.0.1:0"))
    registry = CollectorRegistry()
    metrics = Metrics(registry, upstream.store)
    settings = Settings(push_url=url + "/erp/batches", push_token="erp-secret", push_backoff_s=0.01,
                        push_backoff_max_s=0.05)
    await sales_and_seal(upstream, 6)
    total = len(upstream.envelopes())
    await nursery.start(functools.partial(run_push, upstream.submit, upstream.store, settings, upstream.signal,
                                          metrics))
    with trio.fail_after(20):
        while len(received) < total:
            await upstream.signal.wait()
    envs = [msgpack.unpackb(body, raw=False) for _auth, body in received]
    ChainChecker(upstream.store_key.public_key()).accept_all(envs)
    assert {auth for auth, _ in received} == {b"Bearer erp-secret"}
    assert registry.get_sample_value("gateway_upstream_push_failures_total") == 2
    with upstream.store.read() as tx:
        assert tx.meta("upstream.acked") == total
    # A batch sealed later is pushed too.
    await upstream.sale("later")
    await upstream.seal()
    with trio.fail_after(20):
        while len(received) < total + 1:
            await upstream.signal.wait()
    assert msgpack.unpackb(received[-1][1], raw=False)["seq"] == total + 1
    assert state["calls"] == total + 3


# --- invalid text and cut signatures ------------------------------------------------------------

async def test_up1_json_with_invalid_text_is_a_400(served):
    for path, raw in (("/upstream/v1/ack", b'{"through": "\\ud800"}'),
                      ("/upstream/v1/counts/scan1/close", b'{"id": "C\\udc00"}'),
                      ("/upstream/v1/master/catalog", b'{"v": 1, "kind": "catalog", "x": ["\\udfff"]}')):
        status, _h, body = await served.call("POST" if "master" not in path else "PUT", path, body=raw,
                                             headers={"Content-Type": "application/json"})
        assert status == 400 and body["error"] == "BAD_REQUEST", (path, body)
        assert "not valid text" in body["message"], body


@pytest.mark.parametrize("how", ["cut", "missing", "empty", "not base64"])
@pytest.mark.parametrize("path", ["/upstream/v1/master/catalog", "/upstream/v1/movements"])
async def test_up1_a_cut_or_missing_signature_is_403(served, path, how):
    kind = "catalog" if "master" in path else "movements"
    body = {"items": []} if kind == "catalog" else {"movements": []}
    doc = sign_document(kind, 2, body, served.up.erp_key, issued_ms=1)
    before = snapshot(served.up.store)
    method = "PUT" if kind == "catalog" else "POST"
    if how == "not base64":
        wire = {**doc, "body": base64.b64encode(doc["body"]).decode(), "sig": "!!not base64!!"}
        status, _h, answer = await served.call(method, path, body=json.dumps(wire).encode(),
                                               headers={"Content-Type": "application/json"})
    else:
        if how == "cut":
            doc["sig"] = doc["sig"][:32]
        elif how == "missing":
            del doc["sig"]
        else:
            doc["sig"] = b""
        status, _h, answer = await served.call(method, path, body=encode_envelope(doc))
    assert (status, answer["error"]) == (403, "BAD_SIGNATURE"), answer
    assert snapshot(served.up.store) == before
