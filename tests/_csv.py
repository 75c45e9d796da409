"""What the CSV drop tests share: a device entry, a file dropped as a POS drops it, the folder's files."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from ._data import stored_on_hand

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COLUMNS = {"id": "TicketNo", "code": "ItemCode", "qty": "Qty", "lot": "Lot"}


def device(path, columns: dict = COLUMNS, **over) -> dict:
    # Slices cut by their counts alone (a loaded machine's pace would cut them differently run to
    # run); the pace has tests of its own.
    entry = {"name": "legacy-pos", "kind": "csv_drop", "dir": str(path), "settle_s": 0.0,
             "poll_s": 0.01, "slice_ms": 1000.0, "columns": dict(columns)}
    entry.update(over)
    return entry


def drop_file(path, name: str, text: str) -> bytes:
    """Write as a POS does: a *.tmp first, renamed when complete."""
    data = text.encode()
    (path / (name + ".tmp")).write_bytes(data)
    os.replace(path / (name + ".tmp"), path / name)
    return data


def listing(path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}


def stock(store) -> dict:
    with store.read() as tx:
        return {sku: stored_on_hand(tx, sku, 0) for sku in ("SKU-1", "SKU-2", "SKU-4")}


@pytest.fixture
def drop_dir(tmp_path):
    """The folder a `csv_drop` device watches (registered by conftest.py)."""
    path = tmp_path / "drop"
    path.mkdir()
    return path


def csv_worker(data, drop, *args) -> subprocess.Popen:
    """`tests/adv_csv_worker.py` in a process of its own (to be killed mid-file), on `data` and `drop`."""
    return subprocess.Popen([sys.executable, "-m", "tests.adv_csv_worker", str(data), str(drop), *args],
                            cwd=ROOT, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": ROOT})
