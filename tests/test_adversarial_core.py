"""Attacks on the core where parts meet: concurrent sources in one group, refusals that must leave
no trace, request identity, the promotion-engine cache across a rolled-back group, and a huge basket.

Real LMDB in tmp dirs; groups are formed by holding the writer with a handler that waits on a
thread event, so the order of the requests inside the next group is the order they were sent.
"""
from __future__ import annotations

import threading
import time

import trio
import trio.testing

from core_ext import Request, Store, limits
from core_ext._ids import body_hash
from core_ext._verify import verify
from device_plugins.pos_api import make_app as make_pos_app
from device_plugins.pos_api._metrics import Metrics as PosMetrics
from prometheus_client import CollectorRegistry
from upstream._envelope import sign_document

from ._data import NOW, apply_master, seed, stored_on_hand
from ._upstream import handlers_for


def snapshot(store) -> dict:
    """Every table's raw keys and values: two equal snapshots mean a byte-identical store."""
    with store.read() as tx:
        return {name: [(bytes(k), bytes(v)) for k, v in tx.txn.cursor(db=db)] for name, db in tx.db.items()}


def cash(cents: int) -> list[dict]:
    return [{"method": "cash", "cents": cents}]


class Gate:
    """A handler that holds the writer's thread until released, so the next group can be lined up."""

    def __init__(self):
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, tx, request, ctx) -> dict:
        self.entered.set()
        self.release.wait(10)
        return {}


async def one_group(core, gate: Gate, requests: list[Request]) -> list:
    """Submit `requests` so that the core loop takes them as one group, in this order."""
    answers: list = [None] * len(requests)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(core.submit, Request("gate", {}, source="test"))
        while not gate.entered.is_set():
            await trio.sleep(0.001)

        async def send(i):
            answers[i] = await core.submit(requests[i])

        for i in range(len(requests)):
            nursery.start_soon(send, i)
            await trio.testing.wait_all_tasks_blocked()
        gate.release.set()
    gate.entered.clear()
    gate.release.clear()
    return answers


# --- concurrency: the last units from every channel at once -----------------------------------

async def test_last_units_are_never_double_sold_under_refuse_from_three_channels(make_core, seeded_store):
    apply_master(seeded_store, "policy", {"negative_stock": "refuse"})
    gate = Gate()
    core = await make_core(seeded_store, extra_handlers={"gate": gate})
    # SKU-1 holds 35 units over three lots; 9 baskets of 4 from three channels want 36.
    requests = []
    for i in range(9):
        source, channel = [("lane1", "ecr"), ("kiosk", "pos"), ("csvdrop", "csv")][i % 3]
        requests.append(Request("sale", {"t": "sale", "id": f"L{i}", "lines": [{"code": "SKU-1", "qty": 4}],
                                         "payments": cash(4 * 1990)}, source=source, channel=channel))
    answers = await one_group(core, gate, requests)
    ok = [a for a in answers if a.body["ok"]]
    refused = [a for a in answers if not a.body["ok"]]
    assert len(ok) == 8 and [a.body["err"] for a in refused] == ["INSUFFICIENT_STOCK"]
    with seeded_store.read() as tx:
        assert stored_on_hand(tx, "SKU-1") == 35 - 32
        lots = {bytes(k): v["qty"] for k, v in tx.items("lots", prefix=b"SKU-1\x00")}
        # Every answer is what the ledger holds: each committed sale's allocations are its event's moves.
        for a in ok:
            event = tx.event(a.body["seq"])
            assert [[m[1], -m[2]] for m in event["moves"]] == \
                [[al["lot"], al["qty"]] for al in a.body["lines"][0]["allocations"]]
    assert all(q >= 0 for q in lots.values()), lots
    assert verify(seeded_store) == []


async def test_same_id_from_two_channels_at_once_commits_once(make_core, seeded_store):
    gate = Gate()
    core = await make_core(seeded_store, extra_handlers={"gate": gate})
    body = {"id": "X1", "lines": [{"code": "SKU-2", "qty": 1}], "payments": cash(4990)}
    answers = await one_group(core, gate, [Request("sale", {**body, "t": "sale"}, source="T1", channel="ecr"),
                                           Request("sale", dict(body), source="T1", channel="pos")])
    assert [a.replayed for a in answers] == [False, True]
    assert answers[0].body == answers[1].body
    with seeded_store.read() as tx:
        sales = [e for e in tx.events() if e["type"] == "sale"]
        assert len(sales) == 1 and stored_on_hand(tx, "SKU-2") == 49


# --- refusals leave the store byte-identical ---------------------------------------------------

async def test_every_refusal_leaves_every_table_byte_identical(make_core, seeded_store):
    apply_master(seeded_store, "policy", {"negative_stock": "refuse"})
    core = await make_core(seeded_store)
    first = await core.request("sale", {"t": "sale", "id": "S1", "member": "M1",
                                        "lines": [{"code": "SKU-2", "qty": 2}], "payments": cash(9980)})
    assert first.body["ok"], first.body
    refused = [
        ("sale", {"id": "R1", "lines": [{"code": "SKU-2", "qty": 1}], "payments": cash(1)}, "PAYMENT_MISMATCH"),
        ("sale", {"id": "R2", "lines": [{"code": "SKU-2", "qty": 49}], "payments": cash(49 * 4990)},
         "INSUFFICIENT_STOCK"),
        # The first line is taken (and its alerts raised) before the second is refused.
        ("sale", {"id": "R3", "member": "M1", "lines": [{"code": "SKU-1", "qty": 30}, {"code": "SKU-9", "qty": 1}],
                  "payments": cash(30 * 1990)}, "UNKNOWN_ITEM"),
        ("sale", {"id": "R4", "member": "M1", "lines": [{"code": "SKU-1", "qty": 34}, {"code": "SKU-2", "qty": 49}],
                  "payments": cash(34 * 1990 + 49 * 4990)}, "INSUFFICIENT_STOCK"),
        ("sale", {"id": "R5", "member": "M2", "lines": [{"code": "SKU-4", "qty": 1}],
                  "payments": [{"method": "points", "cents": 350}]}, "POINTS_INSUFFICIENT"),
        ("sale", {"id": "S1", "member": "M1", "lines": [{"code": "SKU-2", "qty": 3}], "payments": cash(14970)},
         "DUPLICATE_ID_CONFLICT"),
        ("sale", {"id": "R6", "lines": [{"code": "SKU-2", "qty": 0}], "payments": cash(0)}, "BAD_REQUEST"),
        # A lot longer than ECR/1 allows is refused before any stock is looked at.
        ("sale", {"id": "R7", "lines": [{"code": "SKU-1", "lot": "Z" * 600, "qty": 1}], "payments": cash(1990)},
         "BAD_REQUEST"),
        ("sale", {"id": "R8", "lines": [{"code": "SKU-1", "lot": "Z" * 64, "qty": 1}], "payments": cash(1990)},
         "INSUFFICIENT_STOCK"),
        ("return", {"id": "B1", "orig": "S1", "lines": [{"sku": "SKU-2", "qty": 3}]}, "RETURN_EXCEEDS_SALE"),
        ("return", {"id": "B2", "orig": "nope", "lines": [{"sku": "SKU-2", "qty": 1}]}, "UNKNOWN_SALE"),
    ]
    for kind, body, code in refused:
        before = snapshot(seeded_store)
        res = await core.request(kind, {**body, "t": kind})
        assert res.body.get("err") == code, (body["id"], res.body)
        assert snapshot(seeded_store) == before, body["id"]
    before = snapshot(seeded_store)
    q = await core.request("quote", {"t": "quote", "id": "Q", "member": "M1", "lines": [{"code": "SKU-1", "qty": 3}]})
    assert q.body["ok"] and snapshot(seeded_store) == before


# --- request identity ----------------------------------------------------------------------------

def test_request_hash_tells_apart_bodies_whose_flat_encoding_looks_alike():
    # 91, 93 and 44 are the bytes of "[", "]" and ","; the canonical form must not let them pose as
    # structure. Two different bodies with one id must conflict, not replay.
    a = {"id": "S1", "lines": [{"code": "SKU-2", "qty": 1}], "note": [91, 93]}
    b = {"id": "S1", "lines": [{"code": "SKU-2", "qty": 1}], "note": [[44]]}
    assert a != b
    assert body_hash(a) != body_hash(b)


async def test_same_id_with_other_content_is_a_conflict_not_a_replay(core):
    first = await core.request("sale", {"t": "sale", "id": "H1", "lines": [{"code": "SKU-2", "qty": 1}],
                                        "payments": cash(4990), "note": [91, 93]})
    assert first.body["ok"], first.body
    again = await core.request("sale", {"t": "sale", "id": "H1", "lines": [{"code": "SKU-2", "qty": 1}],
                                        "payments": cash(4990), "note": [[44]]})
    assert again.body.get("err") == "DUPLICATE_ID_CONFLICT", again.body


# --- a promotions version rolled back with its group ----------------------------------------------

def promotions(pct_bp: int) -> dict:
    return {"ceiling": {"default_max_pct_bp": 10000, "by_category": {}},
            "rules": [{"id": "P-1", "version": 1, "kind": "percent_off", "params": {"pct_bp": pct_bp},
                       "target": {"skus": ["SKU-2"]}}]}


def bloat(tx, request, ctx) -> dict:
    # More than the map holds: LMDB's MapFullError, so the whole group is rolled back.
    tx.put_raw("meta", "bloat", b"\0" * (16 << 20))
    return {}


async def test_a_rule_set_version_rolled_back_with_its_group_does_not_price_its_successor(
        make_core, tmp_path, store_key, erp_key, upstream_settings):
    store = Store(str(tmp_path / "small"), map_size=8 << 20, min_free_bytes=0)
    try:
        seed(store)
        gate = Gate()
        handlers = {**handlers_for(store_key, erp_key, upstream_settings, None), "gate": gate, "bloat": bloat}
        core = await make_core(store, extra_handlers=handlers)
        issued = int(NOW * 1000) - 1000
        quote = {"t": "quote", "id": "Q", "lines": [{"code": "SKU-2", "qty": 1}]}
        ten = sign_document("promotions", 2, promotions(1000), erp_key, issued_ms=issued)
        answers = await one_group(core, gate, [
            Request("master", {"kind": "promotions", "doc": ten}, source="erp", channel="erp"),
            Request("quote", quote, source="lane1", channel="ecr"),
            Request("bloat", {}, source="test"),
        ])
        assert [a.body.get("err") for a in answers] == ["UNAVAILABLE"] * 3
        # Version 2 was never accepted, so the ERP sends version 2 again, now at 50%.
        half = sign_document("promotions", 2, promotions(5000), erp_key, issued_ms=issued)
        res = await core.submit(Request("master", {"kind": "promotions", "doc": half}, source="erp", channel="erp"))
        assert res.body["ok"], res.body
        q = await core.request("quote", quote)
        assert q.body["ruleset"] == 2
        assert q.body["total_cents"] == 2495, q.body
    finally:
        store.close()


# --- huge but legal ---------------------------------------------------------------------------------

async def test_a_basket_of_the_most_lines_allowed_commits_quickly(core):
    lines = [{"code": ["SKU-2", "SKU-4", "4711", "B-100"][i % 4], "qty": 1} for i in range(limits.MAX_LINES)]
    total = limits.MAX_LINES // 2 * (4990 + 350)
    started = time.perf_counter()
    res = await core.request("sale", {"t": "sale", "id": "BIG", "lines": lines, "payments": cash(total)})
    elapsed = time.perf_counter() - started
    assert res.body["ok"], res.body.get("msg")
    assert len(res.body["lines"]) == limits.MAX_LINES and res.body["total_cents"] == total
    assert elapsed < 5, elapsed
    assert verify(core.store) == []


# --- POS/1: a client gone while its sale is in the writer ----------------------------------------

async def test_pos_sale_abandoned_mid_request_commits_once_and_a_resend_gets_200(make_core, seeded_store):
    gate = Gate()
    core = await make_core(seeded_store, extra_handlers={"gate": gate})
    app = make_pos_app(core.submit, {"kiosk": "k-token"}, PosMetrics(CollectorRegistry()))
    raw = b'{"id":"P1","lines":[{"code":"SKU-2","qty":1}],"payments":[{"method":"cash","cents":4990}]}'
    scope = {"type": "http", "method": "POST", "path": "/pos/v1/sales", "raw_path": b"/pos/v1/sales",
             "headers": [(b"authorization", b"Bearer k-token"), (b"content-type", b"application/json")]}

    async def call():
        sent = []
        events = [{"type": "http.request", "body": raw, "more_body": False}]

        async def receive():
            if events:
                return events.pop(0)
            await trio.sleep_forever()

        async def send(message):
            sent.append(message)

        await app(scope, receive, send)
        return sent

    async with trio.open_nursery() as nursery:
        nursery.start_soon(core.submit, Request("gate", {}, source="test"))
        while not gate.entered.is_set():
            await trio.sleep(0.001)
        abandoned = trio.CancelScope()

        async def doomed():
            with abandoned:
                await call()

        nursery.start_soon(doomed)
        await trio.testing.wait_all_tasks_blocked()
        abandoned.cancel()  # the server drops the request task: the client went away
        gate.release.set()
    # The writer takes requests in order: once a later one is answered, the abandoned one was applied.
    assert (await core.request("ping", {"t": "ping", "id": "after"})).body["ok"]
    with seeded_store.read() as tx:
        sales = [e for e in tx.events() if e["type"] == "sale"]
        assert len(sales) == 1
        first_seq = sales[0]["seq"]
    sent = await call()
    assert sent[0]["status"] == 200
    assert b'"seq":%d' % first_seq in sent[1]["body"]
    with seeded_store.read() as tx:
        assert len([e for e in tx.events() if e["type"] == "sale"]) == 1
