"""A big ledger (a long life of sales), built once and kept under the benchmark data directory, keyed
by the store's schema and the number of events; each benchmark works on a copy of it.

Building it through POS/1 would take most of an hour; it is written straight into the store with
core_ext's public face (Store, ledger.apply_moves, Tx.append_event), in a child process so the
benchmark process stays small. A ledger the current code cannot open is built again.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from ._common import ROOT, say

BUILDER_VERSION = 1  # bump when the events written here change shape
SKUS = 2_000
CHUNK = 50_000


def _schema() -> int:
    from core_ext import _store
    return _store.SCHEMA


def ledger_path(data_dir: str, events: int) -> str:
    return os.path.join(data_dir, f"ledger-schema{_schema()}-b{BUILDER_VERSION}-{events}")


def cached_ledger(data_dir: str, events: int) -> tuple[str, int]:
    """(path of a store holding about `events` ledger events, its last seq), built when missing."""
    path = ledger_path(data_dir, events)
    marker = os.path.join(path, "built.json")
    if os.path.exists(marker):
        with open(marker) as f:
            return path, json.load(f)["last_seq"]
    shutil.rmtree(path, ignore_errors=True)
    say(f"building a ledger of {events:,} events in {path} (once; kept for later runs)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    subprocess.run([sys.executable, "-m", "benchmarks._ledger_cache", path, str(events)], cwd=ROOT, check=True,
                   env={**env, "GATEWAY_REQUIRE_EXTENSIONS": "1", "PYTHONPATH": ROOT})
    with open(marker) as f:
        return path, json.load(f)["last_seq"]


def copy_ledger(src: str, dst: str) -> None:
    """A working copy of the cached store (LMDB's data file; the lock file is made anew), on the
    disk before it is used: a store's file is not hundreds of megabytes of dirty pages when a
    gateway starts on it, and its first durable commit would otherwise write them all back."""
    os.makedirs(dst)
    copy = os.path.join(dst, "data.mdb")
    shutil.copyfile(os.path.join(src, "data.mdb"), copy)
    fd = os.open(copy, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _build(path: str, events: int) -> None:
    import time

    from core_ext import Store, _master, ledger

    from . import _dataset
    store = Store(path, map_size=16 << 30)
    catalog = _dataset.catalog(SKUS)
    with store.begin(write=True) as tx:
        _master.apply(tx, "catalog", 1, catalog)
        tx.put("master", "catalog", {"version": 1, "issued_ms": 0, "effective_ms": 0})
    ts = int(time.time() * 1000) - events * 100
    written = 0
    while written < events:
        with store.begin(write=True) as tx:
            for i in range(written, min(events, written + CHUNK)):
                lines = [(i * 7 + k * 13) % SKUS for k in range(3)]
                moves = [[_dataset.sku(s), None, -1 - (i + k) % 3, None, []] for k, s in enumerate(lines)]
                ledger.apply_moves(tx, moves)
                tx.append_event({"type": "sale", "id": f"lane{i % 8}:{i}", "ts_ms": ts + i * 100, "source": f"lane{i % 8}",
                                 "lines": [{"sku": m[0], "qty": -m[2], "unit_cents": 990, "net_cents": 990 * -m[2]}
                                           for m in moves],
                                 "total_cents": sum(990 * -m[2] for m in moves),
                                 "payments": [{"method": "cash", "cents": sum(990 * -m[2] for m in moves)}],
                                 "moves": moves})
        written = min(events, written + CHUNK)
        print(f"  ... {written:,} events", file=sys.stderr, flush=True)
    with store.read() as tx:
        last_seq = tx.last_seq()
    store.close()
    with open(os.path.join(path, "built.json"), "w") as f:
        json.dump({"events": events, "last_seq": last_seq}, f)


if __name__ == "__main__":
    _build(sys.argv[1], int(sys.argv[2]))
