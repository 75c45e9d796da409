"""`python -m gateway run` as an operator runs it: a real process, real ports, real signals."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import msgpack
import pytest

from ._data import CATALOG
from .erp_test_client import request
from .test_gateway_e2e import ERP_TOKEN, RECEIPTS, TILL_TOKEN, make_keys, signed, write_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SALE = {"id": "S-1", "lines": [{"code": "SKU-2", "qty": 3}], "payments": [{"method": "cash", "cents": 3 * 4990}]}


def free_ports(n: int) -> list[int]:
    """Ports nobody listens on now (the system's choice, released before the gateway binds them)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Process:
    """One `gateway run`; its standard error goes to a file so a chatty log never blocks it."""

    def __init__(self, tmp_path, *args: str):
        self.log_path = tmp_path / f"gateway-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "wb")
        env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", *args], cwd=str(tmp_path), env=env,
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def processes(tmp_path):
    started: list[Process] = []

    def start(*args: str) -> Process:
        started.append(Process(tmp_path, *args))
        return started[-1]

    yield start
    for p in started:
        p.close()


def call(port: int, method: str, path: str, body=None, *, token: str | None = None):
    raw = None if body is None else msgpack.packb(body, use_bin_type=True)
    return request(f"http://127.0.0.1:{port}", method, path, token=token, body=raw, timeout=10)


def wait_ready(proc: Process, metrics_port: int, timeout: float = 15.0) -> None:
    """Poll /readyz: nothing in another process can tell this one when it has bound its ports."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise AssertionError(f"the gateway exited with {proc.proc.returncode}:\n{proc.output()}")
        with contextlib.suppress(OSError):
            status, _h, _b = call(metrics_port, "GET", "/readyz")
            if status == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"the gateway was not ready within {timeout} s:\n{proc.output()}")


def stop(proc: Process, timeout: float = 5.0) -> int:
    proc.proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout)


def test_sigterm_stops_cleanly_and_a_restart_keeps_every_sale(tmp_path, processes):
    _store_key, erp_key = make_keys(tmp_path)
    pos, up, metrics = free_ports(3)
    config = write_config(tmp_path, pos=f"127.0.0.1:{pos}", upstream=f"127.0.0.1:{up}",
                          metrics=f"127.0.0.1:{metrics}")

    first = processes("--config", config)
    wait_ready(first, metrics)
    status, _h, _a = call(up, "PUT", "/upstream/v1/master/catalog", signed("catalog", 1, CATALOG, erp_key),
                          token=ERP_TOKEN)
    assert status == 200
    status, _h, _a = call(up, "POST", "/upstream/v1/movements",
                          signed("movements", 1, {"movements": RECEIPTS}, erp_key), token=ERP_TOKEN)
    assert status == 200
    status, _h, sold = call(pos, "POST", "/pos/v1/sales", SALE, token=TILL_TOKEN)
    assert status == 201 and sold["ok"] is True, sold
    started = time.monotonic()
    assert stop(first) == 0, first.output()
    assert time.monotonic() - started < 5
    assert "SIGTERM received: stopping" in first.output()

    second = processes("--config", config)
    wait_ready(second, metrics)
    status, _h, stock = call(pos, "GET", "/pos/v1/stock/SKU-2", token=TILL_TOKEN)
    assert status == 200 and stock["on_hand"] == 50 - 3, stock
    # The sale is known by its id across the restart: sent again, it is the first answer again.
    status, _h, again = call(pos, "POST", "/pos/v1/sales", SALE, token=TILL_TOKEN)
    assert (status, again) == (200, sold)
    status, _h, head = call(up, "GET", "/upstream/v1/status", token=ERP_TOKEN)
    assert status == 200 and head["versions"]["catalog"] == 1
    second.proc.send_signal(signal.SIGINT)
    assert second.wait(5) == 0, second.output()

    ledger = subprocess.run([sys.executable, "-m", "gateway", "verify-ledger", "--config", config],
                            cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True,
                            text=True, timeout=30)
    assert ledger.returncode == 0, ledger.stdout + ledger.stderr


def test_an_invalid_configuration_exits_2_naming_each_key(tmp_path, processes):
    make_keys(tmp_path)
    path = tmp_path / "gateway.toml"
    write_config(tmp_path)
    text = path.read_text(encoding="utf-8")
    text = text.replace("batch_max_events = 4", "batch_max_events = 0").replace(
        'timezone = "Asia/Shanghai"', 'timezone = "Asia/Shanghia"')
    path.write_text(text, encoding="utf-8")
    proc = processes("--config", str(path))
    assert proc.wait(15) == 2
    out = proc.output()
    assert "upstream.batch_max_events: must be a positive integer, got 0" in out
    assert "store.timezone: unknown time zone 'Asia/Shanghia'" in out
    assert "nothing was started" in out
    assert not (tmp_path / "data").exists()


def test_a_missing_signing_key_exits_2_naming_the_key(tmp_path, processes):
    make_keys(tmp_path)
    os.unlink(tmp_path / "keys" / "store.pem")
    proc = processes("--config", write_config(tmp_path))
    assert proc.wait(15) == 2
    assert "keys.signing_key" in proc.output()


def test_a_port_already_taken_stops_the_process_naming_the_key(tmp_path, processes):
    make_keys(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = processes("--config", write_config(tmp_path, pos=f"127.0.0.1:{port}"))
        assert proc.wait(15) != 0
    assert f"pos_api.listen: cannot listen on 127.0.0.1:{port}" in proc.output()
