"""The ECR/1 task's timing on an in-memory line under trio's MockClock: ACK waits, resends, the
link error, the partial-frame timeout, and the requests the plugin answers itself."""
from __future__ import annotations

import binascii
import logging
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
        self.early: list[tuple[float, dict]] = []

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> None:
        self.buf += await self.stream.receive_some(4096)

    async def byte(self) -> int:
        while not self.buf:
            await self._fill()
        return self.buf.pop(0)

    async def ack_or_nak(self) -> int:
        """The next ACK or NAK byte; response frames on the way are kept for `frame()`."""
        while True:
            while not self.buf:
                await self._fill()
            if self.buf[0] == STX:
                self.early.append(await self._frame_now())
                continue
            byte = self.buf.pop(0)
            if byte in (ACK, NAK):
                return byte

    async def frame(self) -> tuple[float, dict]:
        if self.early:
            return self.early.pop(0)
        return await self._frame_now()

    async def _frame_now(self) -> tuple[float, dict]:
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
    core = Core()
    terminal, _link, metric = start_link(nursery, core)
    return terminal, core, metric


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


class SlowCore(Core):
    """A core that answers only when the test lets it, and notes how many it held at once."""

    def __init__(self):
        super().__init__()
        self.gate = trio.Event()
        self.held = 0
        self.most_held = 0

    async def __call__(self, request):
        self.held += 1
        self.most_held = max(self.most_held, self.held)
        try:
            await self.gate.wait()
            return await super().__call__(request)
        finally:
            self.held -= 1


async def read_answers(terminal, count: int) -> list[dict]:
    """Read `count` response frames, ACKing each, as a terminal that takes its answers does."""
    answers = []
    with trio.move_on_after(60):  # the mock clock's 60 s: only when no answer can come any more
        for _ in range(count):
            _, body = await terminal.frame()
            await terminal.send(bytes([ACK]))
            answers.append(body)
    return answers


def start_link(nursery, core):
    gateway_end, terminal_end = trio.testing.memory_stream_pair()
    registry = CollectorRegistry()
    link = _Link("lane1", gateway_end, core, ecr_serial.Metrics(registry))
    nursery.start_soon(link.run)

    def metric(name, **labels):
        return registry.get_sample_value(name, {"device": "lane1", **labels}) or 0.0

    return TerminalEnd(terminal_end), link, metric


async def test_forty_sales_sent_back_to_back_get_forty_answers_and_those_not_queued_say_unavailable(
        nursery, autojump_clock):
    core = SlowCore()
    terminal, link, metric = start_link(nursery, core)
    ids = [f"S-{i}" for i in range(40)]
    # A terminal that waits only for each ACK before sending the next.
    for rid in ids:
        await terminal.send(build_frame({"t": "ping", "id": rid}))
        assert await terminal.ack_or_nak() == ACK
    await trio.testing.wait_all_tasks_blocked()
    core.gate.set()
    answers = await read_answers(terminal, 40)
    assert sorted(a["re"] for a in answers) == sorted(ids)  # every one, exactly once
    shed = [a for a in answers if not a["ok"]]
    assert {a["err"] for a in shed} == {"UNAVAILABLE"} and all("retry" in a["msg"] for a in shed)
    # One with the core, MAX_WAITING waiting; nothing of the rest reached the core.
    assert len(shed) == 40 - 1 - ecr_serial._task.MAX_WAITING
    assert {r.body["id"] for r in core.requests} == {a["re"] for a in answers if a["ok"]}
    assert core.most_held == 1  # the line never holds more than one place in the writer's queue
    assert metric("gateway_ecr_requests_shed_total") == len(shed)
    assert metric("gateway_ecr_responses_total", result="UNAVAILABLE") == len(shed)
    with trio.move_on_after(10):
        await terminal.frame()
        pytest.fail("an answer came twice")


async def test_a_flood_of_pings_in_one_write_is_answered_one_for_one(nursery, autojump_clock):
    core = Core()
    terminal, link, metric = start_link(nursery, core)
    ids = [f"F-{i}" for i in range(600)]
    await terminal.send(b"".join(build_frame({"t": "ping", "id": rid}) for rid in ids))
    answers = await read_answers(terminal, len(ids))
    assert sorted(a["re"] for a in answers) == sorted(ids)
    assert metric("gateway_ecr_frames_total", direction="in") == len(ids)
    assert metric("gateway_ecr_answers_dropped_total", reason="full") == 0


async def test_answers_for_a_terminal_that_stopped_acking_do_not_pile_up(nursery, autojump_clock):
    terminal, link, metric = start_link(nursery, Core())
    # 20 s of a ping every 0.1 s, none of the answers ACKed.
    for i in range(200):
        await terminal.send(build_frame({"t": "ping", "id": f"N-{i}"}))
        await trio.sleep(0.1)
        assert len(link.conn._queue) <= 4 / 0.1 + 1  # what 4 s of requests leave, at most
    dropped = metric("gateway_ecr_answers_dropped_total", reason="stale")
    given_up = metric("gateway_ecr_answers_dropped_total", reason="retries")
    assert dropped > 150 and given_up >= 4
    assert metric("gateway_ecr_link_errors_total") == given_up
    # It takes its answers again: the next one comes within one frame's sends, not after the pile.
    terminal.buf.clear()
    start = trio.current_time()
    await terminal.send(build_frame({"t": "ping", "id": "back"}))
    while True:
        _, body = await terminal.frame()
        await terminal.send(bytes([ACK]))
        if body["re"] == "back":
            break
    assert trio.current_time() - start <= 4.0 + 1e-6


def msgpack_map(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """A MessagePack map written by hand: each key and value is a str of the raw bytes given."""
    def string(raw: bytes) -> bytes:
        return bytes([0xD9, len(raw)]) + raw
    return bytes([0x80 | len(pairs)]) + b"".join(string(k) + string(v) for k, v in pairs)


def raw_frame(packed: bytes) -> bytes:
    head = struct.pack(">H", len(packed))
    return bytes([STX]) + head + packed + struct.pack(">H", binascii.crc_hqx(head + packed, 0xFFFF)) + bytes([ETX])


@pytest.mark.parametrize("pairs, re_, words", [
    ([(b"t", b"ping"), (b"id", b"U-1"), (b"lane", b"\xff\xfe1")], "U-1", "lane is not valid UTF-8 (the byte 0xFF at character 0)"),
    ([(b"t", b"ping"), (b"id", b"U-2"), (b"lane", b"1\xed\xa0\x80")], "U-2", "lane is not valid UTF-8 (the byte 0xED at character 1)"),
    ([(b"t", b"ping"), (b"id", b"U-\xc3")], None, "id is not valid UTF-8"),
    ([(b"t", b"pi\x80ng"), (b"id", b"U-4")], "U-4", "t is not valid UTF-8"),
    ([(b"t", b"ping"), (b"id", b"U-5"), (b"l\xffx", b"1")], "U-5", "a key of the request is not valid UTF-8"),
])
async def test_invalid_utf8_in_a_well_framed_map_is_acked_and_refused_by_name(
        line, autojump_clock, pairs, re_, words):
    terminal, core, metric = line
    await terminal.send(raw_frame(msgpack_map(pairs)))
    assert await terminal.byte() == ACK
    _, answer = await terminal.frame()
    await terminal.send(bytes([ACK]))
    assert answer["ok"] is False and answer["err"] == "BAD_REQUEST" and answer["re"] == re_
    assert words in answer["msg"]
    assert core.requests == []
    # The line goes on as before.
    await terminal.send(build_frame({"t": "ping", "id": "after"}))
    assert await terminal.byte() == ACK
    assert (await terminal.frame())[1]["re"] == "after"


async def test_invalid_utf8_deep_inside_a_sale_is_named_by_its_path(line, autojump_clock):
    terminal, core, metric = line
    good = msgpack.packb({"t": "sale", "id": "U-9", "lines": [{"code": "SKU-1", "qty": 1},
                                                               {"code": "@@@", "qty": 1}]})
    bad = good.replace(b"@@@", b"\xc0\xaf@")
    await terminal.send(raw_frame(bad))
    assert await terminal.byte() == ACK
    _, answer = await terminal.frame()
    assert answer["re"] == "U-9" and answer["err"] == "BAD_REQUEST"
    assert answer["msg"] == "lines[1].code is not valid UTF-8 (the byte 0xC0 at character 0)"


@pytest.mark.parametrize("rid, words", [("L1\x00", "U+0000"), ("L1\u202e", "U+202E"), ("\x1b[2J", "U+001B")])
async def test_an_id_with_a_control_character_is_refused_by_the_plugin(line, autojump_clock, rid, words):
    terminal, core, metric = line
    await terminal.send(build_frame({"t": "ping", "id": rid}))
    assert await terminal.byte() == ACK
    _, answer = await terminal.frame()
    assert answer["err"] == "BAD_REQUEST" and words in answer["msg"] and "id" in answer["msg"]
    assert core.requests == []


async def test_an_unknown_type_of_16_kib_is_refused_with_its_start_only(line, autojump_clock):
    terminal, core, metric = line
    body = {"t": "x" * 16000, "id": "Y-1"}
    await terminal.send(build_frame(body))
    assert await terminal.byte() == ACK
    _, answer = await terminal.frame()
    assert answer["re"] == "Y-1" and answer["err"] == "BAD_REQUEST" and len(answer["msg"]) < 200


async def test_ten_thousand_bad_frames_log_a_few_lines_and_count_the_rest(nursery, autojump_clock, caplog):
    caplog.set_level(logging.INFO, logger="gateway.ecr")
    terminal, link, metric = start_link(nursery, Core())
    bad = build_frame({"t": "ping", "id": "B"})[:-1] + b"\x04"  # no ETX
    for _ in range(10):
        await terminal.send(bad * 1000)
        for _ in range(1000):
            assert await terminal.byte() == NAK
    assert metric("gateway_ecr_rejects_total", reason="etx") == 10_000
    lines = [r for r in caplog.records if r.name == "gateway.ecr"]
    assert [r.getMessage() for r in lines] == ["ecr lane1: frame discarded (etx)"]
    assert metric("gateway_ecr_log_lines_suppressed_total") == 9_999
    # A minute after the first line the summary comes out by itself, counting them all.
    await trio.sleep(61)
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.ecr"]
    assert len(lines) == 2 and lines[1].startswith("ecr lane1: frame discarded (etx) (repeated 9,999 times since ")
