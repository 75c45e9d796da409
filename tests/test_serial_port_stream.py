"""The stream a serial port's descriptor is served through: it reads and writes before it yields,
is still a checkpoint, and closes the way a trio stream does."""
from __future__ import annotations

import os
import select
import tty

import pytest
import trio

from device_plugins._serial_port import PortStream, open_serial


class _StepEnds(trio.abc.Instrument):
    """What `probe()` says at the end of each step of one task (where it yields)."""

    def __init__(self, task, probe):
        self.task = task
        self.probe = probe
        self.seen: list = []

    def after_task_step(self, task):
        if task is self.task:
            self.seen.append(self.probe())


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


@pytest.fixture
def pipe():
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass  # closed by the stream under test


async def _steps_of(call, probe) -> list:
    steps = _StepEnds(trio.lowlevel.current_task(), probe)
    trio.lowlevel.add_instrument(steps)
    try:
        await call()
    finally:
        trio.lowlevel.remove_instrument(steps)
    return steps.seen


async def test_an_ack_is_written_before_the_writer_gives_its_turn_away(pipe):
    r, w = pipe
    stream = PortStream(w)
    # The step that called send_all ended with the byte already in the pipe: no other task (eight
    # other terminals' readers under a burst) ran between the answer being ready and its write.
    seen = await _steps_of(lambda: stream.send_all(b"\x06"), lambda: _readable(r))
    assert seen[0] is True
    assert os.read(r, 10) == b"\x06"
    await stream.aclose()


async def test_bytes_waiting_are_read_before_the_reader_gives_its_turn_away(pipe):
    r, w = pipe
    os.write(w, b"\x02frame\x03")
    stream = PortStream(r)
    got = []

    async def read():
        got.append(await stream.receive_some(64))

    seen = await _steps_of(read, lambda: _readable(r))
    assert seen[0] is False  # already taken out of the pipe when the reader first yielded
    assert got == [b"\x02frame\x03"]
    await stream.aclose()


async def test_send_and_receive_are_still_checkpoints(pipe):
    r, w = pipe
    reader, writer = PortStream(r), PortStream(w)
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await writer.send_all(b"x")
    assert not _readable(r)  # cancelled before the call: nothing written
    os.write(w, b"y")
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await reader.receive_some(1)
    assert _readable(r)  # nor read
    # And a call that did not block still yields once (after its system call).
    got = []

    async def read():
        got.append(await reader.receive_some(1))

    assert len(await _steps_of(read, lambda: None)) == 1
    assert got == [b"y"]
    assert len(await _steps_of(lambda: writer.send_all(b"z"), lambda: None)) == 1
    await reader.aclose()
    await writer.aclose()


async def test_a_reader_waiting_on_a_port_closed_under_it_sees_it_closed(pipe):
    r, _w = pipe
    stream = PortStream(r)
    failed = []

    async def read():
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive_some(1)
        failed.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        await stream.aclose()
    assert failed == [True]
    with pytest.raises(trio.ClosedResourceError):
        await stream.send_all(b"")
    await stream.aclose()  # twice is fine


async def test_a_write_bigger_than_the_pipe_takes_waits_for_room_and_arrives_whole(pipe):
    r, w = pipe
    stream = PortStream(w)
    data = bytes(range(256)) * 1024  # 256 KiB: more than a pipe buffers
    got = bytearray()

    async def drain():
        while len(got) < len(data):
            await trio.lowlevel.wait_readable(r)
            got.extend(os.read(r, 65536))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        await stream.send_all(data)
    assert bytes(got) == data
    await stream.aclose()


async def test_a_pty_port_is_served_through_it():
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        stream = await open_serial(os.ttyname(slave))
        assert isinstance(stream, PortStream)
        await stream.send_all(b"\x06")
        with trio.fail_after(5):
            while not _readable(master):
                await trio.sleep(0)
        assert os.read(master, 10) == b"\x06"
        await stream.aclose()
    finally:
        os.close(master)
        os.close(slave)
