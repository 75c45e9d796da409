"""ECR/1 round trips: 8 lanes on pseudo-terminals, each selling priced 3-line baskets at 50 sales/s,
through a `gateway run` with 8 ecr_serial devices. A round trip is from the sale frame written to its
response frame read (the gateway's ACK in between), as the cashier waits for it.

All eight lanes are driven by one thread (`drive`): eight Python threads each parsing their answers
byte by byte queued for the harness's own interpreter lock and put that wait into the figures.

The target's figure has the lanes write on the same 20 ms tick: every tick is a burst of eight sales.
A second run has each lane sell at random moments instead (exponential gaps averaging 20 ms, seeded),
as independent cashiers do: the same mean load, but a sale may arrive while the writer is busy with
another and wait for it, which a tick's burst never does.

Then the same tick with pings (nothing applied, nothing synced: the link's and the loop's own part),
and the same pings answered by a minimal responder in place of the gateway (the ports' and this
harness's own part), both reported in the target figure's notes.

Last, the floor of a durable answer: the same minimal responder, answering each pass's frames only
once it has committed them durably into a bare LMDB environment on the same disk as a tick's group
would write them (eight sale events, their id records and balance rows); its p99 is the target
figure's baseline. And the disk's part alone: those commits made every 20 ms with nothing else
running. The gateway's own syncs during the tick run (its `gateway_core_sync_seconds` histogram)
are in the notes beside them."""
from __future__ import annotations

import binascii
import multiprocessing
import os
import random
import selectors
import struct
import tempfile
import time
import tty

import msgpack

from . import _dataset
from ._common import Figure, at_most, percentile, say
from ._gateway import Gateway, PosClient, priced_pool

LANES, RATE = 8, 50.0
SKUS, RULES = 2_000, 300
# What a tick's group writes, for the bare-disk run: a sale's event document is about 1.4 KB, its id
# record a short memo, and each of its three lines moves a lot row and its SKU's total.
EVENT_BYTES, ID_BYTES, ROW_BYTES = 1_400, 48, 40
SYNC_FAMILY = "gateway_core_sync_seconds"
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
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


class Lane:
    """One register selling: its next sale's frame, the sale in flight, the bytes read so far.

    A round trip is timed from just before the frame is written to just after the read that
    brought the last byte of its response frame: what the harness does with the bytes afterwards
    (checking the CRC, writing the ACK, decoding) is not the gateway's time.
    """

    def __init__(self, terminal: PtyTerminal, index: int, pool, count: int, start: float, *,
                 arrivals: str = "tick", kind: str = "sale"):
        self.terminal, self.index, self.pool, self.count, self.start = terminal, index, pool, count, start
        self.arrivals, self.kind = arrivals, kind
        self.gaps = random.Random(index)  # "random": the same moments in every run
        self.sent = 0
        self.sent_at: float | None = None  # None: idle until `due`
        self.due = start + self._gap()
        self.buf = bytearray()
        self.latencies: list[float] = []
        self.frame = self._frame(0)

    def _frame(self, i: int) -> bytes:
        rid = f"{self.kind}-{self.arrivals}-{int(self.start)}-{i}"
        if self.kind == "ping":
            return frame({"t": "ping", "id": rid})
        lines, total = self.pool[(self.index * 7 + i) % len(self.pool)]
        return frame({"t": "sale", "id": rid, "lines": lines, "payments": [{"method": "cash", "cents": total}]})

    @property
    def done(self) -> bool:
        return self.sent == self.count and self.sent_at is None

    def _gap(self) -> float:
        """Time from one sale's due moment to the next's (none before a tick lane's first)."""
        if self.arrivals == "tick":
            return 0.0
        return self.gaps.expovariate(RATE)

    def send(self) -> None:
        self.sent_at = time.perf_counter()
        os.write(self.terminal.master, self.frame)

    def received(self, data: bytes, at: float) -> None:
        """Bytes read at `at`; once they complete the response frame, the round trip is over."""
        self.buf += data
        if self.buf[0] != ACK:
            raise RuntimeError(f"lane {self.index}: expected an ACK, got {self.buf[0]:#x}")
        stx = self.buf.find(STX, 1)
        if stx < 0 or len(self.buf) < stx + 3:
            return
        end = stx + 3 + struct.unpack_from(">H", self.buf, stx + 1)[0] + 3
        if len(self.buf) < end:
            return
        self.latencies.append(at - self.sent_at)
        self._finish(bytes(self.buf[stx:end]))

    def _finish(self, response: bytes) -> None:
        head, body = response[1:3], response[3:-3]
        if response[-1] != ETX or struct.unpack(">H", response[-3:-1])[0] != binascii.crc_hqx(head + body, 0xFFFF):
            raise RuntimeError(f"lane {self.index}: a response frame with a bad CRC")
        os.write(self.terminal.master, bytes([ACK]))
        answer = msgpack.unpackb(body, raw=False)
        if not answer.get("ok"):
            raise RuntimeError(f"lane {self.index}: {self.kind} refused: {answer}")
        self.buf.clear()
        self.sent_at = None
        self.sent += 1
        self.due += 1 / RATE if self.arrivals == "tick" else self._gap()  # a lane behind sends at once
        if self.sent < self.count:
            self.frame = self._frame(self.sent)


def drive(lanes: list[Lane], timeout: float = 10.0) -> None:
    """Run every lane to its last sale on one thread: the lanes due are written one after another
    (all of them on the same tick), and every port readable is read and timestamped before any
    response is looked at, so one lane's bookkeeping never delays another's clock."""
    by_fd = {lane.terminal.master: lane for lane in lanes}
    with selectors.DefaultSelector() as selector:
        for fd in by_fd:
            selector.register(fd, selectors.EVENT_READ)
        while not all(lane.done for lane in lanes):
            now = time.perf_counter()
            for lane in lanes:
                if lane.sent_at is None and not lane.done and lane.due <= now:
                    lane.send()
            waits = [lane.due if lane.sent_at is None else lane.sent_at + timeout
                     for lane in lanes if not lane.done]
            ready = selector.select(max(0.0, min(waits) - time.perf_counter()))
            arrived = []
            for key, _ in ready:
                data = os.read(key.fd, 65536)
                arrived.append((by_fd[key.fd], data, time.perf_counter()))
            for lane, data, at in arrived:
                lane.received(data, at)
            now = time.perf_counter()
            for lane in lanes:
                if lane.sent_at is not None and now - lane.sent_at > timeout:
                    raise TimeoutError(f"lane {lane.index}: the gateway did not answer in {timeout} s")


def run(ctx) -> list[Figure]:
    seconds = ctx.size(2.0, 30.0)
    count = int(seconds * RATE)
    terminals = [PtyTerminal() for _ in range(LANES)]
    devices = "".join(DEVICE.format(name=f"ecr{i + 1}", port=t.path) for i, t in enumerate(terminals))
    runs, syncs = {}, {}
    try:
        with tempfile.TemporaryDirectory() as tmp, \
                Gateway(ctx, tmp, label="ecr", devices=devices, terminals=("quoter",)) as gw:
            gw.stock_up(_dataset.catalog(SKUS), _dataset.promotions(RULES, SKUS), _dataset.receipts(SKUS, 1_000_000))
            client = PosClient(gw.pos_url, "quoter", gw.tokens["quoter"])
            pool = priced_pool(client, _dataset.baskets(40, 3, SKUS, seed=5))
            client.close()
            for arrivals, how in (("tick", "on the same tick"), ("random", "at random moments")):
                say(f"ecr: {LANES} lanes x {RATE:.0f} sales/s for {seconds:.0f} s, {how}")
                syncs_before = gw.histogram(SYNC_FAMILY)
                runs[arrivals] = _drive_run(terminals, pool, count, arrivals, "sale")
                syncs[arrivals] = _bucket_counts(syncs_before, gw.histogram(SYNC_FAMILY))
            # The same tick with pings, which write nothing: the link's and the loop's own part of
            # a round trip (frames, ACKs, the queue, a group that syncs nothing).
            say(f"ecr: {LANES} lanes x {RATE:.0f} pings/s for {seconds / 3:.0f} s, on the same tick")
            pings = _drive_run(terminals, pool, count // 3, "tick", "ping")
        say(f"ecr: the same pings answered by a minimal responder in place of the gateway, {seconds / 3:.0f} s")
        floor = _floor_run(terminals, pool, count // 3, "ping")
        with tempfile.TemporaryDirectory() as tmp:
            say(f"ecr: sales answered by the minimal responder once it has committed them durably, {seconds / 3:.0f} s")
            durable = _floor_run(terminals, pool, count // 3, "sale", data_dir=tmp)
        with tempfile.TemporaryDirectory() as tmp:
            say(f"ecr: a bare LMDB commit of a tick's records every 20 ms on the same disk, {seconds / 3:.0f} s")
            disk_ms = _disk_commit_run(tmp, count // 3)
    finally:
        for t in terminals:
            t.close()
    tick = _figure(*runs["tick"], "ecr_8_lanes_p99", "at", "p99 <= 5 ms")
    ping_ms = _latencies_ms(pings[0])
    floor_ms = _latencies_ms(floor[0])
    durable_ms = _latencies_ms(durable[0])
    tick.baseline = percentile(durable_ms, 0.99)
    tick.baseline_of = "minimal responder answering each tick once it has committed it durably, p99"
    tick.extra.update({"ping_p50_ms": percentile(ping_ms, 0.5), "ping_p99_ms": percentile(ping_ms, 0.99),
                       "floor_p50_ms": percentile(floor_ms, 0.5), "floor_p99_ms": percentile(floor_ms, 0.99),
                       "durable_floor_p50_ms": percentile(durable_ms, 0.5),
                       "durable_floor_p90_ms": percentile(durable_ms, 0.9), "durable_floor_max_ms": durable_ms[-1],
                       "disk_commit_p50_ms": percentile(disk_ms, 0.5), "disk_commit_p99_ms": percentile(disk_ms, 0.99),
                       "disk_commit_max_ms": disk_ms[-1], **_sync_notes(syncs["tick"])})
    random_run = _figure(*runs["random"], "ecr_8_lanes_random_p99", "at random moments averaging", "")
    random_run.extra.update(_sync_notes(syncs["random"]))
    return [tick, random_run]


def _drive_run(terminals, pool, count: int, arrivals: str, kind: str) -> tuple[list[Lane], float]:
    """Every lane sending `count` requests of `kind`; the lanes and the seconds they took."""
    start = time.perf_counter() + 0.05
    lanes = [Lane(t, i, pool, count, start, arrivals=arrivals, kind=kind) for i, t in enumerate(terminals)]
    drive(lanes)
    return lanes, time.perf_counter() - start


def _floor_run(terminals, pool, count: int, kind: str, data_dir: str | None = None) -> tuple[list[Lane], float]:
    """The requests of `_drive_run` answered by `_minimal_responder` in a process of its own: what the
    ports and this harness cost by themselves, and with `data_dir`, a durable commit too."""
    ready = multiprocessing.get_context("spawn").Event()
    responder = multiprocessing.get_context("spawn").Process(
        target=_minimal_responder, args=([t.path for t in terminals], ready, data_dir), daemon=True)
    responder.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the minimal responder did not start")
        return _drive_run(terminals, pool, count, "tick", kind)
    finally:
        responder.kill()
        responder.join()


def _minimal_responder(paths: list[str], ready, data_dir: str | None) -> None:
    """Open the ports as the gateway does and answer every frame with an ACK and a fixed answer
    frame, from one selector loop: no checks, no queue, no writer. With `data_dir`, the frames read
    in one pass of the loop are first committed together, durably, as a tick's group would write
    them (`_TickRecords`): the least any durable answer can take on these ports and this disk."""
    fds = [os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK) for path in paths]
    for fd in fds:
        tty.setraw(fd)
    records = None if data_dir is None else _TickRecords(data_dir)
    answer = bytes([ACK]) + frame({"t": "res", "re": "", "ok": True, "time_ms": 0})
    pending = {fd: bytearray() for fd in fds}
    with selectors.DefaultSelector() as selector:
        for fd in fds:
            selector.register(fd, selectors.EVENT_READ)
        ready.set()
        while True:
            framed = []
            for key, _ in selector.select():
                buf = pending[key.fd]
                buf += os.read(key.fd, 4096)
                while buf and buf[0] == ACK:  # the harness's ACK of an answer
                    del buf[0]
                if len(buf) >= 3 and len(buf) >= 3 + struct.unpack_from(">H", buf, 1)[0] + 3:
                    del buf[:3 + struct.unpack_from(">H", buf, 1)[0] + 3]
                    framed.append(key.fd)
            if records is not None and framed:
                records.commit(len(framed))
            for fd in framed:
                os.write(fd, answer)


class _TickRecords:
    """A bare LMDB environment (sync and metasync on, as the gateway's store) taking what a group
    of sales writes: for each, its event appended, its id record, and a lot row and a SKU total for
    each of its three lines, among as many rows as the benchmark's stock has."""

    def __init__(self, root: str):
        import lmdb

        self.rng = random.Random(7)
        self.env = lmdb.open(root, map_size=1 << 30, max_dbs=4, sync=True, metasync=True)
        self.events, self.ids, self.lots = (self.env.open_db(name) for name in (b"events", b"ids", b"lots"))
        self.seq = 0
        with self.env.begin(write=True) as txn:
            for sku in range(SKUS):
                txn.put(b"SKU-%06d\x00" % sku, bytes(ROW_BYTES), db=self.lots)
                txn.put(b"SKU-%06d\x00L1" % sku, bytes(ROW_BYTES), db=self.lots)

    def commit(self, sales: int) -> None:
        rng = self.rng
        with self.env.begin(write=True) as txn:
            for _ in range(sales):
                self.seq += 1
                txn.put(self.seq.to_bytes(8, "big"), rng.randbytes(EVENT_BYTES), db=self.events, append=True)
                txn.put(b"ecr%d:%08x" % (rng.randrange(LANES), rng.getrandbits(32)), bytes(ID_BYTES), db=self.ids)
                for _ in range(3):
                    sku = rng.randrange(SKUS)
                    txn.put(b"SKU-%06d\x00" % sku, rng.randbytes(ROW_BYTES), db=self.lots)
                    txn.put(b"SKU-%06d\x00L1" % sku, rng.randbytes(ROW_BYTES), db=self.lots)

    def close(self) -> None:
        self.env.close()


def _disk_commit_run(root: str, ticks: int) -> list[float]:
    """Milliseconds of each of `ticks` durable commits of a tick's eight sales (`_TickRecords`), one
    every 20 ms, with nothing else running. Sorted."""
    records = _TickRecords(root)
    taken = []
    start = time.perf_counter() + 0.02
    for tick in range(ticks):
        time.sleep(max(0.0, start + tick / RATE - time.perf_counter()))
        began = time.perf_counter()
        records.commit(LANES)
        taken.append((time.perf_counter() - began) * 1000)
    records.close()
    return sorted(taken)


def _bucket_counts(before: dict[float, float], after: dict[float, float]) -> dict[float, float]:
    """A histogram's cumulative bucket counts over a run: after minus before, by upper bound."""
    return {bound: after[bound] - before.get(bound, 0.0) for bound in after}


def _sync_notes(buckets: dict[float, float]) -> dict:
    """The gateway's own durable commits in a run: how many, the share over 5 ms, and the bucket
    bound its p99 fell under."""
    total = buckets.get(float("inf"), 0.0)
    if not total:
        return {"gateway_syncs": 0}
    p99_under = next(bound for bound, count in sorted(buckets.items()) if count >= 0.99 * total)
    return {"gateway_syncs": int(total), "gateway_syncs_over_5ms_share": 1 - buckets.get(0.005, 0.0) / total,
            "gateway_sync_p99_under_ms": p99_under * 1000}


def _latencies_ms(lanes: list[Lane]) -> list[float]:
    return sorted(x * 1000 for lane in lanes for x in lane.latencies)


def _figure(lanes: list[Lane], elapsed: float, name: str, how: str, target: str) -> Figure:
    merged = _latencies_ms(lanes)
    p99 = percentile(merged, 0.99)
    return Figure(name, f"ECR/1 sale round trip, {LANES} pty lanes {how} {RATE:.0f} sales/s each",
                  p99, "ms", target=target, met=at_most(p99, 5.0) if target else None,
                  extra={"p50_ms": percentile(merged, 0.5), "p90_ms": percentile(merged, 0.9), "max_ms": merged[-1],
                         "sales": len(merged), "achieved_sales_per_s": len(merged) / elapsed})
