"""A POS terminal speaking ECR/1 over a real serial line: the demo store's lanes, and the tests' terminal.

`Cable` is a null-modem cable made of two pseudo-terminals: the gateway opens one end by a path (a
symlink, so that a replugged cable keeps its name), the terminal opens the other with pyserial, and a
trio task carries the bytes between the two masters. `unplug()` closes the gateway's end; `plug()`
makes a new one and points the symlink at it.

`Terminal` is the terminal: blocking pyserial calls, so tests run it in a thread. Its framing is
written here on purpose, apart from the gateway's, so that the two check each other. It can send line
noise, a frame with a corrupted CRC (which must be NAKed, then sent again) and lose an ACK (so it
sends the same frame twice).
"""
from __future__ import annotations

import binascii
import errno
import os
import struct
import time

import msgpack
import serial
import trio

STX, ETX, ACK, NAK = 0x02, 0x03, 0x06, 0x15


class TerminalError(Exception):
    pass


def build_frame(body: dict, *, corrupt_crc: bool = False) -> bytes:
    packed = msgpack.packb(body, use_bin_type=True)
    head = struct.pack(">H", len(packed))
    crc = binascii.crc_hqx(head + packed, 0xFFFF) ^ (0x5A5A if corrupt_crc else 0)
    return bytes([STX]) + head + packed + struct.pack(">H", crc) + bytes([ETX])


class Terminal:
    def __init__(self, path: str, *, ack_timeout: float = 1.0, retries: int = 3,
                 response_timeout: float = 10.0):
        self.ser = serial.Serial(path, baudrate=115200, timeout=0.05)
        # Every byte written, so that a test can wait until the gateway has read them all.
        self.written = 0
        write = self.ser.write

        def counted_write(data):
            self.written += len(data)
            return write(data)

        self.ser.write = counted_write
        self.ack_timeout = ack_timeout
        self.retries = retries
        self.response_timeout = response_timeout
        self.sent_frames = 0
        self.naks = 0
        self.received: list[dict] = []  # every response frame, duplicates too
        self._pending = bytearray()
        self._early: list[dict] = []  # response frames that came while an ACK was awaited

    def close(self) -> None:
        self.ser.close()

    def noise(self, data: bytes) -> None:
        self.ser.write(data)

    def request(self, body: dict, *, corrupt_crc: bool = False, lose_ack: bool = False,
                noise: bytes = b"", responses: int = 1) -> list[dict]:
        """Send `body`; return the `responses` response frames that answer its id."""
        if noise:
            self.ser.write(noise)
        if corrupt_crc:
            self._write(build_frame(body, corrupt_crc=True))
            if self._read_ack() != NAK:
                raise TerminalError("a frame with a corrupted CRC was not NAKed")
            self.naks += 1
        good = build_frame(body)
        for attempt in range(self.retries + 1):
            self._write(good)
            answer = self._read_ack()
            if answer == ACK and lose_ack and attempt == 0:
                continue  # the ACK was lost on the line: send the frame again
            if answer == ACK:
                break
            if answer == NAK:
                self.naks += 1
        else:
            raise TerminalError(f"no ACK for {body.get('id')!r} after {self.retries + 1} sends")
        out = []
        deadline = time.monotonic() + self.response_timeout
        while len(out) < responses:
            got = self._early.pop(0) if self._early else self._read_frame(deadline)
            if got.get("re") == body.get("id"):
                out.append(got)
        return out

    def _write(self, data: bytes) -> None:
        self.ser.write(data)
        self.ser.flush()
        self.sent_frames += 1

    def _read_ack(self) -> int | None:
        deadline = time.monotonic() + self.ack_timeout
        while time.monotonic() < deadline:
            byte = self._byte(deadline)
            if byte in (ACK, NAK):
                return byte
            if byte == STX:
                # The gateway answered the first send before the ACK of a resend came back (the two
                # crossed on the line): take the frame, ACK it, and go on waiting.
                self._pending.insert(0, STX)
                self._early.append(self._read_frame(time.monotonic() + self.response_timeout))
        return None

    def _byte(self, deadline: float) -> int | None:
        if self._pending:
            return self._pending.pop(0)
        while time.monotonic() < deadline:
            data = self.ser.read(1)
            if data:
                return data[0]
        return None

    def _exact(self, n: int, deadline: float) -> bytes:
        out = bytearray()
        while len(out) < n:
            byte = self._byte(deadline)
            if byte is None:
                raise TerminalError("a response frame stopped short")
            out.append(byte)
        return bytes(out)

    def _read_frame(self, deadline: float) -> dict:
        while True:
            byte = self._byte(deadline)
            if byte is None:
                raise TerminalError("no response frame in time")
            if byte != STX:
                continue
            head = self._exact(2, deadline)
            length = struct.unpack(">H", head)[0]
            rest = self._exact(length + 3, deadline)
            body, crc, etx = rest[:length], rest[length:length + 2], rest[-1]
            if etx != ETX or struct.unpack(">H", crc)[0] != binascii.crc_hqx(head + body, 0xFFFF):
                self.ser.write(bytes([NAK]))
                continue
            self.ser.write(bytes([ACK]))
            message = msgpack.unpackb(body, raw=False)
            self.received.append(message)
            return message


class Cable:
    """Two pseudo-terminals joined by a trio task; the gateway's end is reached through `path`."""

    def __init__(self, path: str):
        self.path = path
        self.term_master, term_slave = os.openpty()
        self.terminal_path = os.ttyname(term_slave)
        os.close(term_slave)  # the terminal opens it by name with pyserial
        self.gw_master: int | None = None
        self._scope: trio.CancelScope | None = None
        self._done: trio.Event | None = None
        self.carried = 0

    async def plug(self, nursery: trio.Nursery) -> None:
        master, slave = os.openpty()
        name = os.ttyname(slave)
        os.close(slave)
        tmp = self.path + ".new"
        os.symlink(name, tmp)
        os.replace(tmp, self.path)
        self.gw_master = master
        self._scope = trio.CancelScope()
        self._done = trio.Event()
        nursery.start_soon(self._carry, self._scope, master, self._done)

    def unplug(self) -> None:
        """Pull the cable: the carrying task closes the gateway's master as it stops."""
        self._scope.cancel()
        self.gw_master = None
        os.unlink(self.path)

    async def aclose(self) -> None:
        if self.gw_master is not None:
            self.unplug()
        if self._done is not None:
            await self._done.wait()
        os.close(self.term_master)

    async def _carry(self, scope: trio.CancelScope, gw_master: int, done: trio.Event) -> None:
        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, gw_master, self.term_master)
                    nursery.start_soon(self._pump, self.term_master, gw_master)
        finally:
            os.close(gw_master)
            done.set()

    async def _pump(self, src: int, dst: int) -> None:
        os.set_blocking(src, False)
        os.set_blocking(dst, False)
        while True:
            await trio.lowlevel.wait_readable(src)
            try:
                data = os.read(src, 4096)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                # Nobody holds the slave end open right now (a port being reopened). Polled in a
                # thread: trio's clock may be a mock one that stands still.
                await trio.to_thread.run_sync(time.sleep, 0.005)
                continue
            view = memoryview(data)
            while view:
                await trio.lowlevel.wait_writable(dst)
                try:
                    view = view[os.write(dst, view):]
                except BlockingIOError:
                    continue
            self.carried += len(data)
