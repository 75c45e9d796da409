"""The csv_drop task: settling, checking a file then applying it in slices, moving files, and the real
core behind it (slices between other requests, restarts, lots sold as they happened: test_csv_slices.py)."""
from __future__ import annotations

import hashlib
import threading
from dataclasses import replace

import pytest
import trio
from prometheus_client import CollectorRegistry

from core_ext import Request, Response
from device_plugins.csv_drop import CsvDrop, CsvDropError, Metrics, SettleTracker, serve

from ._csv import device, drop_file, listing
from ._data import stored_on_hand

HEADER = "TicketNo,ItemCode,Qty,Lot\n"



class FakeCore:
    """Answers `csv_check` and `csv_slice` as the core would, knowing every code but `unknown`, and
    keeps what it was sent; the first `unavailable` requests are answered UNAVAILABLE. A slice it
    applies is told so (`Request.applied`) before it is answered, as the writer tells it."""

    def __init__(self, unknown=(), unavailable: int = 0, ms_per_line: float | None = None):
        self.unknown = set(unknown)
        self.unavailable = unavailable
        # With `ms_per_line`, each slice says it held the writer that long a line (`held_ms`).
        self.ms_per_line = ms_per_line
        self.requests: list[Request] = []

    async def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        if self.unavailable:
            self.unavailable -= 1
            return Response({"t": "res", "re": None, "ok": False, "err": "UNAVAILABLE", "msg": "disk full"})
        body = request.body
        if request.kind == "csv_check":
            unknown = [[c, "UNKNOWN_ITEM", f"code {c!r} matches nothing in the catalog"]
                       for c in body["codes"] if c in self.unknown]
            return Response({"t": "res", "re": None, "ok": True, "unknown": unknown, "progress": None})
        assert request.kind == "csv_slice"
        if request.applied is not None:
            request.applied()
        docs, done = body["docs"], body["first"] + len(body["docs"])
        answer = {"t": "res", "re": None, "ok": True, "applied": len(docs), "duplicates": 0,
                  "rows": sum(len(d["rows"]) for d in docs), "seqs": [], "refused": [], "alerts": [],
                  "next": done, "baskets": body["baskets"], "done": done == body["baskets"]}
        if self.ms_per_line is not None:
            answer["held_ms"] = self.ms_per_line * sum(len(d["lines"]) for d in docs)
        return Response(answer)

    def kinds(self) -> list[str]:
        return [r.kind for r in self.requests]



@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def metrics(registry):
    return Metrics(registry)


def files_total(registry, outcome: str) -> float:
    return registry.get_sample_value("gateway_csv_files_total",
                                     {"device": "legacy-pos", "outcome": outcome}) or 0.0




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

async def test_a_good_file_is_checked_then_applied_in_slices_and_moves_to_done(drop_dir, metrics, registry):
    core = FakeCore()
    drop = CsvDrop(device(drop_dir, slice_baskets=2), core, metrics)
    drop.prepare()
    data = drop_file(drop_dir, "day1.csv", HEADER + "T1,SKU-1,2,A1\nT2,SKU-4,-1,\nT1,4711,1,\nT3,B-100,1,\n")
    assert await drop.poll() == [("day1.csv", "applied")]
    check, *slices = core.requests
    assert (check.kind, check.source, check.channel) == ("csv_check", "legacy-pos", "csv")
    assert sorted(check.body["codes"]) == ["4711", "B-100", "SKU-1", "SKU-4"]
    assert check.body["hash"] == hashlib.sha256(data).hexdigest()
    assert [r.kind for r in slices] == ["csv_slice", "csv_slice"]
    # Baskets in the order first seen, rows of one basket together wherever they stand in the file.
    assert [(r.body["first"], [d["rows"] for d in r.body["docs"]]) for r in slices] == [
        (0, [[2, 4], [3]]), (2, [[5]])]
    assert all((r.body["file"], r.body["baskets"], r.body["rows"]) == ("day1.csv", 3, 4) for r in slices)
    assert all(d["id"].startswith(check.body["hash"][:16] + ":") for r in slices for d in r.body["docs"])
    assert listing(drop_dir) == {"done/day1.csv"}
    assert files_total(registry, "applied") == 1
    assert registry.get_sample_value("gateway_csv_rows_total", {"device": "legacy-pos"}) == 4
    assert registry.get_sample_value("gateway_csv_baskets_total", {"device": "legacy-pos"}) == 3
    assert registry.get_sample_value("gateway_csv_slices_total", {"device": "legacy-pos"}) == 2
    assert registry.get_sample_value("gateway_csv_file_progress_ratio", {"device": "legacy-pos"}) == 1
    assert registry.get_sample_value("gateway_csv_files_in_progress", {"device": "legacy-pos"}) == 0


async def test_a_slice_holds_at_most_slice_lines_lines_but_never_splits_a_basket(drop_dir, metrics):
    core = FakeCore()
    drop = CsvDrop(device(drop_dir, slice_baskets=10, slice_lines=3), core, metrics)
    drop.prepare()
    drop_file(drop_dir, "lines.csv", HEADER + "T1,B-100,1,\n" * 4 + "T2,B-100,1,\nT3,B-100,1,\n"
              + "T4,B-100,1,\n" * 2 + "T5,B-100,1,\n")
    assert await drop.poll() == [("lines.csv", "applied")]
    sizes = [[len(d["lines"]) for d in r.body["docs"]] for r in core.requests if r.kind == "csv_slice"]
    assert sizes == [[4], [1, 1], [2, 1]]


async def test_a_file_with_a_bad_row_is_rejected_whole_beside_its_errors(drop_dir, metrics, registry):
    core = FakeCore()
    drop = CsvDrop(device(drop_dir), core, metrics)
    drop.prepare()
    drop_file(drop_dir, "day2.csv", HEADER + "T1,SKU-1,2,A1\nT1,SKU-1,two,\nT2,,1,\n")
    assert await drop.poll() == [("day2.csv", "rejected")]
    assert core.kinds() == ["csv_check"]  # its codes are asked about too, so every fault is listed
    assert listing(drop_dir) == {"rejected/day2.csv", "rejected/day2.csv.errors.txt"}
    assert (drop_dir / "rejected/day2.csv.errors.txt").read_text() == (
        "row 3: qty 'two' is not a number\nrow 4: code is empty\n")
    assert registry.get_sample_value("gateway_csv_rejects_total",
                                     {"device": "legacy-pos", "reason": "qty"}) == 1
    assert files_total(registry, "rejected") == 1


async def test_a_code_the_catalog_does_not_know_is_named_on_every_row_that_holds_it(drop_dir, metrics, registry):
    core = FakeCore(unknown={"NOPE"})
    drop = CsvDrop(device(drop_dir), core, metrics)
    drop.prepare()
    drop_file(drop_dir, "day3.csv", HEADER + "T1,SKU-1,1,\nT2,NOPE,1,\nT2,SKU-4,1,\nT3,NOPE,x,\n")
    assert await drop.poll() == [("day3.csv", "rejected")]
    assert core.kinds() == ["csv_check"]
    assert (drop_dir / "rejected/day3.csv.errors.txt").read_text().splitlines() == [
        "row 3: UNKNOWN_ITEM: code 'NOPE' matches nothing in the catalog",
        "row 5: qty 'x' is not a number",
        "row 5: UNKNOWN_ITEM: code 'NOPE' matches nothing in the catalog"]
    assert registry.get_sample_value("gateway_csv_rejects_total",
                                     {"device": "legacy-pos", "reason": "UNKNOWN_ITEM"}) == 2


async def test_an_unavailable_core_leaves_the_file_for_a_later_try(drop_dir, metrics, registry):
    core = FakeCore(unavailable=1)
    drop = CsvDrop(device(drop_dir), core, metrics)
    drop.prepare()
    drop_file(drop_dir, "day4.csv", HEADER + "T1,SKU-1,1,\n")
    assert await drop.poll() == [("day4.csv", "retry")]
    assert listing(drop_dir) == {"day4.csv"}
    assert await drop.poll() == []  # held for a while
    drop.tracker._seen["day4.csv"].hold_until = 0.0
    assert await drop.poll() == [("day4.csv", "applied")]
    assert core.kinds() == ["csv_check", "csv_check", "csv_slice"]
    assert len({r.body["hash"] for r in core.requests}) == 1
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
    assert core.kinds() == ["csv_check", "csv_slice"] and files_total(registry, "applied") == 1


# --- the real core behind it ------------------------------------------------------------------

def ledger(store) -> tuple[int, dict]:
    with store.read() as tx:
        return tx.last_seq(), {sku: stored_on_hand(tx, sku, 0) for sku in ("SKU-1", "SKU-2", "SKU-4")}


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
    # Only the row that is bad: row 4, of the same basket, is good.
    assert [line.split(":")[0] for line in lines] == ["row 3"]
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


async def test_a_long_file_logs_its_progress_every_few_slices(drop_dir, metrics, caplog, monkeypatch):
    from device_plugins.csv_drop import _watcher

    monkeypatch.setattr(_watcher, "PROGRESS_EVERY", 2)
    drop = CsvDrop(device(drop_dir, slice_baskets=1), FakeCore(), metrics)
    drop.prepare()
    drop_file(drop_dir, "long.csv", HEADER + "".join(f"T{i},SKU-1,1,\n" for i in range(5)))
    with caplog.at_level("INFO", logger="gateway.csv_drop"):
        assert await drop.poll() == [("long.csv", "applied")]
    progress = [r.getMessage() for r in caplog.records if "baskets," in r.getMessage()]
    assert [m.split(": ", 2)[2].split(",")[0] for m in progress] == ["2 of 5 baskets", "4 of 5 baskets"]
    assert all(m.startswith("csv_drop legacy-pos: long.csv: ") and m.endswith(" rows/s") for m in progress)


async def test_slices_are_sized_by_the_writer_time_the_ones_before_took(drop_dir, metrics, registry):
    # 0.05 ms a line and slice_ms 5: 100 lines a slice, reached from a first slice of 32 lines. A
    # slice is cut while the one before it commits, before its answer: by the answers before that
    # one, so the second slice is cut as the first was.
    core = FakeCore(ms_per_line=0.05)
    drop = CsvDrop(device(drop_dir, slice_ms=5.0, slice_baskets=1000, slice_lines=3000), core, metrics)
    drop.prepare()
    drop_file(drop_dir, "paced.csv", HEADER + "".join(f"T{i},SKU-1,1,\n" for i in range(400)))
    assert await drop.poll() == [("paced.csv", "applied")]
    sizes = [len(r.body["docs"]) for r in core.requests if r.kind == "csv_slice"]
    assert sizes == [32, 32, 100, 100, 100, 36]
    assert registry.get_sample_value("gateway_csv_slice_lines", {"device": "legacy-pos"}) == 100


async def test_the_next_slice_is_read_while_the_one_before_commits(drop_dir, metrics, monkeypatch):
    """Each slice is read once the one before it is applied (`Request.applied`) and before it is
    answered: while the writer syncs, not after."""
    from device_plugins.csv_drop import _watcher

    order, read = [], threading.Event()
    reading = _watcher._next_when

    def next_when(go, slices):
        item = reading(go, slices)
        order.append("read")
        read.set()
        return item

    class Syncing(FakeCore):
        async def __call__(self, request):
            if request.kind != "csv_slice":
                return await super().__call__(request)
            order.append(f"applied {request.body['first']}")
            request.applied()
            # The commit's sync; a read that waited for the answer instead would never come.
            await trio.to_thread.run_sync(read.wait, 10)
            read.clear()
            order.append(f"answered {request.body['first']}")
            return await super().__call__(replace(request, applied=None))

    monkeypatch.setattr(_watcher, "_next_when", next_when)
    drop = CsvDrop(device(drop_dir, slice_baskets=2), Syncing(), metrics)
    drop.prepare()
    drop_file(drop_dir, "synced.csv", HEADER + "".join(f"T{i},SKU-1,1,\n" for i in range(5)))
    assert await drop.poll() == [("synced.csv", "applied")]
    assert order == ["applied 0", "read", "answered 0", "applied 2", "read", "answered 2",
                     "applied 4", "read", "answered 4"]


async def test_a_slow_writer_gets_smaller_slices_but_never_more_than_the_caps(drop_dir, metrics):
    core = FakeCore(ms_per_line=2.0)  # 5 ms is two lines and a half: two-line slices
    drop = CsvDrop(device(drop_dir, slice_ms=5.0), core, metrics)
    drop.prepare()
    drop_file(drop_dir, "slow.csv", HEADER + "".join(f"T{i},SKU-1,1,\n" for i in range(68)))
    assert await drop.poll() == [("slow.csv", "applied")]
    assert [len(r.body["docs"]) for r in core.requests if r.kind == "csv_slice"] == [32, 32, 2, 2]
    quick = FakeCore(ms_per_line=0.0001)
    drop = CsvDrop(device(drop_dir, slice_ms=5.0, slice_baskets=50), quick, metrics)
    drop_file(drop_dir, "quick.csv", HEADER + "".join(f"Q{i},SKU-1,1,\n" for i in range(200)))
    assert await drop.poll() == [("quick.csv", "applied")]
    assert [len(r.body["docs"]) for r in quick.requests if r.kind == "csv_slice"] == [32, 32, 50, 50, 36]
