"""Sealing in slices: documents cut from the stored bytes, bodies packed piece by piece, the moves
after the head remembered between seal requests, and pages of batches bounded in bytes."""
from __future__ import annotations

import gc

import msgpack
import zstandard

from core_ext import ledger, u64
from upstream import Settings
from upstream._envelope import decode_body
from upstream._sealer import DocPacker, read_head, seal_pending, to_doc

from ._data import NOW
from ._upstream import TOKEN, Upstream, append_sales, handlers_for, serve
from .erp_test_client import ChainChecker

_packb = msgpack.Packer(use_bin_type=True).pack


def stored_events(store) -> list[tuple[bytes, dict]]:
    with store.read() as tx:
        return [(bytes(v), msgpack.unpackb(v, raw=False, strict_map_key=False))
                for _k, v in tx.txn.cursor(db=tx.db["events"])]


def put_raw_event(store, event: dict) -> int:
    """Store `event` as the next event packed the old way (text as raw, not str), in a transaction
    of its own, as another writer of the same files might have left it; its seq."""
    with store.begin(write=True) as tx:
        seq = tx.last_seq() + 1
        tx.put_raw("events", u64(seq), msgpack.packb({**event, "seq": seq}, use_bin_type=False))
        tx.put("meta", "last_seq", seq)
    return seq


def reference_body(events: list[dict], first: int, last: int, alerts: list) -> bytes:
    """The body as UP/1 defines it, built the plain way: documents, and each SKU and lot touched with
    its balance as of the range's last event (the ledger replayed that far)."""
    touched = {}
    for e in events[first - 1:last]:
        for sku, lot, delta, _exp, _ser in e.get("moves") or ():
            touched[(sku, lot)] = touched.get((sku, lot), 0) + delta
    balances, _skus = ledger.replay(e for e in events if e["seq"] <= last)
    stock = [[sku, lot, delta, balances.get((sku, lot), 0)] for (sku, lot), delta in touched.items()]
    return _packb({"docs": [to_doc(e) for e in events[first - 1:last]], "stock": stock, "alerts": alerts})


def assert_bodies_are_the_reference(up: Upstream) -> list[dict]:
    envs = up.envelopes()
    ChainChecker(up.store_key.public_key(), store="S001").accept_all(envs)
    events = up.events()
    for env in envs:
        raw = zstandard.ZstdDecompressor().decompress(env["body"])
        alerts = msgpack.unpackb(raw, raw=False)["alerts"]
        assert raw == reference_body(events, env["first_event"], env["last_event"], alerts), env["seq"]
    return envs


# --- documents from the stored bytes --------------------------------------------------------

async def test_documents_cut_from_the_stored_bytes_are_the_packed_documents(upstream):
    await upstream.sale("plain")
    await upstream.sale("lane", sku="SKU-1", qty=2, unit=1990)
    long = "x" * 40
    with upstream.store.begin(write=True) as tx:
        tx.append_event({"id": "no-type", "ts_ms": 1, "moves": []})                      # no type
        tx.append_event({"type": "late", "id": "ts-after-seq", "moves": []})             # ts_ms after seq
        tx.append_event({"_private": 1, "type": "t", "store": "S001", "id": "i", "ts_ms": 2, "note": long})
        tx.append_event({f"k{i}": i for i in range(20)} | {"type": "wide", "id": "w", "ts_ms": 3})  # map16
        tx.append_event({"type": "t", "id": "inner", "ts_ms": 4, "x": {"seq": 1, "_y": 2}, "moves": []})
    # Another packer's bytes (a 40-byte text as raw16, not str8), in the entries a document
    # re-orders: those are checked, so the document is packed afresh.
    put_raw_event(upstream.store, {"note": long, "type": "old", "id": "o", "ts_ms": 5})
    # ... and in the entries copied as stored: the same values, in the bytes they were stored in.
    foreign = put_raw_event(upstream.store, {"type": "old", "id": "o2", "ts_ms": 6, "note": long})
    packer = DocPacker()
    events = stored_events(upstream.store)
    assert {"sale", "late", "wide", "old", "receipt"} <= {e.get("type") for _raw, e in events}
    for raw, event in events:
        packed = packer.pack(raw, event)
        if event["seq"] == foreign:
            assert packed != _packb(to_doc(event)) and msgpack.unpackb(packed) == to_doc(event)
            assert list(msgpack.unpackb(packed))[:4] == ["seq", "type", "id", "ts_ms"]
        else:
            assert packed == _packb(to_doc(event)), event


# --- bodies ---------------------------------------------------------------------------------

async def test_bodies_sealed_over_many_requests_are_the_reference_bytes(make_core, seeded_store, store_key, erp_key):
    settings = Settings(batch_max_events=3, seal_max_events=6, scan_max_events=4)
    core = await make_core(seeded_store, extra_handlers=handlers_for(store_key, erp_key, settings, None))
    up = Upstream(core, store_key, erp_key, settings, None)
    for round_ in range(3):
        for i in range(5):
            await up.sale(f"r{round_}-{i}", sku=("SKU-2", "SKU-1")[i % 2], qty=1 + i % 2, unit=(4990, 1990)[i % 2])
        append_sales(up.store, 7, sku="SKU-4")
        await up.seal_all()
    envs = assert_bodies_are_the_reference(up)
    assert envs[-1]["last_event"] == up.events()[-1]["seq"] and len(envs) > 10


async def test_a_request_reads_a_big_backlog_before_sealing_any_of_it(make_core, seeded_store, store_key, erp_key):
    settings = Settings(batch_max_events=10, seal_max_events=20, scan_max_events=25)
    core = await make_core(seeded_store, extra_handlers=handlers_for(store_key, erp_key, settings, None))
    up = Upstream(core, store_key, erp_key, settings, None)
    await up.seal_all()
    append_sales(up.store, 60)
    up.store.cache.clear()   # a restart: the balances as of the head are no longer in memory
    answers = [await up.seal() for _ in range(6)]
    # The 60 events after the head are read first, 25 a request; then 20 are sealed a request.
    assert [a["sealed"] for a in answers] == [0, 0, 2, 2, 2, 0]
    assert_bodies_are_the_reference(up)


async def test_a_backlog_is_sealed_at_once_while_the_balances_at_the_head_are_kept(
        make_core, seeded_store, store_key, erp_key):
    settings = Settings(batch_max_events=10, seal_max_events=20, scan_max_events=25)
    core = await make_core(seeded_store, extra_handlers=handlers_for(store_key, erp_key, settings, None))
    up = Upstream(core, store_key, erp_key, settings, None)
    await up.seal_all()
    append_sales(up.store, 60)
    answers = [await up.seal() for _ in range(4)]
    assert [a["sealed"] for a in answers] == [2, 2, 2, 0]   # each event read once, when sealed
    assert_bodies_are_the_reference(up)


# --- the memory of what follows the head -----------------------------------------------------

def _seal(tx, up: Upstream, settings: Settings, flush: bool = True):
    return seal_pending(tx, store_id="S001", private_key=up.store_key, now_ms=int(NOW * 1000),
                        settings=settings, flush=flush)


def _seal_all(tx, up: Upstream, settings: Settings) -> None:
    while read_head(tx).last_event < tx.last_seq():
        _seal(tx, up, settings)


def _sell_in(tx, n: int, sku: str, tag: str) -> None:
    for i in range(n):
        moves = [[sku, None, -1, None, []]]
        ledger.apply_moves(tx, moves)
        tx.append_event({"type": "sale", "id": f"{tag}:{i}", "ts_ms": int(NOW * 1000) + i, "moves": moves})


async def test_events_read_then_rolled_back_are_not_remembered(upstream):
    settings = Settings(batch_max_events=2, seal_max_events=4, scan_max_events=3)
    store = upstream.store
    with store.begin(write=True) as tx:
        _seal_all(tx, upstream, settings)     # the seeded events, read and sealed
    store.cache.clear()   # a restart: what follows the head is read again
    tx = store.begin(write=True)
    _sell_in(tx, 10, "SKU-4", "gone")
    assert _seal(tx, upstream, settings) == []   # reads 3 of the 10 after the head, seals nothing
    tx.abort()
    with store.begin(write=True) as tx:  # the same seqs, other events: SKU-2 moves, not SKU-4
        _sell_in(tx, 10, "SKU-2", "kept")
    with store.begin(write=True) as tx:
        _seal_all(tx, upstream, settings)
    assert_bodies_are_the_reference(upstream)


async def test_a_seal_rolled_back_is_not_remembered(upstream):
    settings = Settings(batch_max_events=2)
    store = upstream.store
    with store.begin(write=True) as tx:
        _seal_all(tx, upstream, settings)
    tx = store.begin(write=True)
    _sell_in(tx, 3, "SKU-4", "gone")
    assert len(_seal(tx, upstream, settings, flush=False)) == 1
    tx.abort()
    with store.begin(write=True) as tx:
        _sell_in(tx, 3, "SKU-2", "kept")
        _seal(tx, upstream, settings)
    assert_bodies_are_the_reference(upstream)


# --- pages and the client ----------------------------------------------------------------------

async def test_a_page_stops_at_its_byte_limit_and_says_more(upstream, nursery):
    for i in range(12):
        await upstream.sale(f"p{i}")
    await upstream.seal()
    with upstream.store.read() as tx:
        sizes = [len(v) for _k, v in tx.txn.cursor(db=tx.db["batches"])]
    assert len(sizes) >= 4
    limit = sizes[0] + sizes[1]   # two batches reach it: the page ends with the second
    served = await serve(nursery, upstream, settings=Settings(token=TOKEN, page_max_bytes=limit))
    _s, _h, page = await served.call("GET", "/upstream/v1/batches?after=0&limit=100")
    assert [e["seq"] for e in page["batches"]] == [1, 2] and page["more"] is True
    _s, _h, page = await served.call("GET", "/upstream/v1/batches?after=2&limit=100")
    assert page["batches"][0]["seq"] == 3
    tiny = await serve(nursery, upstream, settings=Settings(token=TOKEN, page_max_bytes=1))
    _s, _h, page = await tiny.call("GET", "/upstream/v1/batches?after=0&limit=100")
    assert [e["seq"] for e in page["batches"]] == [1] and page["more"] is True  # one at least


async def test_decoding_a_body_leaves_the_collector_as_it_found_it(upstream):
    await upstream.sale("gc")
    await upstream.seal()
    env = upstream.envelopes()[-1]
    assert gc.isenabled()
    assert decode_body(env)["docs"][-1]["id"] == "lane1:gc"
    assert gc.isenabled()
    gc.disable()
    try:
        decode_body(env)
        assert not gc.isenabled()
    finally:
        gc.enable()


async def test_a_plan_that_shrinks_between_requests_seals_the_reference(upstream):
    from core_ext import _master
    settings = Settings(batch_max_events=10, seal_max_events=20, scan_max_events=25)
    store = upstream.store
    with store.begin(write=True) as tx:
        _seal_all(tx, upstream, settings)
        _sell_in(tx, 65, "SKU-4", "a")
        store.cache.clear()   # a restart: what follows the head is read again
        assert _seal(tx, upstream, settings) == []      # 20 to seal, 25 of the 65 after the head read
        # Batches of 3 from now on: the next request seals only 18, before what was read starts.
        _master.apply(tx, "policy", 1, {"batch_max_events": 3})
        _sell_in(tx, 2, "SKU-1", "b")
        _seal_all(tx, upstream, settings)
    envs = assert_bodies_are_the_reference(upstream)
    assert {e["last_event"] - e["first_event"] + 1 for e in envs[-10:]} <= {3, 2, 1}


def test_documents_are_counted_by_kind_whatever_their_type_holds():
    from upstream._erp_client import summarize
    env = {"seq": 1, "first_event": 1, "last_event": 5}
    body = {"docs": [{"type": "sale"}, {"type": "sale"}, {"type": ["odd"]}, {}, "not a map"],
            "stock": [], "alerts": []}
    assert summarize(env, body).by_type == {"sale": 2, "['odd']": 1, "None": 2}
