"""An ECR/1 terminal on a real pseudo-terminal, wired to a running core through the ecr_serial
plugin: the `rig` fixture (registered by conftest.py) for the tests that speak ECR/1 end to end.

Tests that use it run on trio's `mock_clock` (asked for by each test: pytest-trio takes the clock
from the test's own arguments), which stands still: the gateway's ACK waits, resends and
partial-frame timeouts happen only when a test moves the clock (`mock_clock.jump`), never because
a loaded machine was slow. The terminal's own waits are generous, so they only ever detect a
failure. Waiting for the gateway is waiting for what it reports (its metrics), polled.
"""
from __future__ import annotations

import functools
import time

import pytest
import trio
from prometheus_client import CollectorRegistry

from core_ext._store import lot_key
from device_plugins import ecr_serial

from .ecr_terminal import Cable, Terminal


# Only a detector of a failure: nothing that works takes a hundredth of it.
WAIT_S = 60.0


async def wait_until(predicate, what: str) -> None:
    """Poll `predicate` until true, sleeping in a thread (trio's clock may stand still)."""
    until = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < until, f"still waiting for {what}"
        await trio.to_thread.run_sync(time.sleep, 0.002)


async def jump_until(clock, predicate, what: str, step: float = 5.0) -> None:
    """Move the mock clock `step` at a time (waking a task asleep in a backoff) until `predicate`."""
    until = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < until, f"still waiting for {what}"
        clock.jump(step)
        await trio.to_thread.run_sync(time.sleep, 0.002)


class Rig:
    def __init__(self, core, cable, terminal, registry):
        self.core = core
        self.cable = cable
        self.terminal = terminal
        self.registry = registry

    async def request(self, body, **kwargs):
        call = functools.partial(self.terminal.request, body, **kwargs)
        return await trio.to_thread.run_sync(call)

    async def run(self, fn, *args, **kwargs):
        """Run a blocking terminal-side step (pyserial) in a thread."""
        return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    def metric(self, name, **labels):
        return self.registry.get_sample_value(name, {"device": "lane1", **labels}) or 0.0

    async def wait_metric(self, name, value, **labels):
        await wait_until(lambda: self.metric(name, **labels) == value, f"{name} {labels} == {value}")

    async def wait_read(self) -> None:
        """Until the gateway has read every byte the terminal wrote (so the clock may move)."""
        await self.wait_metric("gateway_ecr_received_bytes_total", self.terminal.written)

    def lot_qty(self, sku, lot):
        with self.core.store.read() as tx:
            row = tx.get("lots", lot_key(sku, lot))
        return row["qty"] if row else 0

    def events_with_id(self, doc_id):
        with self.core.store.read() as tx:
            return [e for e in tx.events() if e.get("id") == doc_id]


@pytest.fixture
async def rig(core, tmp_path, nursery):
    cable = Cable(str(tmp_path / "ttyECR0"))
    await cable.plug(nursery)
    registry = CollectorRegistry()
    device = {"name": "lane1", "kind": "ecr_serial", "port": cable.path, "baudrate": 115200}
    await nursery.start(ecr_serial.serve, device, core.submit, ecr_serial.Metrics(registry))
    terminal = await trio.to_thread.run_sync(
        functools.partial(Terminal, cable.terminal_path, ack_timeout=WAIT_S, response_timeout=WAIT_S))
    rig = Rig(core, cable, terminal, registry)
    await rig.wait_metric("gateway_ecr_connected", 1)
    yield rig
    terminal.close()
    await cable.aclose()
