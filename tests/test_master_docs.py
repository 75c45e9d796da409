"""Master data and movements from the ERP: signed, versioned, validated entry by entry, whole or not at all."""
from __future__ import annotations

import copy

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core_ext import Request, lot_key
from upstream import SealSignal, Settings, encode_envelope, run_master_activation, sign_document
from upstream._handlers import read_next_activation

from ._data import CATALOG, NOW
from ._upstream import handlers_for

NOW_MS = int(NOW * 1000)


def new_catalog():
    body = copy.deepcopy(CATALOG)
    body["items"][1]["unit_cents"] = 5990
    return body


def snapshot(store) -> dict:
    """Everything master data and movements may touch."""
    with store.read() as tx:
        return {t: [(k, v) for k, v in tx.items(t)] for t in ("master", "master_docs", "catalog", "codes", "lots",
                                                               "movements", "events", "meta")}


async def put_master(served, doc, kind=None):
    return await served.call("PUT", f"/upstream/v1/master/{kind or doc['kind']}", body=encode_envelope(doc))


async def post_movements(served, doc):
    return await served.call("POST", "/upstream/v1/movements", body=encode_envelope(doc))


# --- master documents ------------------------------------------------------------------------

async def test_a_signed_newer_catalog_is_applied_and_recorded(served):
    up = served.up
    doc = sign_document("catalog", 2, new_catalog(), up.erp_key, issued_ms=NOW_MS - 1000)
    status, _h, body = await put_master(served, doc)
    assert status == 200 and body == {"applied": 2}
    with up.store.read() as tx:
        assert tx.get("catalog", "SKU-2")["unit_cents"] == 5990
        assert tx.get("master", "catalog")["version"] == 2
        # Only promotion rule sets are kept after they apply (old sales are re-priced with them).
        assert tx.get("master_docs", b"catalog\x00" + (2).to_bytes(8, "big")) is None
        last = [e for e in tx.events() if e["type"] == "master_applied"][-1]
    assert last["type"] == "master_applied" and last["id"] == "erp:catalog:2"
    assert (last["kind"], last["version"], last["issued_ms"]) == ("catalog", 2, NOW_MS - 1000)
    _s, _h, st = await served.call("GET", "/upstream/v1/status")
    assert st["versions"]["catalog"] == 2
    # A sale now is priced by it, and the ledger says which version was in force before it.
    sale = await up.sale("after-catalog", unit=5990)
    assert sale.body["total_cents"] == 5990


@pytest.mark.parametrize("case", ["bad signature", "stale version", "same version", "invalid entries",
                                  "kind mismatch", "not a document"])
async def test_refused_documents_change_nothing(served, case):
    up = served.up
    before = snapshot(up.store)
    good = new_catalog()
    if case == "bad signature":
        doc, want = sign_document("catalog", 2, good, Ed25519PrivateKey.generate(), issued_ms=1), (403, "BAD_SIGNATURE")
    elif case == "stale version":
        doc, want = sign_document("catalog", 0, good, up.erp_key, issued_ms=1), (409, "VERSION_NOT_NEWER")
    elif case == "same version":
        doc, want = sign_document("catalog", 1, good, up.erp_key, issued_ms=1), (409, "VERSION_NOT_NEWER")
    elif case == "invalid entries":
        good["items"][0]["unit_cents"] = -1
        good["items"][2]["gtins"] = ["123"]
        good["items"].append({"sku": "SKU-1", "category": "x", "unit_cents": 1})
        doc, want = sign_document("catalog", 2, good, up.erp_key, issued_ms=1), (422, "INVALID_CONTENT")
    elif case == "kind mismatch":
        doc, want = sign_document("members", 2, {"mode": "full", "members": []}, up.erp_key, issued_ms=1), \
            (400, "BAD_REQUEST")
    else:
        doc, want = {"v": 1, "kind": "catalog"}, (400, "BAD_REQUEST")
    status, _h, body = await put_master(served, doc, kind="catalog")
    assert (status, body["error"]) == want, body
    if case == "invalid entries":
        errors = body["errors"]
        assert len(errors) == 3
        assert any("items[0] (sku 'SKU-1')" in e and "unit_cents" in e for e in errors)
        assert any("items[2] (sku 'SKU-3')" in e and "'123'" in e for e in errors)
        assert any("items[4]" in e and "twice" in e for e in errors)
    assert snapshot(up.store) == before


async def test_each_kind_goes_through_its_own_validation(served):
    up = served.up
    ok = {
        "members": {"mode": "delta", "members": [{"id": "M9", "tier": "gold", "points": 5, "name": "New"}]},
        "recalls": {"recalls": [{"recall_id": "R1", "sku": "SKU-1", "lot": "A1", "reason": "sterility"}]},
        "policy": {"negative_stock": "refuse", "batch_max_events": 2},
    }
    for kind, body in ok.items():
        status, _h, answer = await put_master(served, sign_document(kind, 5, body, up.erp_key, issued_ms=NOW_MS))
        assert status == 200 and answer == {"applied": 5}, (kind, answer)
    with up.store.read() as tx:
        assert tx.get("members", "M9")["points"] == 5 and tx.get("members", "M1") is not None
        assert tx.get("recalls", lot_key("SKU-1", "A1"))["recall_id"] == "R1"
        applied = [e["id"] for e in tx.events() if e["type"] == "master_applied"]
    assert applied == ["erp:members:5", "erp:recalls:5", "erp:policy:5"]
    # The policy's batch size now rules sealing.
    await up.seal(flush=False)
    assert {e["last_event"] - e["first_event"] for e in up.envelopes()} == {1}
    status, _h, answer = await put_master(served, sign_document("policy", 6, {"negative_stock": "maybe"},
                                                                up.erp_key, issued_ms=NOW_MS))
    assert status == 422 and answer["errors"] == ["negative_stock: must be 'allow' or 'refuse'"]


async def test_a_document_sent_ahead_waits_for_its_time(served, clock):
    up = served.up
    effective = NOW_MS + 3_600_000
    doc = sign_document("catalog", 2, new_catalog(), up.erp_key, issued_ms=NOW_MS, effective_ms=effective)
    status, _h, answer = await put_master(served, doc)
    assert status == 200 and answer == {"applied": 2, "effective_ms": effective}
    _s, _h, st = await served.call("GET", "/upstream/v1/status")
    assert st["versions"]["catalog"] == 1 and st["pending"] == {"catalog": [[2, effective]]}
    # Not yet: activating changes nothing.
    res = await up.submit(Request("master_activate", {}))
    assert res.body["activated"] == []
    with up.store.read() as tx:
        assert tx.get("catalog", "SKU-2")["unit_cents"] == 4990
    # Version 2 is taken, in force or not.
    status, _h, _a = await put_master(served, sign_document("catalog", 2, CATALOG, up.erp_key, issued_ms=NOW_MS))
    assert status == 409
    clock.t = effective / 1000
    res = await up.submit(Request("master_activate", {}))
    assert res.body["activated"] == [["catalog", 2]]
    with up.store.read() as tx:
        assert tx.get("catalog", "SKU-2")["unit_cents"] == 5990
        assert tx.get("master", "catalog")["pending"] == []
        last = tx.event(tx.last_seq())
    assert last["id"] == "erp:catalog:2" and last["effective_ms"] == effective


async def test_the_activation_timer_switches_at_effective_ms(autojump_clock, make_core, seeded_store, store_key,
                                                             erp_key, nursery):
    def wall() -> float:
        return NOW + autojump_clock.current_time()

    sig = SealSignal()
    settings = Settings(token="t")
    core = await make_core(seeded_store, clock=wall, extra_handlers=handlers_for(store_key, erp_key, settings, sig))
    await nursery.start(lambda task_status: run_master_activation(
        core.submit, lambda: read_next_activation(seeded_store), sig, now_ms=lambda: int(wall() * 1000),
        task_status=task_status))
    start = trio.current_time()
    effective = int(wall() * 1000) + 90_000
    doc = sign_document("catalog", 2, new_catalog(), erp_key, issued_ms=NOW_MS, effective_ms=effective)
    res = await core.submit(Request("master", {"kind": "catalog", "doc": doc}, source="erp", channel="erp"))
    assert res.ok
    while True:
        with seeded_store.read() as tx:
            if tx.get("master", "catalog")["version"] == 2:
                break
        await core.wait_commit()
    assert trio.current_time() - start >= 90


# --- movements -------------------------------------------------------------------------------

MOVES = [
    {"id": "R-1", "type": "receipt", "sku": "SKU-1", "lot": "D4", "expiry": "2029-01-31", "qty": 12},
    {"id": "T-1", "type": "transfer_out", "sku": "SKU-2", "lot": None, "expiry": None, "qty": 5, "reason": "to S002"},
    {"id": "A-1", "type": "adjustment", "sku": "SKU-4", "lot": None, "expiry": None, "qty": -3, "reason": "damaged"},
    {"id": "O-1", "type": "opening", "sku": "SKU-1", "lot": "A1", "expiry": "2027-03-31", "qty": 7},
]


def on_hand(store, sku, lot):
    with store.read() as tx:
        row = tx.get("lots", lot_key(sku, lot))
    return row["qty"] if row else 0


async def test_movements_apply_once_by_id(served):
    up = served.up
    doc = sign_document("movements", 1, {"movements": MOVES}, up.erp_key, issued_ms=NOW_MS)
    status, _h, body = await post_movements(served, doc)
    assert status == 200 and body == {"applied": 4, "duplicates": 0}
    assert on_hand(up.store, "SKU-1", "D4") == 12 and on_hand(up.store, "SKU-2", None) == 45
    assert on_hand(up.store, "SKU-4", None) == 97 and on_hand(up.store, "SKU-1", "A1") == 7
    with up.store.read() as tx:
        seqs = [tx.get("movements", m["id"]) for m in MOVES]
        types = [tx.event(s)["type"] for s in seqs]
        assert [tx.event(s)["id"] for s in seqs] == [f"erp:{m['id']}" for m in MOVES]
    assert types == ["receipt", "transfer_out", "adjustment", "opening"]
    before = snapshot(up.store)
    # The same document again, and a later one repeating an id: nothing applies twice.
    status, _h, body = await post_movements(served, doc)
    assert status == 200 and body == {"applied": 0, "duplicates": 4}
    assert snapshot(up.store) == before
    again = sign_document("movements", 2, {"movements": [MOVES[0], {**MOVES[0], "id": "R-2", "qty": 1}]},
                          up.erp_key, issued_ms=NOW_MS)
    status, _h, body = await post_movements(served, again)
    assert body == {"applied": 1, "duplicates": 1} and on_hand(up.store, "SKU-1", "D4") == 13


async def test_a_transfer_beyond_stock_refuses_the_whole_document(served):
    up = served.up
    before = snapshot(up.store)
    moves = [MOVES[0], {"id": "T-9", "type": "transfer_out", "sku": "SKU-3", "lot": "L1", "qty": 4}]
    doc = sign_document("movements", 1, {"movements": moves}, up.erp_key, issued_ms=NOW_MS)
    status, _h, body = await post_movements(served, doc)
    assert status == 422 and body["error"] == "INSUFFICIENT_STOCK"
    assert "movements[1]" in body["message"] and "T-9" in body["message"]
    assert snapshot(up.store) == before  # R-1, before it in the document, did not apply either


@pytest.mark.parametrize("bad,problem", [
    ({"id": "", "type": "receipt", "sku": "SKU-1", "qty": 1}, "movements[0]: id"),
    ({"id": "X", "type": "gift", "sku": "SKU-1", "qty": 1}, "(id 'X'): type"),
    ({"id": "X", "type": "receipt", "sku": "SKU-1", "qty": 0}, "(id 'X'): a receipt's qty must be positive"),
    ({"id": "X", "type": "adjustment", "sku": "SKU-1", "qty": 0}, "(id 'X'): an adjustment's qty must not be 0"),
    ({"id": "X", "type": "receipt", "sku": "SKU-1", "lot": "A", "expiry": "31/01/2029", "qty": 1}, "expiry"),
    ({"id": "X", "type": "receipt", "sku": "NOPE", "qty": 1}, "NOPE"),
])
async def test_invalid_movements_are_named_and_change_nothing(served, bad, problem):
    up = served.up
    before = snapshot(up.store)
    doc = sign_document("movements", 1, {"movements": [bad]}, up.erp_key, issued_ms=NOW_MS)
    status, _h, body = await post_movements(served, doc)
    assert status == 422, body
    assert problem in body["message"]
    assert snapshot(up.store) == before


async def test_movements_need_the_erp_signature(served):
    up = served.up
    before = snapshot(up.store)
    doc = sign_document("movements", 1, {"movements": MOVES}, Ed25519PrivateKey.generate(), issued_ms=NOW_MS)
    status, _h, body = await post_movements(served, doc)
    assert status == 403 and body["error"] == "BAD_SIGNATURE"
    master_doc = sign_document("catalog", 2, CATALOG, up.erp_key, issued_ms=NOW_MS)
    status, _h, body = await post_movements(served, master_doc)
    assert status == 400 and "catalog" in body["message"]
    assert snapshot(up.store) == before


async def test_a_recall_raises_its_on_hand_alert_at_once(served):
    up = served.up
    doc = sign_document("recalls", 1, {"recalls": [{"recall_id": "R-77", "sku": "SKU-1", "lot": "C3",
                                                    "reason": "packaging"}]}, up.erp_key, issued_ms=NOW_MS)
    status, _h, _body = await put_master(served, doc)
    assert status == 200
    with up.store.read() as tx:
        alert = tx.get("alerts", b"SKU-1\x00recalled\x00C3")
        raised = [e for e in tx.events() if e["type"] == "alert" and e.get("recall_id") == "R-77"]
    assert alert["qty"] == 20 and alert["recall_id"] == "R-77"
    assert len(raised) == 1  # and the ERP hears of it in the next batch
