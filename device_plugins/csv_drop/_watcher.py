"""The trio task of a `csv_drop` device: poll the directory, map each settled file, submit, move it.

The order is what makes a crash harmless: a file is moved only after `submit` returned, and its
documents' ids come from its content hash, so a file that is taken again after a crash (or dropped
twice) is answered as already committed and applied once.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import trio

from core_ext import Request, Submit
from core_ext import errors as codes

from ._mapper import CsvMapping, RowError, map_csv
from ._metrics import Metrics
from ._options import DEFAULTS, CsvDropError, check_options

log = logging.getLogger("gateway.csv_drop")

DONE = "done"
REJECTED = "rejected"
MAX_RETRY_S = 30.0


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


def _read(path: str, max_bytes: int) -> tuple[bytes | None, tuple[int, int, int, int]]:
    """The file's bytes (None when over `max_bytes`) and the (size, mtime_ns, inode, device) read."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        data = None if st.st_size > max_bytes else f.read(max_bytes + 1)
    return data, _identity(st)


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


def core_errors(body: dict, docs: tuple) -> list[RowError]:
    """The core's refusal of a `csv_file` request as row errors (one per row of each bad document)."""
    err = str(body.get("err") or "REFUSED")
    items = body.get("errors")
    if not isinstance(items, list) or not items:
        return [RowError(0, err, f"{err}: {body.get('msg') or 'refused'}")]
    out = []
    for item in items:
        if not isinstance(item, dict):
            continue
        code = str(item.get("err") or err)
        reason = f"{code}: {item.get('msg') or body.get('msg') or 'refused'}"
        rows = item.get("rows")
        doc = item.get("doc")
        if not isinstance(rows, list) and isinstance(doc, int) and 0 <= doc < len(docs):
            rows = docs[doc]["rows"]
        rows = [r for r in rows if isinstance(r, int)] if isinstance(rows, list) else []
        out += [RowError(r, code, reason) for r in rows] or [RowError(0, code, reason)]
    return out or [RowError(0, err, f"{err}: {body.get('msg') or 'refused'}")]


class CsvDrop:
    """One watched directory: what `serve` runs, in steps a test can drive."""

    def __init__(self, device: dict, submit: Submit, metrics: Metrics):
        errors = check_options(device)
        if errors:
            raise CsvDropError(device.get("name") if isinstance(device, dict) else None, errors)
        self.name = device["name"]
        self.dir = device["dir"]
        self.settle_s = float(device.get("settle_s", DEFAULTS["settle_s"]))
        self.poll_s = float(device.get("poll_s", DEFAULTS["poll_s"]))
        self.max_bytes = device.get("max_bytes", DEFAULTS["max_bytes"])
        self.mapping = CsvMapping.from_device(device)
        self.submit = submit
        self.metrics = metrics
        self.tracker = SettleTracker(self.settle_s)
        self._listing_failed = False

    def prepare(self) -> None:
        """Make the directory with its `done/` and `rejected/`, so the POS has somewhere to write."""
        for sub in (DONE, REJECTED):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)

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
        """Map, submit and move one file; returns the outcome (also counted in the metrics)."""
        path = os.path.join(self.dir, name)
        try:
            data, stat = await trio.to_thread.run_sync(_read, path, self.max_bytes)
        except FileNotFoundError:
            self.tracker.forget(name)
            return "gone"
        except OSError as exc:
            return self._retry(name, f"cannot read it: {exc}")
        if data is None:
            errors = [RowError(0, "too_large", f"the file is {stat[0]} bytes, over max_bytes "
                                               f"{self.max_bytes}")]
            return await self._rejected(name, errors, stat)
        if len(data) != stat[0]:
            # Still being written after all: start its settle time again.
            self.tracker.forget(name)
            return "unsettled"
        result = await trio.to_thread.run_sync(map_csv, data, self.mapping)
        if result.errors:
            return await self._rejected(name, list(result.errors), stat)
        if not result.docs:
            return await self._done(name, "empty", 0, stat)
        request = Request(kind="csv_file", source=self.name, channel="csv",
                          body={"file": name, "hash": result.hash, "docs": list(result.docs)})
        try:
            response = await self.submit(request)
        except Exception:
            log.exception("csv_drop %s: submitting %s failed; it stays for a retry", self.name, name)
            return self._retry(name, "the core did not answer")
        body = response.body if isinstance(response.body, dict) else {}
        if response.ok:
            # Taken again after a crash (or dropped twice): every basket is already in the ledger.
            replayed = response.replayed or (body.get("applied") == 0 and bool(body.get("duplicates")))
            outcome = "replayed" if replayed else "applied"
            return await self._done(name, outcome, 0 if replayed else result.rows, stat)
        if body.get("err") == codes.UNAVAILABLE:
            return self._retry(name, f"the core is unavailable: {body.get('msg')}")
        return await self._rejected(name, core_errors(body, result.docs), stat)

    def _retry(self, name: str, why: str) -> str:
        delay = self.tracker.hold(name, trio.current_time())
        log.warning("csv_drop %s: %s: %s; trying again in %.0f s", self.name, name, why, delay)
        self.metrics.files.labels(self.name, "retry").inc()
        return "retry"

    async def _done(self, name: str, outcome: str, rows: int, identity: tuple) -> str:
        src = os.path.join(self.dir, name)
        try:
            dst = await trio.to_thread.run_sync(_move, src, os.path.join(self.dir, DONE), name, identity)
        except OSError as exc:
            # Committed but not moved: taking it again later is answered as a replay.
            return self._retry(name, f"cannot move it to {DONE}/: {exc}")
        if dst is None:
            # What was read is committed; the new file of that name settles and is taken on its own.
            self.tracker.forget(name)
            dst = "(left: the file was replaced meanwhile)"
        log.info("csv_drop %s: %s %s -> %s", self.name, outcome, name, dst)
        self.metrics.files.labels(self.name, outcome).inc()
        if rows:
            self.metrics.rows.labels(self.name).inc(rows)
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
