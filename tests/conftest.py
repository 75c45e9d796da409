"""Shared fixtures: a real LMDB store in a temp dir, seeded, and a running core loop over it."""
from __future__ import annotations

import pytest

from core_ext import Request, Store
from gateway._app_core import build_core

from ._data import NOW, STORE, seed


class Clock:
    """A settable wall clock for the core loop (what `time.time` would say)."""

    def __init__(self, t: float = NOW):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "data"))
    yield s
    s.close()


@pytest.fixture
def seeded_store(store):
    seed(store)
    return store


class RunningCore:
    """A core loop running in the test's nursery; `.submit`, `.request`, `.store`."""

    def __init__(self, loop, store):
        self.loop = loop
        self.store = store
        self.submit = loop.submit
        self.wait_commit = loop.wait_commit

    async def request(self, kind: str, body: dict, *, source: str = "lane1", channel: str = "ecr"):
        return await self.loop.submit(Request(kind, body, source=source, channel=channel))


@pytest.fixture
def make_core(nursery, clock):
    """`await make_core(store, extra_handlers=..., registry=...)` starts a core loop over `store`."""

    async def start(store, **kwargs):
        kwargs.setdefault("clock", clock)
        loop = build_core(store, kwargs.pop("settings", STORE), **kwargs)
        await nursery.start(loop.run)
        return RunningCore(loop, store)

    return start


@pytest.fixture
async def core(make_core, seeded_store):
    return await make_core(seeded_store)


# The upstream fixtures (keys made here, a core with the upstream handlers, UP/1 on loopback).
from ._upstream import erp_key, served, store_key, upstream, upstream_settings  # noqa: E402,F401
# An ECR/1 terminal on a real pty, wired to the core through the ecr_serial plugin.
from ._ecr_rig import rig  # noqa: E402,F401
# The folder a csv_drop device watches.
from ._csv import drop_dir  # noqa: E402,F401


def pytest_sessionfinish(session, exitstatus):
    """Under `make soak`, leave what the reliability tests measured for the report."""
    import os

    from . import _records

    path = os.environ.get(_records.ENV)
    if path:
        _records.write(path)
