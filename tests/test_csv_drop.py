"""The csv_drop task: settling, submitting one request per file, moving files, and the real core behind it."""
from __future__ import annotations

import os

import pytest
import trio
from prometheus_client import CollectorRegistry

from core_ext import Request, Response
from device_plugins.csv_drop import CsvDrop, CsvDropError, Metrics, SettleTracker, serve

HEADER = "TicketNo,ItemCode,Qty,Lot\n"


def device(path, **over) -> dict:
    entry = {"name": "legacy-pos", "kind": "csv_drop", "dir": str(path), "settle_s": 0.0,
             "poll_s": 0.01, "columns": {"id": "TicketNo", "code": "ItemCode", "qty": "Qty", "lot": "Lot"}}
    entry.update(over)
    return entry


class FakeCore:
    """Answers every request with `answer(request)` and keeps what it was sent."""

    def __init__(self, answer=lambda r: {"ok": True, "applied": len(r.body["docs"]), "duplicates": 0}):
        self.answer = answer
        self.requests: list[Request] = []

    async def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        return Response({"t": "res", "re": None, **self.answer(request)})


@pytest.fixture
def drop_dir(tmp_path):
    path = tmp_path / "drop"  # beside the store's own data directory, which the core tests use
    path.mkdir()
    return path


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def metrics(registry):
    return Metrics(registry)


def files_total(registry, outcome: str) -> float:
    return registry.get_sample_value("gateway_csv_files_total",
                                     {"device": "legacy-pos", "outcome": outcome}) or 0.0


def drop_file(path, name: str, text: str) -> bytes:
    """Write as a POS does: a *.tmp first, renamed when complete."""
    data = text.encode()
    (path / (name + ".tmp")).write_bytes(data)
    os.replace(path / (name + ".tmp"), path / name)
    return data


def listing(path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}


# --- settling, without I/O --------------------------------------------------------------------

def test_a_file_is_ready_once_its_size_and_time_held_for_the_settle_time():
    tracker = SettleTracker(2.0)
    assert tracker.ready({"a.csv": (10, 1)}, 0.0) == []
    assert tracker.ready({"a.csv": (10, 1)}, 1.9) == []
    assert tracker.ready({"a.csv": (20, 2)}, 1.95) == []       # still growing: the clock starts again
    assert tracker.ready({"a.csv": (20, 2)}, 3.9) == []
    assert tracker.ready({"a.csv": (20, 2)}, 3.95) == ["a.csv"]


def test_ready_files_come_oldest_first_and_vanished_ones_are_forgotten():
    tracker = SettleTracker(0.0)
    assert tracker.ready({"b.csv": (1, 5), "a.csv": (1, 9), "c.csv": (1, 5)}, 0.0) == ["b.csv", "c.csv", "a.csv"]
    assert tracker.ready({}, 1.0) == []
    tracker.settle_s = 5.0
    assert tracker.ready({"b.csv": (1, 5)}, 2.0) == []  # seen anew, so it settles again


def test_a_held_file_waits_twice_as_long_each_time():
    tracker = SettleTracker(0.0)
    assert tracker.ready({"a.csv": (1, 1)}, 0.0) == ["a.csv"]
    assert tracker.hold("a.csv", 0.0) == 1.0
    assert tracker.ready({"a.csv": (1, 1)}, 0.5) == []
    assert tracker.ready({"a.csv": (1, 1)}, 1.0) == ["a.csv"]
    assert tracker.hold("a.csv", 1.0) == 2.0
    assert tracker.ready({"a.csv": (1, 1)}, 2.5) == []
    assert tracker.ready({"a.csv": (1, 1)}, 3.0) == ["a.csv"]
    assert tracker.hold("gone.csv", 0.0) == 0.0


# --- one file through a fake core -------------------------------------------------------------

async def test_a_good_file_is_one_request_and_moves_to_done(drop_dir, metrics, registry):
    core = FakeCore()
    drop = CsvDrop(device(drop_dir), core, metrics)
    drop.prepare()
    drop_file(drop_dir, "day1.csv", HEADER + "T1,SKU-1,2,A1\nT1,4711,1,\nT2,SKU-4,-1,\n")
    assert await drop.poll() == [("day1.csv", "applied")]
    [request] = core.requests
    assert (request.kind, request.source, request.channel) == ("csv_file", "legacy-pos", "csv")
    assert request.body["file"] == "day1.csv"
    assert [d["rows"] for d in request.body["docs"]] == [[2, 3], [4]]
    assert all(d["id"].startswith(request.body["hash"][:16] + ":") for d in request.body["docs"])
    assert listing(drop_dir) == {"done/day1.csv"}
    assert files_total(registry, "applied") == 1
    assert registry.get_sample_value("gateway_csv_rows_total", {"device": "legacy-pos"}) == 3


async def test_a_file_with_a_bad_row_is_rejected_whole_beside_its_errors(drop_dir, metrics, registry):
    core = FakeCore()
    drop = CsvDrop(device(drop_dir), core, metrics)
    drop.prepare()
    drop_file(drop_dir, "day2.csv", HEADER + "T1,SKU-1,2,A1\nT1,SKU-1,two,\nT2,,1,\n")
    assert await drop.poll() == [("day2.csv", "rejected")]
    assert core.requests == []
    assert listing(drop_dir) == {"rejected/day2.csv", "rejected/day2.csv.errors.txt"}
    assert (drop_dir / "rejected/day2.csv.errors.txt").read_text() == (
        "row 3: qty 'two' is not a number\nrow 4: code is empty\n")
    assert registry.get_sample_value("gateway_csv_rejects_total",
                                     {"device": "legacy-pos", "reason": "qty"}) == 1
    assert files_total(registry, "rejected") == 1


async def test_the_cores_refusal_names_the_rows_of_each_refused_basket(drop_dir, metrics, registry):
    def refuse(request):
        return {"ok": False, "err": "BAD_REQUEST", "msg": "1 of 2 baskets refused", "errors": [
            {"doc": 1, "rows": request.body["docs"][1]["rows"], "err": "UNKNOWN_ITEM",
             "msg": "lines[0]: 'NOPE' matches nothing sellable in the catalog"}]}

    drop = CsvDrop(device(drop_dir), FakeCore(refuse), metrics)
    drop.prepare()
    drop_file(drop_dir, "day3.csv", HEADER + "T1,SKU-1,1,\nT2,NOPE,1,\nT2,SKU-4,1,\n")
    assert await drop.poll() == [("day3.csv", "rejected")]
    assert (drop_dir / "rejected/day3.csv.errors.txt").read_text().splitlines() == [
        f"row {n}: UNKNOWN_ITEM: lines[0]: 'NOPE' matches nothing sellable in the catalog" for n in (3, 4)]
    assert registry.get_sample_value("gateway_csv_rejects_total",
                                     {"device": "legacy-pos", "reason": "UNKNOWN_ITEM"}) == 2


async def test_an_unavailable_core_leaves_the_file_for_a_later_try(drop_dir, metrics, registry):
    answers = iter([{"ok": False, "err": "UNAVAILABLE", "msg": "disk full"},
                    {"ok": True, "applied": 1, "duplicates": 0}])
    core = FakeCore(lambda r: next(answers))
    drop = CsvDrop(device(drop_dir), core, metrics)
    drop.prepare()
    drop_file(drop_dir, "day4.csv", HEADER + "T1,SKU-1,1,\n")
    assert await drop.poll() == [("day4.csv", "retry")]
    assert listing(drop_dir) == {"day4.csv"}
    assert await drop.poll() == []  # held for a while
    drop.tracker._seen["day4.csv"].hold_until = 0.0
    assert await drop.poll() == [("day4.csv", "applied")]
    assert [r.body["hash"] for r in core.requests][0] == core.requests[1].body["hash"]
    assert files_total(registry, "retry") == 1 and files_total(registry, "applied") == 1


async def test_a_name_used_before_is_kept_apart_in_done(drop_dir, metrics):
    drop = CsvDrop(device(drop_dir), FakeCore(), metrics)
    drop.prepare()
    for qty in (1, 2, 3):
        drop_file(drop_dir, "export.csv", HEADER + f"T1,SKU-1,{qty},\n")
        assert await drop.poll() == [("export.csv", "applied")]
    assert listing(drop_dir) == {"done/export.csv", "done/export.1.csv", "done/export.2.csv"}
    assert (drop_dir / "done/export.2.csv").read_text().endswith("T1,SKU-1,3,\n")


async def test_a_header_only_file_is_done_without_asking_the_core(drop_dir, metrics, registry):
    core = FakeCore()
    drop = CsvDrop(device(drop_dir), core, metrics)
    drop.prepare()
    drop_file(drop_dir, "quiet-day.csv", HEADER)
    assert await drop.poll() == [("quiet-day.csv", "empty")]
    assert core.requests == [] and listing(drop_dir) == {"done/quiet-day.csv"}


async def test_a_file_over_max_bytes_is_rejected_unread(drop_dir, metrics):
    core = FakeCore()
    drop = CsvDrop(device(drop_dir, max_bytes=64), core, metrics)
    drop.prepare()
    data = drop_file(drop_dir, "huge.csv", HEADER + "T1,SKU-1,1,\n" * 10)
    assert await drop.poll() == [("huge.csv", "rejected")]
    assert (drop_dir / "rejected/huge.csv.errors.txt").read_text() == (
        f"file: the file is {len(data)} bytes, over max_bytes 64\n")


async def test_only_csv_files_are_taken(drop_dir, metrics):
    drop = CsvDrop(device(drop_dir), FakeCore(), metrics)
    drop.prepare()
    (drop_dir / "half.csv.tmp").write_text(HEADER + "T1,SKU-1,1,\n")
    (drop_dir / "notes.txt").write_text("hello")
    (drop_dir / "sub.csv").mkdir()
    drop_file(drop_dir, "LOUD.CSV", HEADER + "T1,SKU-1,1,\n")
    assert await drop.poll() == [("LOUD.CSV", "applied")]
    assert await drop.poll() == []
    assert listing(drop_dir) == {"half.csv.tmp", "notes.txt", "done/LOUD.CSV"}


def test_a_bad_device_entry_is_refused_with_every_mistake(drop_dir, metrics):
    with pytest.raises(CsvDropError) as info:
        CsvDrop(device(drop_dir, qty_factor=0, columns={"code": "C"}), FakeCore(), metrics)
    assert [e.split(":")[0] for e in info.value.errors] == ["columns.qty", "qty_factor"]


async def test_serve_waits_for_a_file_to_settle_then_takes_it(drop_dir, metrics, registry):
    core = FakeCore()
    drop_dir = drop_dir / "not-yet"  # made on start, so the POS has somewhere to write
    async with trio.open_nursery() as nursery:
        await nursery.start(serve, device(drop_dir, settle_s=0.05), core, metrics)
        assert (drop_dir / "done").is_dir() and (drop_dir / "rejected").is_dir()
        drop_file(drop_dir, "live.csv", HEADER + "T1,SKU-1,1,\n")
        # The watcher reads files in worker threads, so this waits on real time (bounded).
        with trio.fail_after(10):
            while not (drop_dir / "done/live.csv").exists():
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert len(core.requests) == 1 and files_total(registry, "applied") == 1


# --- the real core behind it ------------------------------------------------------------------

def ledger(store) -> tuple[int, dict]:
    with store.read() as tx:
        return tx.last_seq(), {sku: tx.get("skus", sku, 0) for sku in ("SKU-1", "SKU-2", "SKU-4")}


async def test_a_file_is_applied_by_the_core_in_one_commit(core, drop_dir, metrics):
    drop = CsvDrop(device(drop_dir), core.submit, metrics)
    drop.prepare()
    seq0, before = ledger(core.store)
    drop_file(drop_dir, "day.csv", HEADER + "T1,4711,2,\nT1,B-100,-1,\nT2,SKU-1,3,\n")
    assert await drop.poll() == [("day.csv", "applied")]
    seq1, after = ledger(core.store)
    assert after == {"SKU-1": before["SKU-1"] - 3, "SKU-2": before["SKU-2"] - 2, "SKU-4": before["SKU-4"] + 1}
    with core.store.read() as tx:
        events = list(tx.events(seq0 + 1))
    assert {e["type"] for e in events} == {"sale", "return"}
    assert all(e["id"].startswith("legacy-pos:") for e in events if e["type"] == "sale")
    assert listing(drop_dir) == {"done/day.csv"}


async def test_a_file_the_core_refuses_changes_nothing_and_names_its_rows(core, drop_dir, metrics):
    drop = CsvDrop(device(drop_dir), core.submit, metrics)
    drop.prepare()
    before = ledger(core.store)
    drop_file(drop_dir, "bad.csv", HEADER + "T1,4711,1,\nT2,NO-SUCH,1,\nT2,B-100,1,\n")
    assert await drop.poll() == [("bad.csv", "rejected")]
    assert ledger(core.store) == before
    lines = (drop_dir / "rejected/bad.csv.errors.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["row 3", "row 4"]
    assert all("UNKNOWN_ITEM" in line and "NO-SUCH" in line for line in lines)


async def test_a_file_with_a_bad_row_never_reaches_the_ledger(core, drop_dir, metrics):
    drop = CsvDrop(device(drop_dir), core.submit, metrics)
    drop.prepare()
    before = ledger(core.store)
    drop_file(drop_dir, "typo.csv", HEADER + "T1,4711,1,\nT2,B-100,1O,\n")
    assert await drop.poll() == [("typo.csv", "rejected")]
    assert ledger(core.store) == before
    assert (drop_dir / "rejected/typo.csv.errors.txt").read_text() == "row 3: qty '1O' is not a number\n"


async def test_the_same_file_dropped_twice_is_applied_once(core, drop_dir, metrics, registry):
    # Dropping it again is what a crash between the commit and the move looks like on restart.
    drop = CsvDrop(device(drop_dir), core.submit, metrics)
    drop.prepare()
    text = HEADER + "T1,4711,1,\nT2,SKU-1,2,\n"
    drop_file(drop_dir, "twice.csv", text)
    assert await drop.poll() == [("twice.csv", "applied")]
    once = ledger(core.store)
    drop_file(drop_dir, "twice.csv", text)
    assert await drop.poll() == [("twice.csv", "replayed")]
    assert ledger(core.store) == once
    assert listing(drop_dir) == {"done/twice.csv", "done/twice.1.csv"}
    assert files_total(registry, "replayed") == 1
    assert registry.get_sample_value("gateway_csv_rows_total", {"device": "legacy-pos"}) == 2
