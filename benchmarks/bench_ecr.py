"""ECR/1 round trips: 8 lanes on pseudo-terminals, each selling priced 3-line baskets at 50 sales/s,
through a `gateway run` with 8 ecr_serial devices. A round trip is from the sale frame written to its
response frame read (the gateway's ACK in between), as the cashier waits for it."""
from __future__ import annotations

import binascii
import os
import select
import struct
import tempfile
import threading
import time
import tty

import msgpack

from . import _dataset
from ._common import Figure, at_most, percentile, say
from ._gateway import Gateway, PosClient, priced_pool

LANES, RATE = 8, 50.0
SKUS, RULES = 2_000, 300
STX, ETX, ACK, NAK = 0x02, 0x03, 0x06, 0x15

DEVICE = """
[[devices]]
name = "{name}"
kind = "ecr_serial"
port = "{port}"
baudrate = 115200
"""


def frame(body: dict) -> bytes:
    """An ECR/1 frame, written from the spec here rather than taken from the gateway's code."""
    packed = msgpack.packb(body, use_bin_type=True)
    head = struct.pack(">H", len(packed))
    return bytes([STX]) + head + packed + struct.pack(">H", binascii.crc_hqx(head + packed, 0xFFFF)) + bytes([ETX])


class PtyTerminal:
    """A register on the master side of a pseudo-terminal; the gateway opens the slave by name."""

    def __init__(self):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo or line editing before the gateway sets the port up itself
        self.path = os.ttyname(self.slave)
        self._buf = bytearray()

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)

    def _byte(self, deadline: float) -> int:
        while not self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.master], [], [], left)[0]:
                raise TimeoutError("the gateway did not answer in time")
            self._buf += os.read(self.master, 4096)
        return self._buf.pop(0)

    def _exact(self, n: int, deadline: float) -> bytes:
        return bytes(self._byte(deadline) for _ in range(n))

    def request(self, body: dict, timeout: float = 10.0) -> dict:
        os.write(self.master, frame(body))
        deadline = time.monotonic() + timeout
        if (answer := self._byte(deadline)) != ACK:
            raise RuntimeError(f"expected an ACK, got {answer:#x}")
        while self._byte(deadline) != STX:
            pass
        head = self._exact(2, deadline)
        rest = self._exact(struct.unpack(">H", head)[0] + 3, deadline)
        if rest[-1] != ETX or struct.unpack(">H", rest[-3:-1])[0] != binascii.crc_hqx(head + rest[:-3], 0xFFFF):
            raise RuntimeError("a response frame with a bad CRC")
        os.write(self.master, bytes([ACK]))
        return msgpack.unpackb(rest[:-3], raw=False)


def _lane(terminal: PtyTerminal, lane: int, pool, count: int, start: float, out: list, errors: list) -> None:
    try:
        for i in range(count):
            wait = start + i / RATE - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            lines, total = pool[(lane * 7 + i) % len(pool)]
            body = {"t": "sale", "id": f"{int(start)}-{i}", "lines": lines,
                    "payments": [{"method": "cash", "cents": total}]}
            t = time.perf_counter()
            answer = terminal.request(body)
            out.append(time.perf_counter() - t)
            if not answer.get("ok"):
                raise RuntimeError(f"lane {lane}: sale refused: {answer}")
    except Exception as exc:  # reported by the caller, with the lane's figures so far
        errors.append(exc)


def run(ctx) -> list[Figure]:
    seconds = ctx.size(2.0, 30.0)
    terminals = [PtyTerminal() for _ in range(LANES)]
    devices = "".join(DEVICE.format(name=f"ecr{i + 1}", port=t.path) for i, t in enumerate(terminals))
    try:
        with tempfile.TemporaryDirectory() as tmp, \
                Gateway(ctx, tmp, label="ecr", devices=devices, terminals=("quoter",)) as gw:
            gw.stock_up(_dataset.catalog(SKUS), _dataset.promotions(RULES, SKUS), _dataset.receipts(SKUS, 1_000_000))
            client = PosClient(gw.pos_url, "quoter", gw.tokens["quoter"])
            pool = priced_pool(client, _dataset.baskets(40, 3, SKUS, seed=5))
            client.close()
            count = int(seconds * RATE)
            say(f"ecr: {LANES} lanes x {RATE:.0f} sales/s for {seconds:.0f} s")
            latencies: list[list[float]] = [[] for _ in range(LANES)]
            errors: list[Exception] = []
            start = time.perf_counter() + 0.05
            threads = [threading.Thread(target=_lane, args=(t, i, pool, count, start, latencies[i], errors))
                       for i, t in enumerate(terminals)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            elapsed = time.perf_counter() - start
            if errors:
                raise errors[0]
    finally:
        for t in terminals:
            t.close()
    merged = sorted(x * 1000 for per in latencies for x in per)
    p99 = percentile(merged, 0.99)
    return [Figure("ecr_8_lanes_p99", f"ECR/1 sale round trip, {LANES} pty lanes at {RATE:.0f} sales/s each",
                   p99, "ms", target="p99 <= 5 ms", met=at_most(p99, 5.0),
                   extra={"p50_ms": percentile(merged, 0.5), "max_ms": merged[-1], "sales": len(merged),
                          "achieved_sales_per_s": len(merged) / elapsed})]
