"""The trio task of a `csv_drop` device: poll the directory, check each settled file, apply it in
slices, move it.

A file is read as a stream into a scratch index (`_index.py`) and checked whole first: every row
mapped, every code asked of the catalog (`csv_check`, which only reads). A file with a bad row goes
to `rejected/` beside its reasons, unapplied. A good file is then applied a slice at a time
(`csv_slice`): each slice waits its turn at the single writer like any till's sale, and commits
together with the file's progress, so a restart continues where the last slice left the file. The
file moves to `done/` only after its last slice is durable, and its baskets' ids come from its
content hash, so a file taken again (after a crash, or dropped twice) is applied once.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass

import trio

from core_ext import Request, Submit
from core_ext import errors as codes

from ._index import BasketIndex
from ._mapper import CsvMapping, ErrorList, RowError, Scanned, scan
from ._metrics import Metrics
from ._options import DEFAULTS, CsvDropError, check_options
from ._pace import SlicePace

log = logging.getLogger("gateway.csv_drop")

DONE = "done"
REJECTED = "rejected"
WORK = ".work"           # scratch indexes of the files being taken (hidden from the POS's listing)
MAX_RETRY_S = 30.0
CHECK_BATCH = 256        # codes per `csv_check`: a few milliseconds of catalog reads
PROGRESS_EVERY = 100     # slices between two progress lines in the log


class _NotNow(Exception):
    """The core cannot take the file now (unavailable, or no answer): the file stays for a retry."""


@dataclass(slots=True)
class _Seen:
    size: int
    mtime_ns: int
    since: float
    hold_until: float = 0.0
    attempts: int = 0


class SettleTracker:
    """Which files of a directory listing have kept their size and time for `settle_s`; no I/O."""

    def __init__(self, settle_s: float):
        self.settle_s = settle_s
        self._seen: dict[str, _Seen] = {}

    def ready(self, listing: dict[str, tuple[int, int]], now: float) -> list[str]:
        """Names to take now, oldest first; `listing` maps name -> (size, mtime_ns)."""
        for name in list(self._seen):
            if name not in listing:
                del self._seen[name]
        ready = []
        for name, (size, mtime_ns) in listing.items():
            seen = self._seen.get(name)
            if seen is None or (seen.size, seen.mtime_ns) != (size, mtime_ns):
                self._seen[name] = _Seen(size, mtime_ns, now)
                # A settle time of 0 takes a file the first time it is seen.
                seen = self._seen[name]
            if now - seen.since >= self.settle_s and now >= seen.hold_until:
                ready.append(name)
        return sorted(ready, key=lambda n: (listing[n][1], n))

    def hold(self, name: str, now: float) -> float:
        """Leave `name` alone for a while (doubling on each call); returns the delay."""
        seen = self._seen.get(name)
        if seen is None:
            return 0.0
        seen.attempts += 1
        delay = min(MAX_RETRY_S, 2.0 ** (seen.attempts - 1))
        seen.hold_until = now + delay
        return delay

    def forget(self, name: str) -> None:
        self._seen.pop(name, None)


def _listing(directory: str) -> dict[str, tuple[int, int]]:
    listing = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            # The POS writes `*.tmp` and renames; some write `.CSV`, which is the same thing.
            if entry.name.lower().endswith(".csv") and entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                listing[entry.name] = (st.st_size, st.st_mtime_ns)
    return listing


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev


def _scan(path: str, max_bytes: int, mapping: CsvMapping, work: str):
    """(identity, index, scanned, errors) of the file at `path`; index None when over `max_bytes`.

    Runs in a worker thread. The index is the caller's to close (which deletes its scratch file).
    """
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if st.st_size > max_bytes:
            return _identity(st), None, None, None
        fd, scratch = tempfile.mkstemp(dir=work, prefix="index-", suffix=".sqlite")
        os.close(fd)
        index = BasketIndex(scratch)
        try:
            errors = ErrorList()
            scanned = scan(f, mapping, index, errors)
            index.finish()
        except BaseException:
            index.close()
            raise
    return _identity(st), index, scanned, errors


def _list_unknown(index: BasketIndex, unknown: dict, errors: ErrorList) -> None:
    """Name each code the catalog does not know on every row that holds it (in a worker thread)."""
    for row, code in index.rows_with(list(unknown)):
        err, msg = unknown[code]
        errors.add(row, err, f"{err}: {msg}")


def _clear_work(work: str) -> None:
    """Scratch indexes a stopped process left behind: a file is always read anew when taken."""
    os.makedirs(work, exist_ok=True)
    for name in os.listdir(work):
        if name.startswith("index-"):
            os.unlink(os.path.join(work, name))


def _next_when(go: threading.Event, slices):
    """The next of `slices` (None after the last) once `go` is set (in a worker thread)."""
    go.wait()
    return next(slices, None)


def _same_file(path: str, identity: tuple) -> bool:
    """Whether `path` is still the file that was read: the POS may have written a new one meanwhile."""
    try:
        return _identity(os.stat(path, follow_symlinks=False)) == identity
    except FileNotFoundError:
        return False


def _free_path(directory: str, name: str) -> str:
    """`name` in `directory`, or `stem.N.ext` when a file of that name is already there."""
    stem, ext = os.path.splitext(name)
    candidate, n = name, 0
    while os.path.lexists(os.path.join(directory, candidate)) or \
            os.path.lexists(os.path.join(directory, candidate + ".errors.txt")):
        n += 1
        candidate = f"{stem}.{n}{ext}"
    return os.path.join(directory, candidate)


def _move(src: str, directory: str, name: str, identity: tuple) -> str | None:
    """Move `src` away, or return None when it is no longer the file read (it is taken anew)."""
    if not _same_file(src, identity):
        return None
    dst = _free_path(directory, name)
    os.replace(src, dst)
    return dst


def _reject(src: str, directory: str, name: str, errors: list[RowError], identity: tuple) -> str | None:
    if not _same_file(src, identity):
        return None
    dst = _free_path(directory, name)
    text = "".join(e.line() + "\n" for e in sorted(errors, key=lambda e: e.row))
    tmp = dst + ".errors.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    # The reasons are in place before the file leaves the drop, so a rejected file never lacks them.
    os.replace(tmp, dst + ".errors.txt")
    os.replace(src, dst)
    return dst


class CsvDrop:
    """One watched directory: what `serve` runs, in steps a test can drive."""

    def __init__(self, device: dict, submit: Submit, metrics: Metrics):
        errors = check_options(device)
        if errors:
            raise CsvDropError(device.get("name") if isinstance(device, dict) else None, errors)
        self.name = device["name"]
        self.dir = device["dir"]
        self.work = os.path.join(self.dir, WORK)
        self.settle_s = float(device.get("settle_s", DEFAULTS["settle_s"]))
        self.poll_s = float(device.get("poll_s", DEFAULTS["poll_s"]))
        self.max_bytes = device.get("max_bytes", DEFAULTS["max_bytes"])
        self.slice_ms = float(device.get("slice_ms", DEFAULTS["slice_ms"]))
        self.slice_baskets = device.get("slice_baskets", DEFAULTS["slice_baskets"])
        self.slice_lines = device.get("slice_lines", DEFAULTS["slice_lines"])
        self.mapping = CsvMapping.from_device(device)
        self.submit = submit
        self.metrics = metrics
        self.tracker = SettleTracker(self.settle_s)
        self._listing_failed = False

    def prepare(self) -> None:
        """Make the directory with its `done/` and `rejected/`, so the POS has somewhere to write."""
        for sub in (DONE, REJECTED):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        _clear_work(self.work)

    async def poll(self) -> list[tuple[str, str]]:
        """Take every settled file once; returns (name, outcome) pairs."""
        try:
            listing = await trio.to_thread.run_sync(_listing, self.dir)
        except OSError as exc:
            if not self._listing_failed:
                log.warning("csv_drop %s: cannot list %s: %s", self.name, self.dir, exc)
            self._listing_failed = True
            return []
        self._listing_failed = False
        ready = self.tracker.ready(listing, trio.current_time())
        return [(name, await self.take(name)) for name in ready]

    async def take(self, name: str) -> str:
        """Check, apply and move one file; returns the outcome (also counted in the metrics)."""
        path = os.path.join(self.dir, name)
        try:
            identity, index, scanned, errors = await trio.to_thread.run_sync(
                _scan, path, self.max_bytes, self.mapping, self.work)
        except FileNotFoundError:
            self.tracker.forget(name)
            return "gone"
        except OSError as exc:
            return self._retry(name, f"cannot read it: {exc}")
        if index is None:
            errors = [RowError(0, "too_large", f"the file is {identity[0]} bytes, over max_bytes "
                                               f"{self.max_bytes}")]
            return await self._rejected(name, errors, identity)
        try:
            return await self._take(name, identity, index, scanned, errors)
        finally:
            self.metrics.in_progress.labels(self.name).set(0)
            index.close()

    async def _take(self, name: str, identity: tuple, index: BasketIndex, scanned: Scanned,
                    errors: ErrorList) -> str:
        if scanned.size != identity[0]:
            # Still being written after all: start its settle time again.
            self.tracker.forget(name)
            return "unsettled"
        bad_rows = len(errors)
        try:
            progress = await self._check(name, index, scanned, errors)
        except _NotNow as exc:
            return self._retry(name, str(exc))
        if progress is not None and progress["done"]:
            # Taken again after a crash (or dropped twice): every basket is already in the ledger.
            return await self._done(name, "replayed", identity)
        if len(errors) and progress is None:
            return await self._rejected(name, list(errors.result()), identity)
        if bad_rows:
            log.error("csv_drop %s: %s was begun but now reads with %d bad rows (was the mapping "
                      "changed?); it waits", self.name, name, bad_rows)
            return self._retry(name, "begun, but its rows no longer map")
        if len(errors):
            # Begun before a code left the catalog: those baskets are refused and recorded as the
            # file goes on (its other sales happened all the same).
            log.warning("csv_drop %s: %s: %d rows name codes the catalog no longer sells; the rest "
                        "is applied", self.name, name, len(errors))
        if index.baskets == 0:
            return await self._done(name, "empty", identity)
        try:
            outcome = await self._apply(name, index, scanned, progress["next"] if progress else 0)
        except _NotNow as exc:
            return self._retry(name, str(exc))
        return await self._done(name, outcome, identity)

    async def _ask(self, kind: str, body: dict, applied=None) -> dict:
        """The core's answer to one request of this file, or `_NotNow`."""
        try:
            response = await self.submit(Request(kind=kind, source=self.name, channel="csv", body=body,
                                                 applied=applied))
        except Exception:
            log.exception("csv_drop %s: %s of %s failed", self.name, kind, body.get("file"))
            raise _NotNow("the core did not answer") from None
        answer = response.body if isinstance(response.body, dict) else {}
        if response.ok:
            return answer
        if answer.get("err") != codes.UNAVAILABLE:
            log.error("csv_drop %s: the core refused %s of %s: %s: %s", self.name, kind, body.get("file"),
                      answer.get("err"), answer.get("msg"))
        raise _NotNow(f"the core refused {kind}: {answer.get('err')}: {answer.get('msg')}")

    async def _check(self, name: str, index: BasketIndex, scanned: Scanned, errors: ErrorList) -> dict | None:
        """Ask the catalog about every code of the file (listing each row of an unknown one);
        returns the file's progress as the core has it (None when never begun)."""
        progress = None
        batches = index.codes(CHECK_BATCH)
        while (batch := await trio.to_thread.run_sync(next, batches, None)) is not None:
            answer = await self._ask("csv_check", {"file": name, "hash": scanned.hash, "codes": batch})
            progress = answer.get("progress")
            unknown = {code: (err, msg) for code, err, msg in answer.get("unknown", [])}
            if unknown:
                await trio.to_thread.run_sync(_list_unknown, index, unknown, errors)
        return progress

    async def _apply(self, name: str, index: BasketIndex, scanned: Scanned, start: int) -> str:
        """Submit the file's baskets from `start` on, one slice at a time, each awaited."""
        total = index.baskets
        self.metrics.in_progress.labels(self.name).set(1)
        self.metrics.progress.labels(self.name).set(start / total)
        if start:
            log.info("csv_drop %s: %s continues at basket %d of %d", self.name, name, start, total)
        pace = SlicePace(self.slice_ms, self.slice_baskets, self.slice_lines)
        slices = index.slices(scanned.hash, start, pace)
        applied = count = rows = 0
        began = time.perf_counter()
        item = await trio.to_thread.run_sync(next, slices, None)
        while item is not None:
            first, docs = item
            answer, item = await self._slice_and_next(slices, {
                "file": name, "hash": scanned.hash, "baskets": total, "rows": scanned.rows, "first": first,
                "docs": docs})
            pace.observe(sum(len(doc["lines"]) for doc in docs), answer.get("held_ms"))
            self.metrics.slice_lines.labels(self.name).set(pace.lines)
            self._account(name, answer)
            applied += answer["applied"]
            rows += answer["rows"]
            count += 1
            self.metrics.progress.labels(self.name).set(answer["next"] / total)
            if answer["next"] != first + len(docs):
                raise _NotNow(f"the core has it at basket {answer['next']}, not {first + len(docs)}")
            if count % PROGRESS_EVERY == 0:
                log.info("csv_drop %s: %s: %d of %d baskets, %.0f rows/s", self.name, name, answer["next"],
                         total, rows / max(time.perf_counter() - began, 1e-9))
        return "applied" if applied else "replayed"

    async def _slice_and_next(self, slices, body: dict) -> tuple[dict, tuple | None]:
        """The core's answer to the slice `body`, and the next slice of `slices` (None after the last).

        The next slice is read while this one commits: the writer calls the request's `applied` from
        its thread as the slice's commit begins (`Request.applied`), and the commit's writes and
        syncs hold no interpreter lock, so the read, about 0.7 ms of a 640-line slice, costs the file
        nothing. Read any earlier, it would contend with the slice being applied for the lock."""
        go = threading.Event()
        outcome: list = []
        read_failed: Exception | None = None

        async def ask() -> None:
            try:
                outcome.append(await self._ask("csv_slice", body, applied=go.set))
            except _NotNow as exc:
                outcome.append(exc)
            finally:
                go.set()  # an answer the core gave without applying the slice lets the read go on

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            try:
                item = await trio.to_thread.run_sync(_next_when, go, slices)
            except Exception as exc:  # raised after the answer, as itself rather than in a group
                read_failed = exc
        if isinstance(outcome[0], _NotNow):
            raise outcome[0]
        if read_failed is not None:
            raise read_failed
        return outcome[0], item

    def _account(self, name: str, answer: dict) -> None:
        """Metrics and log lines of one committed slice."""
        self.metrics.slices.labels(self.name).inc()
        self.metrics.baskets.labels(self.name).inc(answer["applied"])
        self.metrics.rows.labels(self.name).inc(answer["rows"])
        for refused in answer["refused"]:
            log.warning("csv_drop %s: %s: basket %s (rows %s) refused: %s: %s", self.name, name,
                        refused["basket"], refused["rows"], refused["err"], refused["msg"])
            self.metrics.rejects.labels(self.name, refused["err"]).inc(max(len(refused["rows"]), 1))
        for alert in answer["alerts"]:
            log.warning("csv_drop %s: %s: basket %s sold %s lot %s: %s", self.name, name, alert["basket"],
                        alert["sku"], alert["lot"] or "(all lots)", alert["kind"])
            self.metrics.alerts.labels(self.name, alert["kind"]).inc()

    def _retry(self, name: str, why: str) -> str:
        delay = self.tracker.hold(name, trio.current_time())
        log.warning("csv_drop %s: %s: %s; trying again in %.0f s", self.name, name, why, delay)
        self.metrics.files.labels(self.name, "retry").inc()
        return "retry"

    async def _done(self, name: str, outcome: str, identity: tuple) -> str:
        src = os.path.join(self.dir, name)
        try:
            dst = await trio.to_thread.run_sync(_move, src, os.path.join(self.dir, DONE), name, identity)
        except OSError as exc:
            # Applied but not moved: taking it again later is answered as a replay.
            return self._retry(name, f"cannot move it to {DONE}/: {exc}")
        if dst is None:
            # What was read is applied; the new file of that name settles and is taken on its own.
            self.tracker.forget(name)
            dst = "(left: the file was replaced meanwhile)"
        log.info("csv_drop %s: %s %s -> %s", self.name, outcome, name, dst)
        self.metrics.files.labels(self.name, outcome).inc()
        return outcome

    async def _rejected(self, name: str, errors: list[RowError], identity: tuple) -> str:
        src = os.path.join(self.dir, name)
        try:
            dst = await trio.to_thread.run_sync(
                _reject, src, os.path.join(self.dir, REJECTED), name, errors, identity)
        except OSError as exc:
            return self._retry(name, f"cannot move it to {REJECTED}/: {exc}")
        if dst is None:
            # These reasons were for content that is gone; the new file is judged on its own.
            self.tracker.forget(name)
            dst = "(left: the file was replaced meanwhile)"
        log.warning("csv_drop %s: rejected %s -> %s (%d errors)", self.name, name, dst, len(errors))
        self.metrics.files.labels(self.name, "rejected").inc()
        for error in errors:
            self.metrics.rejects.labels(self.name, error.code).inc()
        return "rejected"


async def serve(device: dict, submit: Submit, metrics: Metrics, *,
                task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Watch `device["dir"]` until cancelled, applying each settled `*.csv` file once."""
    drop = CsvDrop(device, submit, metrics)
    await trio.to_thread.run_sync(drop.prepare)
    task_status.started()
    while True:
        await drop.poll()
        await trio.sleep(drop.poll_s)
