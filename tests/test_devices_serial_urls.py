"""Serial ports given as pyserial URLs, as the configuration allows: loop://, socket://, the rest."""
from __future__ import annotations

import logging

import pytest
import trio
from prometheus_client import CollectorRegistry

from device_plugins import ecr_serial, scanner_serial
from device_plugins._serial_port import SerialPortError, open_serial, port_problem, serve_port


async def test_loop_url_opens_and_gives_back_what_is_written():
    stream = await open_serial("loop://", baudrate=9600)
    try:
        await stream.send_all(b"\x02hello\x03")
        got = b""
        with trio.fail_after(5):
            while len(got) < 7:
                got += await stream.receive_some(3)
        assert got == b"\x02hello\x03"
    finally:
        await stream.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await stream.receive_some(1)


async def test_a_cancelled_read_of_a_url_port_loses_no_bytes():
    stream = await open_serial("loop://")
    try:
        got = b""
        for i in range(30):
            # Cancelled reads again and again, as the ECR/1 reader is at every deadline.
            with trio.move_on_after(0.001 * (i % 5)):
                got += await stream.receive_some(64)
            await stream.send_all(bytes([i]))
        with trio.fail_after(5):
            while len(got) < 30:
                got += await stream.receive_some(64)
        assert got == bytes(range(30))
    finally:
        await stream.aclose()


@pytest.mark.parametrize("port, words", [
    ("foo://x", "protocol 'foo' not known"),
    ("socket://nohost", "socket://host:port"),
    ("", "device path or a pyserial URL"),
])
def test_ports_that_can_never_open_are_named(port, words):
    assert words in port_problem(port)


@pytest.mark.parametrize("port", ["loop://", "socket://127.0.0.1:1", "rfc2217://127.0.0.1:1",
                                  "spy://loop://", "/dev/ttyUSB0"])
def test_ports_that_may_open_have_no_problem(port):
    assert port_problem(port) is None


async def test_an_unknown_url_is_refused_with_its_reason():
    with pytest.raises(SerialPortError, match="protocol 'foo' not known"):
        await open_serial("foo://x")


@pytest.mark.parametrize("plugin, gauge, extra", [
    (ecr_serial, "gateway_ecr_connected", {}),
    (scanner_serial, "gateway_scanner_connected", {"role": "receive"}),
])
async def test_a_device_on_loop_url_connects(nursery, plugin, gauge, extra):
    registry = CollectorRegistry()

    async def submit(request):
        raise AssertionError(f"nothing should reach the core, got {request}")

    device = {"name": "dev1", "kind": plugin.__name__.rsplit(".", 1)[1], "port": "loop://", **extra}
    await nursery.start(plugin.serve, device, submit, plugin.Metrics(registry))
    with trio.fail_after(5):
        while registry.get_sample_value(gauge, {"device": "dev1"}) != 1:
            await trio.sleep(0.01)


class _Gauge:
    def __init__(self):
        self.values = []

    def set(self, value):
        self.values.append(value)


async def test_serve_port_keeps_retrying_a_bad_url_without_failing(nursery, autojump_clock):
    gauge, links = _Gauge(), []

    async def run_link(stream):
        links.append(stream)

    await nursery.start(serve_port, {"name": "d", "port": "foo://x"}, run_link, gauge,
                        logging.getLogger("test"))
    await trio.sleep(60)
    assert links == [] and set(gauge.values) == {0}


async def test_a_port_missing_for_an_hour_logs_a_line_a_minute_at_most(nursery, autojump_clock, caplog):
    caplog.set_level(logging.INFO, logger="test.port")

    async def run_link(stream):
        pass

    await nursery.start(serve_port, {"name": "d", "port": "foo://x"}, run_link, _Gauge(),
                        logging.getLogger("test.port"))
    await trio.sleep(3600)  # 720 attempts at the 5 s backoff
    lines = [r.getMessage() for r in caplog.records if r.name == "test.port"]
    assert 1 < len(lines) <= 61 and all("cannot open the port" in line for line in lines)
    assert "repeated" in lines[-1]
