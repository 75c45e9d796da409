"""UP/1 at its edges: what the spec fixes to the byte, and bad input that must be named, not crash."""
from __future__ import annotations

import base64
import json

import msgpack
import pytest
import trio

from core_ext import Request
from upstream import Settings, sign_document

from ._data import CATALOG, NOW
from .test_master_docs import new_catalog, post_movements, put_master, snapshot
from ._upstream import TOKEN, sales_and_seal, serve

NOW_MS = int(NOW * 1000)


# --- authentication --------------------------------------------------------------------------

@pytest.mark.parametrize("sent", [None, "", " ", "t0ken"])
async def test_an_empty_configured_token_lets_nobody_in(upstream, nursery, sent):
    # "Bearer " (an empty token) must not match an empty configuration.
    served = await serve(nursery, upstream, settings=Settings(token=""))
    status, _h, body = await served.call("GET", "/upstream/v1/status", token=sent)
    assert status == 401 and body == {"error": "UNAUTHORIZED", "message": "authentication required"}
    status, _h, _b = await served.call("POST", "/upstream/v1/ack", token=sent, body={"through": 0})
    assert status == 401


# --- status ----------------------------------------------------------------------------------

async def test_status_fields_have_the_spec_types(served):
    up = served.up
    await sales_and_seal(up, 5)
    await up.sale("unsealed")
    status, _h, body = await served.call("GET", "/upstream/v1/status")
    assert status == 200
    for name in ("store", "public_key", "last_seq", "acked_seq", "backlog", "last_event", "versions", "time_ms"):
        assert name in body, name
    assert isinstance(body["store"], str)
    assert isinstance(body["public_key"], bytes) and len(body["public_key"]) == 32
    for name in ("last_seq", "acked_seq", "backlog", "last_event", "time_ms"):
        assert type(body[name]) is int, name
    assert body["backlog"] >= 1  # the unsealed sale (and any alert it raised)
    assert set(body["versions"]) == {"catalog", "promotions", "members", "recalls", "policy"}
    assert all(type(v) is int for v in body["versions"].values())


# --- effective_ms ----------------------------------------------------------------------------

async def test_a_document_in_force_is_never_undone_by_an_older_one_waiting(served, clock):
    # v2 is sent ahead for tomorrow; v3 is sent to apply at once. Tomorrow must not bring v2 back.
    up = served.up
    tomorrow = NOW_MS + 86_400_000
    ahead = sign_document("catalog", 2, new_catalog(), up.erp_key, issued_ms=NOW_MS, effective_ms=tomorrow)
    status, _h, _a = await put_master(served, ahead)
    assert status == 200
    urgent = {"items": [dict(item) for item in CATALOG["items"]]}
    urgent["items"][1]["unit_cents"] = 3990
    status, _h, answer = await put_master(served, sign_document("catalog", 3, urgent, up.erp_key, issued_ms=NOW_MS))
    assert status == 200 and answer == {"applied": 3}
    clock.t = tomorrow / 1000 + 1
    res = await up.submit(Request("master_activate", {}))
    assert res.ok and res.body["activated"] == []
    with up.store.read() as tx:
        assert tx.get("master", "catalog")["version"] == 3
        assert tx.get("master", "catalog")["pending"] == []
        assert tx.get("catalog", "SKU-2")["unit_cents"] == 3990
        # The superseded body is not kept waiting either.
        assert tx.get("master_docs", b"catalog\x00" + (2).to_bytes(8, "big")) is None
    _s, _h, st = await served.call("GET", "/upstream/v1/status")
    assert st["versions"]["catalog"] == 3 and st["pending"] == {}


async def test_two_documents_due_together_leave_the_newest_in_force(served, clock):
    # v3 is due before v2: when v2's time comes it is already superseded.
    up = served.up
    for version, effective, cents in ((2, NOW_MS + 7_200_000, 5990), (3, NOW_MS + 3_600_000, 6990)):
        body = new_catalog()
        body["items"][1]["unit_cents"] = cents
        status, _h, _a = await put_master(served, sign_document("catalog", version, body, up.erp_key,
                                                                 issued_ms=NOW_MS, effective_ms=effective))
        assert status == 200
    clock.t = (NOW_MS + 3_600_000) / 1000
    assert (await up.submit(Request("master_activate", {}))).body["activated"] == [["catalog", 3]]
    clock.t = (NOW_MS + 7_200_000) / 1000
    assert (await up.submit(Request("master_activate", {}))).body["activated"] == []
    with up.store.read() as tx:
        assert tx.get("master", "catalog")["version"] == 3
        assert tx.get("catalog", "SKU-2")["unit_cents"] == 6990


async def test_a_document_sent_ahead_is_checked_again_when_its_time_comes(served, clock, caplog):
    # Stored by an older release, whose checks had no bounds on a reorder point: at its time it is
    # checked as a document sent now would be, refused by name, and the catalog in force stays.
    up = served.up
    tomorrow = NOW_MS + 86_400_000
    stale = new_catalog()
    stale["items"][1]["reorder_point"] = 2 ** 63
    with up.store.begin(write=True) as tx:
        row = tx.get("master", "catalog")
        tx.put("master_docs", b"catalog\x00" + (7).to_bytes(8, "big"), stale)
        tx.put("master", "catalog", {**row, "pending": [{"version": 7, "issued_ms": NOW_MS, "effective_ms": tomorrow}]})
        in_force = row["version"]
    clock.t = tomorrow / 1000 + 1
    res = await up.submit(Request("master_activate", {}))
    assert res.ok and res.body["activated"] == []
    [[kind, version, problems]] = res.body["refused"]
    assert (kind, version) == ("catalog", 7) and "reorder_point" in problems[0] and "SKU-2" in problems[0]
    assert "catalog version 7, sent ahead, is not put in force" in caplog.text
    with up.store.read() as tx:
        assert tx.get("master", "catalog")["version"] == in_force
        assert tx.get("master", "catalog")["pending"] == []
        assert tx.get("master_docs", b"catalog\x00" + (7).to_bytes(8, "big")) is None
        assert tx.get("catalog", "SKU-2")["reorder_point"] < 2 ** 63
    sale = await up.core.request("sale", {"id": "after-refusal", "lines": [{"code": "SKU-2", "qty": 1}],
                                          "payments": [{"method": "cash", "cents": 4990}]})
    assert sale.body["ok"], sale.body


# --- members: points as of issued_ms ---------------------------------------------------------

async def test_member_points_are_the_erps_balance_plus_what_moved_here_after_issued_ms(served, clock):
    up = served.up
    sale = await up.core.request("sale", {"id": "pts", "member": "M1", "lines": [{"code": "SKU-4", "qty": 1}],
                                          "payments": [{"method": "points", "cents": 350}]})
    assert sale.ok, sale.body
    with up.store.read() as tx:
        moved = tx.get("members", "M1")["points"] - 1000
    assert moved != 0
    # Issued before the sale: the ERP's 2000 does not know of it, so the sale's points still count.
    before = {"mode": "delta", "members": [{"id": "M1", "tier": "gold", "points": 2000, "name": "Li Wei"}]}
    status, _h, _a = await put_master(served, sign_document("members", 2, before, up.erp_key, issued_ms=NOW_MS - 1))
    assert status == 200
    with up.store.read() as tx:
        assert tx.get("members", "M1")["points"] == 2000 + moved
    # Issued after it: the ERP's balance already includes the sale.
    after = {"mode": "delta", "members": [{"id": "M1", "tier": "gold", "points": 3000, "name": "Li Wei"}]}
    status, _h, _a = await put_master(served, sign_document("members", 3, after, up.erp_key, issued_ms=NOW_MS + 1))
    assert status == 200
    with up.store.read() as tx:
        assert tx.get("members", "M1")["points"] == 3000


# --- bad input is named, never a crash -------------------------------------------------------

async def test_json_nested_too_deep_is_a_bad_request(served):
    status, _h, body = await served.call("PUT", "/upstream/v1/master/catalog", body=b"[" * 100_000,
                                         headers={"Content-Type": "application/json"})
    assert status == 400 and body["error"] == "BAD_REQUEST" and "JSON" in body["message"]


@pytest.mark.parametrize("field", ["version", "issued_ms", "effective_ms"])
async def test_document_numbers_beyond_64_bits_are_named(served, field):
    # Only JSON can carry them; MessagePack and the signed bytes cannot.
    up = served.up
    before = snapshot(up.store)
    doc = sign_document("catalog", 2, new_catalog(), up.erp_key, issued_ms=NOW_MS)
    doc[field] = 2 ** 64
    as_json = json.dumps({**doc, "body": base64.b64encode(doc["body"]).decode(),
                          "sig": base64.b64encode(doc["sig"]).decode()})
    status, _h, body = await served.call("PUT", "/upstream/v1/master/catalog", body=as_json.encode(),
                                         headers={"Content-Type": "application/json"})
    assert status == 400 and body["error"] == "BAD_REQUEST" and field in body["message"], body
    assert snapshot(up.store) == before


@pytest.mark.parametrize("bad,problem", [
    ({"id": "\U0001F600" * 128, "type": "receipt", "sku": "SKU-2", "qty": 1}, "id"),
    ({"id": "X", "type": "receipt", "sku": "S" * 600, "qty": 1}, "sku"),
    ({"id": "X", "type": "receipt", "sku": "SKU-1", "lot": "L" * 600, "expiry": "2029-01-31", "qty": 1}, "lot"),
    ({"id": "X", "type": "adjustment", "sku": "SKU-2", "qty": 2 ** 63}, "qty"),
])
async def test_movement_fields_the_store_cannot_hold_are_named(served, bad, problem):
    up = served.up
    before = snapshot(up.store)
    doc = sign_document("movements", 1, {"movements": [bad]}, up.erp_key, issued_ms=NOW_MS)
    status, _h, body = await post_movements(served, doc)
    assert status == 422 and body["error"] == "INVALID_CONTENT", body
    assert "movements[0]" in body["message"] and problem in body["message"]
    assert snapshot(up.store) == before


async def test_a_refused_movement_does_not_take_down_its_group(served):
    # Requests committed in the same group as a bad document are still applied.
    up = served.up
    bad = sign_document("movements", 1, {"movements": [{"id": "X", "type": "receipt", "sku": "SKU-1",
                                                        "lot": "L" * 600, "expiry": "2029-01-31", "qty": 1}]},
                        up.erp_key, issued_ms=NOW_MS)
    good = sign_document("movements", 2, {"movements": [{"id": "G", "type": "receipt", "sku": "SKU-2", "qty": 1}]},
                         up.erp_key, issued_ms=NOW_MS)
    answers = {}

    async def send(name, doc):
        answers[name] = await up.submit(Request("movements", {"doc": doc}, source="erp", channel="erp"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send, "bad", bad)
        nursery.start_soon(send, "good", good)
    assert answers["good"].ok and answers["good"].body["applied"] == 1
    assert answers["bad"].body["err"] == "INVALID_CONTENT"


async def test_a_garbage_promotions_body_is_named(served):
    up = served.up
    for body in ([1, 2], {"rules": "x"}, {"rules": [None]}, {"ceiling": "x", "points": [], "rules": []}):
        status, _h, answer = await put_master(served, sign_document("promotions", 5, body, up.erp_key,
                                                                    issued_ms=NOW_MS))
        assert status == 422 and answer["error"] == "INVALID_CONTENT", (body, answer)


async def test_ack_bodies_that_are_not_a_count_are_named(served):
    await sales_and_seal(served.up, 2)
    for body in ([1], {"through": "1"}, {"through": 1.0}, {"through": True}, {"through": -1}, {}):
        status, _h, answer = await served.call("POST", "/upstream/v1/ack", body=msgpack.packb(body))
        assert status == 400 and answer["error"] == "BAD_REQUEST", (body, answer)
    status, _h, answer = await served.call("POST", "/upstream/v1/ack", body=b"\xc1")
    assert status == 400 and "MessagePack" in answer["message"]


# --- the reference client --------------------------------------------------------------------

async def test_push_master_defaults_above_a_version_sent_ahead(served, tmp_path, capsys):
    from cryptography.hazmat.primitives import serialization

    from gateway._cli import main

    up = served.up
    erp_pem = tmp_path / "erp.pem"
    erp_pem.write_bytes(up.erp_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps(new_catalog()))
    argv = ["erp", "push-master", "catalog", str(catalog), "--key", str(erp_pem), "--url", served.url,
            "--token", TOKEN]
    assert await trio.to_thread.run_sync(main, argv + ["--effective", "2099-01-01T00:00:00+00:00"]) == 0
    assert "catalog version 2 accepted" in capsys.readouterr().out
    # Version 2 waits for 2099; with no --version the next document is 3, not a refused 2.
    assert await trio.to_thread.run_sync(main, argv) == 0
    assert "catalog version 3 accepted" in capsys.readouterr().out
    with up.store.read() as tx:
        assert tx.get("master", "catalog")["version"] == 3
