"""kill -9 between the stream's acknowledgement and the gateway's own record of it: the restarted
gateway learns from the stream where it stands and neither skips nor doubles a batch."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import trio

from core_ext import Store
from upstream import decode_envelope
from upstream._nats_link import PUBLISHED

from ._nats_rig import bridge, chain, hub  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_worker(data_dir: str, url: str, mode: str) -> dict:
    proc = subprocess.Popen([sys.executable, "-m", "tests.nats_worker", data_dir, url, mode], cwd=ROOT,
                            stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": ROOT})
    try:
        line = proc.stdout.readline()
        assert line, "the worker ended without a word"
        said = json.loads(line)
        if mode == "hold":
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        return said
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


async def test_kill_9_between_publish_and_cursor_neither_skips_nor_doubles(tmp_path, chain, hub):
    data_dir = str(tmp_path / "data")
    held = await trio.to_thread.run_sync(run_worker, data_dir, hub.url, "hold")
    assert held["published"] == held["head"] > 1   # the stream has them all ...
    store = Store(data_dir)
    try:
        with store.read() as tx:
            assert tx.meta(PUBLISHED, 0) == 0          # ... and the gateway recorded none of it
    finally:
        store.close()
    done = await trio.to_thread.run_sync(run_worker, data_dir, hub.url, "run")   # more sales, then the link
    assert done["head"] > held["head"]
    found = await chain.batches()
    seqs = [decode_envelope(data)["seq"] for _s, _h, data in found]
    assert seqs == list(range(1, done["head"] + 1))
    assert [h["Nats-Msg-Id"] for _s, h, _d in found] == [f"S001:{n}" for n in seqs]
