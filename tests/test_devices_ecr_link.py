"""The ECR/1 task's timing on an in-memory line under trio's MockClock: ACK waits, resends, the
link error, the partial-frame timeout, and the requests the plugin answers itself."""
from __future__ import annotations

import binascii
import struct

import msgpack
import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry

from core_ext import Response
from device_plugins import ecr_serial
from device_plugins.ecr_serial._task import _Link

STX, ETX, ACK, NAK = 0x02, 0x03, 0x06, 0x15


def build_frame(body: dict) -> bytes:
    packed = msgpack.packb(body, use_bin_type=True)
    head = struct.pack(">H", len(packed))
    crc = binascii.crc_hqx(head + packed, 0xFFFF)
    return bytes([STX]) + head + packed + struct.pack(">H", crc) + bytes([ETX])


class TerminalEnd:
    """The terminal's end of the line: what arrived, and when (by the mock clock)."""

    def __init__(self, stream):
        self.stream = stream
        self.buf = bytearray()

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> None:
        self.buf += await self.stream.receive_some(4096)

    async def byte(self) -> int:
        while not self.buf:
            await self._fill()
        return self.buf.pop(0)

    async def frame(self) -> tuple[float, dict]:
        while STX not in self.buf:
            await self._fill()
        del self.buf[:self.buf.index(STX)]
        while len(self.buf) < 3 or len(self.buf) < 6 + int.from_bytes(self.buf[1:3], "big"):
            await self._fill()
        at = trio.current_time()
        length = int.from_bytes(self.buf[1:3], "big")
        raw = bytes(self.buf[:6 + length])
        del self.buf[:6 + length]
        assert raw[-1] == ETX
        assert int.from_bytes(raw[-3:-1], "big") == binascii.crc_hqx(raw[1:3 + length], 0xFFFF)
        return at, msgpack.unpackb(raw[3:3 + length])


class Core:
    """A stand-in core: answers ping at once and records what reached it."""

    def __init__(self):
        self.requests = []

    async def __call__(self, request):
        self.requests.append(request)
        return Response({"t": "res", "re": request.body["id"], "ok": True, "time_ms": 1})


# Each test asks for `autojump_clock` itself: pytest-trio runs a test on the clock among its own arguments.
@pytest.fixture
async def line(nursery):
    gateway_end, terminal_end = trio.testing.memory_stream_pair()
    registry = CollectorRegistry()
    core = Core()
    link = _Link("lane1", gateway_end, core, ecr_serial.Metrics(registry))
    nursery.start_soon(link.run)

    def metric(name, **labels):
        return registry.get_sample_value(name, {"device": "lane1", **labels}) or 0.0

    return TerminalEnd(terminal_end), core, metric


async def test_an_unacknowledged_response_goes_four_times_a_second_apart_then_a_link_error(line, autojump_clock):
    terminal, core, metric = line
    start = trio.current_time()
    await terminal.send(build_frame({"t": "ping", "id": "P-1"}))
    assert await terminal.byte() == ACK
    sends = [await terminal.frame() for _ in range(4)]
    assert [body for _, body in sends] == [sends[0][1]] * 4
    assert sends[0][1]["re"] == "P-1"
    assert [at - start for at, _ in sends] == pytest.approx([0.0, 1.0, 2.0, 3.0], abs=1e-6)
    with trio.move_on_after(30):
        while metric("gateway_ecr_link_errors_total") == 0:
            await trio.sleep(0.01)
    assert trio.current_time() - start == pytest.approx(4.0, abs=0.02)
    assert metric("gateway_ecr_retransmits_total") == 3
    assert metric("gateway_ecr_frames_total", direction="out") == 4
    # Given up: nothing more comes, and the next request is served as usual.
    with trio.move_on_after(10):
        await terminal.frame()
        pytest.fail("a frame came after the link error")
    await terminal.send(build_frame({"t": "ping", "id": "P-2"}))
    assert await terminal.byte() == ACK
    assert (await terminal.frame())[1]["re"] == "P-2"
    await terminal.send(bytes([ACK]))
    assert len(core.requests) == 2


async def test_a_nak_gets_the_response_again_at_once_and_an_ack_ends_it(line, autojump_clock):
    terminal, core, metric = line
    await terminal.send(build_frame({"t": "ping", "id": "P-1"}))
    assert await terminal.byte() == ACK
    first_at, first = await terminal.frame()
    await trio.sleep(0.3)
    await terminal.send(bytes([NAK]))
    again_at, again = await terminal.frame()
    assert again == first and again_at - first_at == pytest.approx(0.3, abs=1e-6)
    await terminal.send(bytes([ACK]))
    with trio.move_on_after(10):
        await terminal.frame()
        pytest.fail("an acknowledged response was sent again")
    assert metric("gateway_ecr_retransmits_total") == 1
    assert metric("gateway_ecr_link_errors_total") == 0


async def test_a_partial_frame_is_dropped_after_two_seconds_and_the_next_one_served(line, autojump_clock):
    terminal, core, metric = line
    start = trio.current_time()
    whole = build_frame({"t": "ping", "id": "P-1"})
    await terminal.send(whole[:7])
    await trio.sleep(1.9)
    assert metric("gateway_ecr_rejects_total", reason="timeout") == 0
    await trio.sleep(0.2)
    assert metric("gateway_ecr_rejects_total", reason="timeout") == 1
    assert trio.current_time() - start == pytest.approx(2.1)
    await terminal.send(whole)
    assert await terminal.byte() == ACK
    assert (await terminal.frame())[1]["re"] == "P-1"
    assert [r.body["id"] for r in core.requests] == ["P-1"]


@pytest.mark.parametrize("body, words", [
    ({"t": "ping"}, "no id"),
    ({"t": "quote", "id": "", "lines": [{"code": "SKU-1", "qty": 1}]}, "not 0"),
    ({"t": "stock", "id": "x" * 65, "code": "SKU-1"}, "not 65"),
    ({"t": "member", "id": 42, "member": "M1"}, "not int"),
])
async def test_a_request_without_a_usable_id_is_refused_by_the_plugin(line, autojump_clock, body, words):
    terminal, core, metric = line
    await terminal.send(build_frame(body))
    assert await terminal.byte() == ACK
    _, answer = await terminal.frame()
    await terminal.send(bytes([ACK]))
    assert answer["ok"] is False and answer["err"] == "BAD_REQUEST"
    assert "id" in answer["msg"] and words in answer["msg"]
    assert answer["re"] == (body["id"] if isinstance(body.get("id"), str) else None)
    assert core.requests == []
    assert metric("gateway_ecr_rejects_total", reason="bad_request") == 1
