"""Floods against a real `gateway run` on loopback, with figures (soak): an ECR/1 line flooded with
pings and garbage while a POS/1 terminal times its sales, 500 POS/1 connections at once, 100 ERP long
polls at once. Each measures the process's peak anonymous memory (RssAnon) and bounds it; each is
bounded in count and time and stops by itself."""
from __future__ import annotations

import http.client
import json
import os
import threading
import time

import msgpack
import pytest
import trio

from core_ext import Store

from . import _records
from ._http import post_raw
from ._data import CATALOG
from .ecr_terminal import ACK, STX, build_frame
from .test_gateway_e2e import ERP_TOKEN, TILL_TOKEN, ecr_device, make_keys, signed, write_config
from .test_gateway_process import Process, call, free_ports, stop, wait_ready

pytestmark = pytest.mark.soak

MEMORY_BOUND_KIB = 256 * 1024  # far above what the process needs; a leak per connection crosses it
STOCK = [{"id": f"FLOOD/{sku}", "type": "receipt", "sku": sku, "lot": None, "expiry": None, "qty": 1_000_000}
         for sku in ("SKU-2", "SKU-4")]


def rss_anon_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/PID/status")


class PeakMemory:
    """Samples the process's RssAnon every 10 ms in a thread until stopped; keeps the peak."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak = rss_anon_kib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.01):
            try:
                self.peak = max(self.peak, rss_anon_kib(self.pid))
            except OSError:
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


class Gateway:
    def __init__(self, root, processes):
        _store_key, erp_key = make_keys(root)
        self.pos, self.up, self.metrics = free_ports(3)
        self.master, slave = os.openpty()
        self.slave = slave  # held open so the line never reads EIO while the gateway reopens it
        self.config = write_config(root, pos=f"127.0.0.1:{self.pos}", upstream=f"127.0.0.1:{self.up}",
                                   metrics=f"127.0.0.1:{self.metrics}",
                                   devices=ecr_device("lane9", os.ttyname(slave)))
        self.root = root
        self.proc: Process = processes("--config", self.config)
        wait_ready(self.proc, self.metrics)
        assert call(self.up, "PUT", "/upstream/v1/master/catalog", signed("catalog", 1, CATALOG, erp_key),
                    token=ERP_TOKEN)[0] == 200
        assert call(self.up, "POST", "/upstream/v1/movements", signed("movements", 1, {"movements": STOCK}, erp_key),
                    token=ERP_TOKEN)[0] == 200

    @property
    def pid(self) -> int:
        return self.proc.proc.pid

    def sale_ids(self) -> set[str]:
        """After the process stopped: every sale id in its ledger."""
        store = Store(str(self.root / "data"))
        try:
            with store.read() as tx:
                return {e["id"] for e in tx.events() if e["type"] == "sale"}
        finally:
            store.close()

    def close(self):
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def gateway(tmp_path, processes):
    gw = Gateway(tmp_path, processes)
    yield gw
    gw.close()


def sale(sale_id: str) -> dict:
    return {"id": sale_id, "lines": [{"code": "SKU-4", "qty": 1}], "payments": [{"method": "cash", "cents": 350}]}


def timed_sales(port: int, prefix: str, n: int) -> list[float]:
    """`n` sales over one kept-alive connection, as a till sends them; each one's latency in ms."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {TILL_TOKEN}", "Content-Type": "application/json"}
    out = []
    try:
        for i in range(n):
            body = json.dumps(sale(f"{prefix}-{i}")).encode()
            started = time.perf_counter()
            conn.request("POST", "/pos/v1/sales", body=body, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            out.append((time.perf_counter() - started) * 1000)
            assert resp.status == 201, (resp.status, raw)
    finally:
        conn.close()
    return out


class LineFlood:
    """Pings and garbage down the ECR/1 line as fast as it takes them, ACKing every response frame
    the gateway sends back, until stopped or `limit_s` has passed."""

    def __init__(self, master: int, limit_s: float = 60.0):
        self.master = master
        self.limit_s = limit_s
        self.stop = threading.Event()
        self.sent = 0
        self.responses = 0
        self.threads = [threading.Thread(target=self._write, daemon=True),
                        threading.Thread(target=self._read, daemon=True)]

    def _write(self):
        deadline = time.monotonic() + self.limit_s
        garbage = bytes(range(256)).replace(bytes([STX]), b"") * 2
        n = 0
        while not self.stop.is_set() and time.monotonic() < deadline:
            chunk = b"".join(build_frame({"t": "ping", "id": f"fl{n + k}"}) for k in range(8)) + garbage
            self._write_all(chunk)
            n += 8
            self.sent = n

    def _write_all(self, data: bytes):
        """The master is non-blocking (the reader shares it): wait out a full line buffer."""
        view = memoryview(data)
        while view and not self.stop.is_set():
            try:
                view = view[os.write(self.master, view):]
            except BlockingIOError:
                time.sleep(0.001)

    def _read(self):
        while not self.stop.is_set():
            try:
                data = os.read(self.master, 65536)
            except BlockingIOError:
                time.sleep(0.001)
                continue
            except OSError:
                return
            frames = data.count(bytes([STX]))
            self.responses += frames
            if frames:
                self._write_all(bytes([ACK]) * frames)

    def __enter__(self):
        os.set_blocking(self.master, False)
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(5)


def test_pos_sale_latency_alone_and_with_the_ecr_line_flooded(gateway):
    n = 300
    with PeakMemory(gateway.pid) as memory:
        alone = timed_sales(gateway.pos, "alone", n)
        with LineFlood(gateway.master) as flood:
            deadline = time.monotonic() + 15
            while flood.responses < 10:  # the flood is really reaching the gateway's core
                assert time.monotonic() < deadline, (flood.sent, flood.responses, gateway.proc.output()[-3000:])
                time.sleep(0.01)
            flooded = timed_sales(gateway.pos, "flood", n)
    assert stop(gateway.proc, 15) == 0, gateway.proc.output()[-2000:]
    ids = gateway.sale_ids()
    assert {f"{TILL}:{p}-{i}" for p in ("alone", "flood") for i in range(n)} <= ids
    _records.flood("POS/1 sales, alone", what=f"{n} sales over one kept-alive connection",
                   latencies_ms=alone, peak_rss_anon_kib=memory.peak, bound_kib=MEMORY_BOUND_KIB)
    _records.flood("POS/1 sales, ECR/1 line flooded", what=f"{n} sales while pings and garbage flood an ECR/1 "
                   f"line ({flood.sent} pings sent, {flood.responses} answers)", latencies_ms=flooded,
                   peak_rss_anon_kib=memory.peak, bound_kib=MEMORY_BOUND_KIB, target_p99_ms=10)
    assert memory.peak < MEMORY_BOUND_KIB
    # Never blind: the till is served all through the flood. The 10 ms p99 target is reported, not
    # asserted: on a shared machine it measures the neighbours as much as the gateway.
    assert _records.percentile(flooded, 99) < 1000


async def one_sale(port: int, sale_id: str) -> tuple[int, dict]:
    status, payload = await post_raw(port, "/pos/v1/sales", json.dumps(sale(sale_id)).encode(), TILL_TOKEN)
    return status, json.loads(payload)


TILL = "till1"


async def test_500_concurrent_pos_connections_are_each_answered_and_none_lost(gateway):
    n = 500
    results: dict[str, tuple[int, dict]] = {}
    latencies = []

    async def one(i):
        started = time.perf_counter()
        results[f"c{i}"] = await one_sale(gateway.pos, f"c{i}")
        latencies.append((time.perf_counter() - started) * 1000)

    with PeakMemory(gateway.pid) as memory:
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(one, i)
    assert len(results) == n
    for sid, (status, answer) in results.items():
        # Under real pressure a sale may be refused to be sent again; nothing else is a 5xx.
        assert status == 201 or (status == 503 and answer["err"] == "UNAVAILABLE"), (sid, status, answer)
    acked = {f"{TILL}:{sid}" for sid, (status, _a) in results.items() if status == 201}
    assert await trio.to_thread.run_sync(stop, gateway.proc, 15) == 0
    assert acked <= gateway.sale_ids()
    _records.flood("500 concurrent POS/1 connections", what=f"{n} connections, one sale each "
                   f"({len(acked)} answered 201)", latencies_ms=latencies, peak_rss_anon_kib=memory.peak,
                   bound_kib=MEMORY_BOUND_KIB)
    assert memory.peak < MEMORY_BOUND_KIB


async def long_poll(port: int, after: int, wait_s: float) -> tuple[int, dict]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET /upstream/v1/batches?after={after}&wait={wait_s} HTTP/1.1\r\nHost: x\r\n"
                              f"Connection: close\r\nAuthorization: Bearer {ERP_TOKEN}\r\n\r\n".encode())
        raw = b""
        while chunk := await stream.receive_some(65536):
            raw += chunk
    head, _, payload = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), msgpack.unpackb(payload, raw=False, strict_map_key=False)


async def test_100_concurrent_erp_long_polls_all_wake_at_the_next_seal(gateway):
    n = 100
    status, _h, head = await trio.to_thread.run_sync(
        lambda: call(gateway.up, "GET", "/upstream/v1/status", token=ERP_TOKEN))
    assert status == 200
    # Let the sealer catch up first (it seals by age), so the polls wait for the sale below only.
    with trio.fail_after(10):
        while head["backlog"]:
            await trio.sleep(0.05)
            _s, _h, head = await trio.to_thread.run_sync(
                lambda: call(gateway.up, "GET", "/upstream/v1/status", token=ERP_TOKEN))
    after = head["last_seq"]
    answers = []

    async def poll():
        started = time.perf_counter()
        answers.append((*await long_poll(gateway.up, after, 20), (time.perf_counter() - started) * 1000))

    with PeakMemory(gateway.pid) as memory:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for _ in range(n):
                    nursery.start_soon(poll)
                await trio.sleep(1.0)  # the polls are parked (they cannot tell us; the server holds them)
                status, answer = await one_sale(gateway.pos, "wake")
                assert status == 201, answer
    assert len(answers) == n
    for status, page, _ms in answers:
        assert status == 200 and page["batches"] and page["batches"][0]["seq"] == after + 1, (status, page)
    _records.flood("100 concurrent ERP long polls", what=f"{n} polls parked, then woken by one sale's batch "
                   "(latency: from the poll to its answer, 1 s of parking included)",
                   latencies_ms=[ms for _s, _p, ms in answers], peak_rss_anon_kib=memory.peak,
                   bound_kib=MEMORY_BOUND_KIB)
    assert memory.peak < MEMORY_BOUND_KIB
    assert await trio.to_thread.run_sync(stop, gateway.proc, 15) == 0


from .test_gateway_process import processes  # noqa: E402,F401  (the fixture)
