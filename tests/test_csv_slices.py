"""Legacy POS files through the real core: checked whole, applied in slices between other requests,
continued after a restart, recorded as they happened at the counter, in memory that does not grow."""
from __future__ import annotations

import io
import json
import os
import signal
import tracemalloc

import pytest
import trio
from hypothesis import HealthCheck, given, settings, strategies as st
from prometheus_client import CollectorRegistry

from core_ext import Request, Store
from device_plugins.csv_drop import BasketIndex, CsvDrop, CsvMapping, ErrorList, Metrics, scan

from ._data import apply_master
from ._csv import device as csv_device, drop_file, listing, stock, csv_worker

HEADER = "TicketNo,ItemCode,Qty,Lot,Exp,Card,Pay\n"
COLUMNS = {"id": "TicketNo", "code": "ItemCode", "qty": "Qty", "lot": "Lot", "expiry": "Exp",
           "member": "Card", "payment": "Pay"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def device(path, **over) -> dict:
    return csv_device(path, COLUMNS, **over)





def file_sales(store, source: str = "legacy-pos") -> list[str]:
    with store.read() as tx:
        return [e["id"] for e in tx.events() if e["type"] == "sale" and e["id"].startswith(source + ":")]


def baskets_file(n: int, code: str = "B-100") -> str:
    return HEADER + "".join(f"T{i},{code},1,,,,\n" for i in range(n))



@pytest.fixture
def registry():
    return CollectorRegistry()


# --- checked whole ----------------------------------------------------------------------------

async def test_every_bad_row_of_every_kind_is_listed_and_nothing_is_applied(core, drop_dir, registry):
    drop = CsvDrop(device(drop_dir), core.submit, Metrics(registry))
    drop.prepare()
    before, sales = stock(core.store), file_sales(core.store)
    drop_file(drop_dir, "mixed.csv", HEADER
              + "T1,B-100,1,,,,\n"              # good
              + "T2,NO-SUCH,1,,,,\n"            # a code the catalog does not know
              + "T3,B-100,two,,,,\n"            # not a number
              + "T4,SKU-1,1," + "L" * 65 + ",,,\n"  # a lot beyond ECR/1's 64 characters
              + "T5,SKU-1,1,A1,31.12.2027,,\n"  # not the configured date format
              + "T6,B-100,1,,,M1,cash\n"
              + "T6,B-100,1,,,M2,cash\n"        # another member for the same basket
              + "T7,B-100,1,,,,points\n"        # points cannot settle a file's basket
              + "T8,NO-SUCH,0,,,,\n")           # two faults on one row: both listed
    assert await drop.poll() == [("mixed.csv", "rejected")]
    assert (stock(core.store), file_sales(core.store)) == (before, sales)
    assert listing(drop_dir) == {"rejected/mixed.csv", "rejected/mixed.csv.errors.txt"}
    lines = (drop_dir / "rejected/mixed.csv.errors.txt").read_text().splitlines()
    assert lines == [
        "row 3: UNKNOWN_ITEM: code 'NO-SUCH' matches nothing in the catalog",
        "row 4: qty 'two' is not a number",
        "row 5: lot is 65 characters long, at most 64 are allowed",
        "row 6: expiry '31.12.2027' is not a date of the form %Y-%m-%d",
        "row 8: member 'M2' differs from 'M1' given for the same basket on row 7",
        "row 9: payment 'points' is points, which cannot settle a file's basket (use cash, card, insurance)",
        "row 10: qty is zero",
        "row 10: UNKNOWN_ITEM: code 'NO-SUCH' matches nothing in the catalog",
    ]
    assert registry.get_sample_value("gateway_csv_rejects_total",
                                     {"device": "legacy-pos", "reason": "UNKNOWN_ITEM"}) == 2
    with core.store.read() as tx:
        assert list(tx.items("files")) == []  # never begun


# --- applied in slices ------------------------------------------------------------------------

async def test_slices_commit_apart_and_a_tills_sale_commits_between_two_of_them(core, drop_dir, registry):
    # The till's sale is sent while the file is between its first and second slice; the seqs show
    # it committed between them, so the file never held the writer for longer than a slice.
    state = {"slices": 0}

    async def submit(request):
        response = await core.submit(request)
        if request.kind == "csv_slice":
            state["slices"] += 1
            # How long the slice held the writer, which the watcher sizes the next ones by.
            assert 0 < response.body["held_ms"] < 60_000
            if state["slices"] == 1:
                state["till"] = await core.request("sale", {
                    "id": "till-1", "lines": [{"code": "4711", "qty": 1}],
                    "payments": [{"method": "cash", "cents": 4990}]}, source="lane1")
        return response

    drop = CsvDrop(device(drop_dir, slice_baskets=2), submit, Metrics(registry))
    drop.prepare()
    commits = core.loop.commits
    drop_file(drop_dir, "day.csv", baskets_file(6))
    assert await drop.poll() == [("day.csv", "applied")]
    assert state["slices"] == 3 and state["till"].ok
    with core.store.read() as tx:
        seqs = [(e["seq"], e["source"]) for e in tx.events() if e["type"] == "sale"][-7:]
    assert [source for _seq, source in seqs] == ["legacy-pos"] * 2 + ["lane1"] + ["legacy-pos"] * 4
    assert core.loop.commits - commits >= 1 + 3 + 1  # the check, three slices, the till's sale
    assert listing(drop_dir) == {"done/day.csv"}
    assert registry.get_sample_value("gateway_csv_slices_total", {"device": "legacy-pos"}) == 3
    assert registry.get_sample_value("gateway_csv_baskets_total", {"device": "legacy-pos"}) == 6


async def test_progress_is_durable_with_each_slice_and_a_stopped_watcher_continues_where_it_stopped(
        core, drop_dir, registry):
    stop_after = 2
    answered = []

    async def submit(request):
        response = await core.submit(request)
        if request.kind == "csv_slice":
            answered.append(response.body["next"])
            if len(answered) == stop_after:
                scope.cancel()  # the watcher is stopped after its second slice committed
        return response

    drop = CsvDrop(device(drop_dir, slice_baskets=3), submit, Metrics(registry))
    drop.prepare()
    before = stock(core.store)
    drop_file(drop_dir, "long.csv", baskets_file(10))
    with trio.CancelScope() as scope:
        await drop.poll()
    assert answered == [3, 6]
    assert len(file_sales(core.store)) == 6 and os.path.exists(drop_dir / "long.csv")
    with core.store.read() as tx:
        [(key, progress)] = list(tx.items("files"))
    assert key.decode().startswith("legacy-pos:")
    assert (progress["file"], progress["next"], progress["baskets"], progress["done"]) == ("long.csv", 6, 10, False)

    again = CsvDrop(device(drop_dir, slice_baskets=3), core.submit, Metrics(CollectorRegistry()))
    again.prepare()
    sent = []

    async def watch(request):
        sent.append(request)
        return await core.submit(request)

    again.submit = watch
    assert await again.poll() == [("long.csv", "applied")]
    assert [r.body["first"] for r in sent if r.kind == "csv_slice"] == [6, 9]  # from where it stopped
    sales = file_sales(core.store)
    assert len(sales) == len(set(sales)) == 10
    assert before["SKU-4"] - stock(core.store)["SKU-4"] == 10
    assert listing(drop_dir) == {"done/long.csv"}
    with core.store.read() as tx:
        assert tx.get("files", key)["done"] is True


async def test_a_slice_sent_again_applies_nothing_twice(core):
    docs = [{"t": "sale", "id": f"f:{i}", "rows": [i + 2], "lines": [{"code": "B-100", "qty": 1}]}
            for i in range(3)]
    body = {"file": "x.csv", "hash": "cd" * 32, "baskets": 3, "rows": 3}
    before = stock(core.store)
    first = await core.request("csv_slice", {**body, "first": 0, "docs": docs[:2]}, source="legacy", channel="csv")
    again = await core.request("csv_slice", {**body, "first": 0, "docs": docs[:2]}, source="legacy", channel="csv")
    gap = await core.request("csv_slice", {**body, "first": 3, "docs": docs[2:]}, source="legacy", channel="csv")
    last = await core.request("csv_slice", {**body, "first": 1, "docs": docs[1:]}, source="legacy", channel="csv")
    assert (first.body["applied"], first.body["next"], first.body["done"]) == (2, 2, False)
    assert (again.body["applied"], again.body["next"]) == (0, 2)
    assert gap.body["err"] == "BAD_REQUEST"
    assert (last.body["applied"], last.body["next"], last.body["done"]) == (1, 3, True)
    assert before["SKU-4"] - stock(core.store)["SKU-4"] == 3
    changed = await core.request("csv_slice", {**body, "baskets": 4, "first": 3, "docs": docs[2:]},
                                 source="legacy", channel="csv")
    assert changed.body["err"] == "BAD_REQUEST" and "mapping" in changed.body["msg"]


def test_sigkill_mid_file_then_a_restart_applies_every_basket_exactly_once(tmp_path, drop_dir):
    data = tmp_path / "data"
    drop_file(drop_dir, "k.csv", baskets_file(9) + "T3,4711,1,,,,\n")  # T3 has a row at the end too
    stalled = csv_worker(data, drop_dir, "stall:2", "2")
    try:
        assert json.loads(stalled.stdout.readline()) == {"committed": True, "slices": [2, 4]}
        stalled.send_signal(signal.SIGKILL)
        assert stalled.wait(10) == -signal.SIGKILL
    finally:
        stalled.kill()
        stalled.stdout.close()
    store = Store(str(data))
    try:
        assert len(file_sales(store)) == 4
        with store.read() as tx:
            [(_key, progress)] = list(tx.items("files"))
        assert (progress["next"], progress["done"]) == (4, False)
        before = stock(store)
    finally:
        store.close()
    again = csv_worker(data, drop_dir, "run", "2")
    try:
        out, _ = again.communicate(timeout=30)
    finally:
        again.kill()
    assert json.loads(out.splitlines()[-1]) == {"outcomes": [["k.csv", "applied"]]}
    store = Store(str(data))
    try:
        sales = file_sales(store)
        after = stock(store)
        with store.read() as tx:
            t3 = [e for e in tx.events() if e["type"] == "sale" and e["id"].endswith(":T3")]
    finally:
        store.close()
    assert len(sales) == len(set(sales)) == 9
    assert before["SKU-4"] - after["SKU-4"] == 5  # T4 to T8 after the restart; T0 to T3 before
    assert [[line["sku"] for line in e["lines"]] for e in t3] == [["SKU-4", "SKU-2"]]
    assert listing(drop_dir) == {"done/k.csv"}


# --- recorded as it happened ------------------------------------------------------------------

async def test_recalled_and_expired_lots_sold_are_applied_and_alerted_with_file_basket_and_lot(core, drop_dir, registry):
    apply_master(core.store, "recalls", {"recalls": [{"recall_id": "R-9", "sku": "SKU-1", "lot": "A1"}]})
    drop = CsvDrop(device(drop_dir), core.submit, Metrics(registry))
    drop.prepare()
    before = stock(core.store)
    drop_file(drop_dir, "sold.csv", HEADER + "T1,SKU-1,2,A1,,,\nT1,B-100,1,,,,\n"
              + "T2,SKU-1,1,OLD,2026-01-31,,\n")  # a lot the ledger never had, expired in January
    assert await drop.poll() == [("sold.csv", "applied")]
    assert before["SKU-1"] - stock(core.store)["SKU-1"] == 3
    with core.store.read() as tx:
        alerts = [e for e in tx.events() if e["type"] == "alert" and e["kind"].endswith("_LOT_SOLD")]
        sales = {e["seq"]: e for e in tx.events() if e["type"] == "sale"}
        unallocated = tx.get("lots", b"SKU-1\x00")
    assert [(a["kind"], a["file"], a["basket"].split(":")[1], a["sku"], a["lot"]) for a in alerts] == [
        ("RECALLED_LOT_SOLD", "sold.csv", "T1", "SKU-1", "A1"),
        ("EXPIRED_LOT_SOLD", "sold.csv", "T2", "SKU-1", "OLD")]
    assert alerts[0]["recall_id"] == "R-9" and alerts[1]["expiry"] == "2026-01-31"
    assert [sales[a["sale_seq"]]["id"] for a in alerts] == [f"legacy-pos:{a['basket']}" for a in alerts]
    assert unallocated["qty"] == -1  # lot OLD was never received: the unit is the SKU's unallocated
    assert registry.get_sample_value("gateway_csv_alerts_total",
                                     {"device": "legacy-pos", "kind": "EXPIRED_LOT_SOLD"}) == 1


async def test_stock_short_is_not_refused_even_when_the_policy_refuses(core, drop_dir):
    apply_master(core.store, "policy", {"negative_stock": "refuse"})
    drop = CsvDrop(device(drop_dir), core.submit, Metrics(CollectorRegistry()))
    drop.prepare()
    with core.store.read() as tx:
        seq0 = tx.last_seq()
    have = stock(core.store)["SKU-4"]
    drop_file(drop_dir, "short.csv", HEADER + f"T1,B-100,{have + 5},,,,\nT2,B-100,-2,,,,\n")
    assert await drop.poll() == [("short.csv", "applied")]
    with core.store.read() as tx:
        assert tx.get("lots", b"SKU-4\x00")["qty"] == -3  # five short, two returned
        kinds = [(e["type"], e.get("kind")) for e in tx.events(seq0 + 1)]
    assert ("alert", "unallocated") in kinds and ("return", None) in kinds
    # The till itself still refuses under this policy: only what already happened is exempt.
    till = await core.request("sale", {"id": "t-short", "lines": [{"code": "B-100", "qty": 1}],
                                       "payments": [{"method": "cash", "cents": 350}]})
    assert till.body["err"] == "INSUFFICIENT_STOCK"


async def test_a_code_gone_from_the_catalog_after_a_file_began_is_refused_and_recorded_the_rest_applied(
        core, drop_dir, registry):
    from ._data import CATALOG
    docs = [{"t": "sale", "id": f"g:{i}", "rows": [i + 2], "lines": [{"code": code, "qty": 1}]}
            for i, code in enumerate(("B-100", "4711", "B-100"))]
    inactive = {"items": [dict(item, active=item["sku"] != "SKU-2") for item in CATALOG["items"]]}
    apply_master(core.store, "catalog", inactive, version=2)
    res = await core.request("csv_slice", {"file": "g.csv", "hash": "ef" * 32, "baskets": 3, "rows": 3,
                                           "first": 0, "docs": docs}, source="legacy", channel="csv")
    assert (res.body["applied"], res.body["done"]) == (2, True)
    assert [(r["basket"], r["rows"], r["err"]) for r in res.body["refused"]] == [("g:1", [3], "UNKNOWN_ITEM")]
    with core.store.read() as tx:
        [refusal] = [e for e in tx.events() if e["type"] == "refusal"]
    assert (refusal["file"], refusal["basket"], refusal["err"]) == ("g.csv", "g:1", "UNKNOWN_ITEM")


# --- memory -----------------------------------------------------------------------------------

def _peak_of_a_file(tmp_path, rows: int) -> int:
    """Peak of Python's allocations while a generated file is read, indexed and sliced."""
    text = HEADER + "".join(f"T{i // 3},SKU-{1 + i % 4},1,L{i % 7},2027-01-31,M{i // 3 % 5},cash\n"
                            for i in range(rows))
    path = tmp_path / f"gen-{rows}.csv"
    path.write_text(text)
    del text
    mapping = CsvMapping(columns=dict(COLUMNS))
    tracemalloc.start()
    try:
        errors = ErrorList()
        with open(path, "rb") as f, BasketIndex(str(tmp_path / f"gen-{rows}.sqlite")) as index:
            scanned = scan(f, mapping, index, errors)
            baskets = sum(len(docs) for _first, docs in index.slices(scanned.hash, 0, lambda: (16, 32)))
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (len(errors), scanned.rows, baskets) == (0, rows, -(-rows // 3))
    return peak


def test_reading_a_file_takes_memory_that_does_not_grow_with_the_file(tmp_path):
    small = _peak_of_a_file(tmp_path, 5_000)
    large = _peak_of_a_file(tmp_path, 50_000)
    # Ten times the rows; the whole file as Python objects would be tens of megabytes.
    assert large < 2 << 20, large
    assert large < small * 1.5 + (256 << 10), (small, large)


def test_the_streamed_hash_and_rows_equal_those_of_the_whole_bytes(tmp_path):
    import hashlib

    data = (HEADER + "T1,B-100,1,,,,\n" * 3).encode()
    for chunked in (data, data + b"\n" * (70 << 10)):  # across the reader's 64 KiB chunks
        errors = ErrorList()
        with BasketIndex(":memory:") as index:
            scanned = scan(io.BytesIO(chunked), CsvMapping(columns=dict(COLUMNS)), index, errors)
        assert (scanned.hash, scanned.size, scanned.rows) == (hashlib.sha256(chunked).hexdigest(), len(chunked), 3)


async def test_requests_of_a_file_go_to_the_core_one_at_a_time(core, drop_dir):
    in_flight, most = [0], [0]

    async def submit(request: Request):
        in_flight[0] += 1
        most[0] = max(most[0], in_flight[0])
        try:
            return await core.submit(request)
        finally:
            in_flight[0] -= 1

    drop = CsvDrop(device(drop_dir, slice_baskets=1), submit, Metrics(CollectorRegistry()))
    drop.prepare()
    drop_file(drop_dir, "one.csv", baskets_file(5))
    assert await drop.poll() == [("one.csv", "applied")]
    assert most[0] == 1


# --- the index against a plain grouping ---------------------------------------------------------

_ROWS = st.lists(st.tuples(st.sampled_from(["T1", "T2", "T3", "T4", None]),     # basket key (None: no basket)
                           st.sampled_from(["B-100", "B-200", "Ü-3", None]),     # code (None: unreadable)
                           st.sampled_from([1, 2, -1, None]),                    # qty (None: a bad row)
                           st.sampled_from([None, {"lot": "L1"}, {"serial": "S\u00e9"}])),
                 max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=_ROWS, run_rows=st.sampled_from([1, 2, 3, 512]), codes_held=st.sampled_from([1, 2, 4096]))
def test_the_index_groups_rows_as_a_plain_grouping_does(monkeypatch, rows, run_rows, codes_held):
    """Baskets in the order first seen, each with its good lines in row order, however the rows of
    one basket are scattered, runs split or codes spilled; every code once; the rows of some codes
    in row order."""
    from device_plugins.csv_drop import _index
    from device_plugins.csv_drop._mapper import MappedRow

    monkeypatch.setattr(_index, "_CHUNK_ROWS", run_rows)
    monkeypatch.setattr(_index, "_CODES_HELD", codes_held)
    mapped = [MappedRow(n + 2, key, code, None if qty is None or code is None else {"code": code, "qty": qty, **(extras or {})},
                        None, None) for n, (key, code, qty, extras) in enumerate(rows)]
    expected: dict[str, dict] = {}
    for m in mapped:
        if m.key is not None:
            doc = expected.setdefault(m.key, {"t": "sale", "id": f"{'ab' * 8}:{m.key}", "rows": [], "lines": []})
            if m.line is not None:
                doc["rows"].append(m.row)
                doc["lines"].append(m.line)
    with BasketIndex(":memory:") as index:
        errors = ErrorList()
        for m in mapped:
            index.add(m, errors)
        docs = [doc for _first, docs in index.slices("ab" * 32, 0, lambda: (2, 5)) for doc in docs]
        codes = [code for batch in index.codes(2) for code in batch]
        some = ["B-200", "Ü-3"]
        with_some = list(index.rows_with(some))
    assert len(errors) == 0
    assert docs == [doc for doc in expected.values() if doc["lines"]]
    assert codes == sorted({m.code for m in mapped if m.code is not None})
    assert with_some == [(m.row, m.code) for m in mapped if m.code in some]
