"""An ECR/1 terminal on a real pseudo-terminal, wired to a running core through the ecr_serial
plugin: the `rig` fixture (registered by conftest.py) for the tests that speak ECR/1 end to end."""
from __future__ import annotations

import functools

import pytest
import trio
from prometheus_client import CollectorRegistry

from core_ext._store import lot_key
from device_plugins import ecr_serial

from .ecr_terminal import Cable, Terminal


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
        with trio.fail_after(10):
            while self.metric(name, **labels) != value:
                await trio.sleep(0.01)

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
    terminal = await trio.to_thread.run_sync(Terminal, cable.terminal_path)
    rig = Rig(core, cable, terminal, registry)
    await rig.wait_metric("gateway_ecr_connected", 1)
    yield rig
    terminal.close()
    await cable.aclose()
