"""Kill the process with SIGKILL at random moments while a client streams requests: every
acknowledged request is found exactly once, and nothing unacknowledged is half-applied."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from core_ext import Store
from core_ext._verify import verify

from . import _records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_worker(data_dir):
    proc = subprocess.Popen([sys.executable, "-m", "tests.crash_worker", data_dir], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": ROOT})
    assert json.loads(proc.stdout.readline())["ready"]
    return proc


def request_for(n):
    if n % 4 == 0:
        return {"kind": "receipt", "source": "erp", "body": {"id": f"R{n}", "sku": "SKU-4", "qty": 2}}
    sku = "SKU-4" if n % 2 else "SKU-1"
    return {"kind": "sale", "body": {"id": f"S{n}", "lines": [{"code": sku, "qty": 1}],
                                     "payments": [{"method": "cash", "cents": 350 if sku == "SKU-4" else 1990}]}}


def run_round(data_dir, ids, acked, rng):
    proc = start_worker(data_dir)
    replies = []
    reader = threading.Thread(target=lambda: replies.extend(json.loads(l) for l in proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + rng.uniform(0.1, 0.6)
    try:
        for n in ids:
            proc.stdin.write((json.dumps(request_for(n)) + "\n").encode())
            proc.stdin.flush()
            time.sleep(0.0005)  # a steady stream, so the kill lands between and inside commits
            if time.monotonic() > deadline:
                break
    except BrokenPipeError:
        pass
    time.sleep(rng.uniform(0, 0.02))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _records.killed()
    reader.join(timeout=5)
    for pipe in (proc.stdin, proc.stdout):
        try:
            pipe.close()
        except BrokenPipeError:
            pass
    for reply in replies:
        assert reply["ok"], reply
        acked.add(reply["id"])


@pytest.mark.parametrize("rounds", [pytest.param(5, id="5-kills"),
                                    pytest.param(40, id="40-kills", marks=pytest.mark.soak)])
def test_sigkill_loses_no_acknowledged_request_and_half_applies_nothing(tmp_path, rounds):
    data_dir = str(tmp_path / "data")
    rng = random.Random(int(os.environ.get("CRASH_SEED", "7")))
    acked = set()
    sent = []
    n = 0
    for _round in range(rounds):
        ids = list(range(n, n + 1000))
        n += 1000
        run_round(data_dir, ids, acked, rng)
        sent.extend(ids)
    # Resend everything once more to a healthy process: a committed id answers with its first response.
    proc = start_worker(data_dir)
    out, _ = proc.communicate("".join(json.dumps(request_for(i)) + "\n" for i in sent).encode(), timeout=120)
    final = [json.loads(l) for l in out.decode().splitlines() if l.strip()]
    assert all(r["ok"] for r in final), [r for r in final if not r["ok"]][:3]
    assert acked, "the client saw no acknowledgement at all: the test did not exercise anything"

    store = Store(data_dir)
    try:
        with store.read() as tx:
            events = list(tx.events())
            remembered = {k.decode(): v for k, v in tx.items("ids")}
        business = [e for e in events if e["type"] in ("sale", "receipt") and not e["id"].startswith("erp:opening")]
        by_id = {}
        for e in business:
            by_id.setdefault(e["id"], []).append(e["seq"])
        for rid in acked:
            key = ("erp:" if rid.startswith("R") else "lane1:") + rid
            assert len(by_id.get(key, [])) == 1, f"{key} acknowledged but found {len(by_id.get(key, []))} times"
        assert all(len(seqs) == 1 for seqs in by_id.values())
        # Every remembered id has its event and every event its remembered id: nothing half-applied.
        assert set(by_id) == {k for k in remembered if k.startswith(("lane1:", "erp:R"))}
        for key, seqs in by_id.items():
            assert remembered[key]["seq"] == seqs[0]
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert verify(store) == []
        assert len(by_id) == len(sent)  # after the resend, every request is in exactly once
    finally:
        store.close()
