"""Sealing inside the single writer: batch bodies, the chain across restarts and kills, the timer."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import trio

from core_ext import Request, Store, _master, ledger
from upstream import BacklogReader, SealSignal, Settings, read_backlog, run_sealer

from gateway._app_core import build_core

from ._data import NOW, STORE, seed
from ._upstream import Upstream, append_sales, handlers_for
from .conftest import RunningCore
from .erp_test_client import ChainChecker, body_of


def balances_at(events, last_event: int) -> dict:
    lots, _skus = ledger.replay(e for e in events if e["seq"] <= last_event)
    return lots


# --- bodies ----------------------------------------------------------------------------------

async def test_batches_cover_every_event_once_with_stock_as_of_their_last_event(upstream):
    for i in range(6):
        await upstream.sale(f"S{i}")
    await upstream.sale("S-strips", sku="SKU-1", qty=2, unit=1990)
    answer = await upstream.seal(flush=False)
    # 6 opening receipts + 7 sales (each sale may raise alert events too): full batches of 4 only.
    last = upstream.events()[-1]["seq"]
    assert answer["sealed"] == last // 4
    envs = upstream.envelopes()
    bodies = ChainChecker(upstream.store_key.public_key(), store="S001").accept_all(envs)
    events = upstream.events()
    for env, body in zip(envs, bodies):
        assert [d["seq"] for d in body["docs"]] == list(range(env["first_event"], env["last_event"] + 1))
        truth = balances_at(events, env["last_event"])
        touched = {}
        for e in events[env["first_event"] - 1:env["last_event"]]:
            for sku, lot, delta, _exp, _ser in e["moves"]:
                touched[(sku, lot)] = touched.get((sku, lot), 0) + delta
        assert [(r[0], r[1]) for r in body["stock"]] == list(touched)
        for sku, lot, net, after in body["stock"]:
            assert net == touched[(sku, lot)]
            assert after == truth.get((sku, lot), 0), (env["seq"], sku, lot)
    sale = next(d for b in bodies for d in b["docs"] if d["type"] == "sale")
    assert sale["id"].startswith("lane1:S") and sale["lines"][0]["sku"] == "SKU-2"
    assert list(sale)[:4] == ["seq", "type", "id", "ts_ms"] and "store" not in sale
    # The tail is sealed by a flush.
    assert (await upstream.seal())["last_event"] == last
    assert ChainChecker(upstream.store_key.public_key()).accept_all(upstream.envelopes())[-1]["docs"][-1]["seq"] == last


async def test_open_alerts_travel_in_every_batch(upstream):
    # SKU-1 has a reorder point of 5 with 35 on hand; selling 31 leaves 4 and raises low_stock.
    await upstream.sale("big", sku="SKU-1", qty=31, unit=1990)
    await upstream.seal()
    body = body_of(upstream.envelopes()[-1])
    with upstream.store.read() as tx:
        table = [a for _k, a in tx.items("alerts")]
    assert body["alerts"] == table
    assert any(a["kind"] == "low_stock" and a["sku"] == "SKU-1" for a in body["alerts"])


async def test_nothing_waiting_seals_nothing(upstream):
    await upstream.seal()
    before = upstream.envelopes()
    answer = await upstream.seal()
    assert answer["sealed"] == 0 and upstream.envelopes() == before


async def test_policy_overrides_the_batch_size(upstream):
    with upstream.store.begin(write=True) as tx:
        _master.apply(tx, "policy", 1, {"batch_max_events": 2})
    await upstream.seal(flush=False)
    assert {e["last_event"] - e["first_event"] + 1 for e in upstream.envelopes()} == {2}


async def test_the_backlog_reader_follows_the_head_as_batches_are_sealed(upstream, clock):
    """The timer's reader remembers the oldest unsealed event's time per head: after a seal it
    names the new oldest event, exactly as a fresh read does."""
    reader = BacklogReader(upstream.store, upstream.settings)
    await upstream.seal()
    assert reader().events == 0 and reader().oldest_ts_ms is None
    await upstream.sale("b1")
    first = reader()
    clock.t += 10
    await upstream.sale("b2")
    assert (first.events, reader().events) == (1, 2)
    assert reader().oldest_ts_ms == first.oldest_ts_ms == int(NOW * 1000)
    await upstream.seal()
    clock.t += 10
    await upstream.sale("b3")
    assert reader() == read_backlog(upstream.store, upstream.settings)
    assert reader().events == 1 and reader().oldest_ts_ms == int(NOW * 1000) + 20_000


# --- restarts and kills ----------------------------------------------------------------------

async def test_chain_continues_across_reopening_the_store(tmp_path, store_key, erp_key, clock):
    path = str(tmp_path / "data")
    store = Store(path)
    seed(store)
    settings = Settings(batch_max_events=3)
    ids = []
    for life in ("A", "B"):
        async with trio.open_nursery() as nursery:
            loop = build_core(store, STORE, clock=clock,
                              extra_handlers=handlers_for(store_key, erp_key, settings, None))
            await nursery.start(loop.run)
            up = Upstream(RunningCore(loop, store), store_key, erp_key, settings, None)
            await up.sale(f"{life}1")
            await up.sale(f"{life}2")
            await up.seal()
            bodies = ChainChecker(store_key.public_key(), store="S001").accept_all(up.envelopes())
            ids.append([d["id"] for b in bodies for d in b["docs"] if d["type"] == "sale"])
            nursery.cancel_scope.cancel()
        store.close()
        store = Store(path)
    assert ids == [["lane1:A1", "lane1:A2"], ["lane1:A1", "lane1:A2", "lane1:B1", "lane1:B2"]]
    store.close()


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from types import SimpleNamespace
    from cryptography.hazmat.primitives import serialization
    from core_ext import Request, Store, ledger
    from upstream import Settings, make_handlers

    path, key_path, count, when = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    key = serialization.load_pem_private_key(open(key_path, "rb").read(), None)
    store = Store(path)
    handlers = make_handlers(store_id="S001", signing_key=key, erp_public_key=key.public_key(),
                             config=Settings(batch_max_events=2))
    tx = store.begin(write=True)
    for i in range(count):
        moves = [["SKU-4", None, -1, None, []]]
        ledger.apply_moves(tx, moves)
        tx.append_event({"type": "sale", "id": f"k:{os.getpid()}:{i}", "moves": moves})
    ctx = SimpleNamespace(now_ms=1_800_000_000_000, settings=None, after_commit=lambda cb: None)
    answer = handlers["seal"](tx, Request("seal", {"flush": True}), ctx)
    if when == "before-commit":
        os.kill(os.getpid(), signal.SIGKILL)
    tx.commit()
    print(answer["sealed"], flush=True)
    # Sealed and durable, but the caller never hears of it.
    os.kill(os.getpid(), signal.SIGKILL)
""")


def _kill_run(tmp_path, key_path, count: int, when: str) -> subprocess.CompletedProcess:
    script = tmp_path / "seal_and_die.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.run([sys.executable, str(script), str(tmp_path / "data"), key_path, str(count), when],
                          capture_output=True, text=True, env=env, timeout=60)


async def test_sigkill_between_sealing_and_answering_keeps_the_chain(tmp_path, store_key, erp_key, make_core):
    from cryptography.hazmat.primitives import serialization
    key_path = tmp_path / "store.pem"
    key_path.write_bytes(store_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    store = Store(str(tmp_path / "data"))
    seed(store)
    store.close()
    done = _kill_run(tmp_path, str(key_path), 5, "after-commit")
    assert done.returncode == -signal.SIGKILL and done.stdout.strip() == "6", done.stderr  # 6 seeds + 5 = 11 -> 6 batches
    lost = _kill_run(tmp_path, str(key_path), 3, "before-commit")
    assert lost.returncode == -signal.SIGKILL and lost.stdout == "", lost.stderr

    store = Store(str(tmp_path / "data"))
    settings = Settings(batch_max_events=2)
    core = await make_core(store, extra_handlers=handlers_for(store_key, erp_key, settings, None))
    up = Upstream(core, store_key, erp_key, settings, None)
    before = up.envelopes()
    assert [e["seq"] for e in before] == [1, 2, 3, 4, 5, 6] and before[-1]["last_event"] == 11
    assert up.events()[-1]["seq"] == 11  # the killed transaction left nothing behind
    await up.sale("after-kill")
    await up.seal()
    bodies = ChainChecker(store_key.public_key(), store="S001").accept_all(up.envelopes())
    assert bodies[-1]["docs"][-1]["id"] == "lane1:after-kill"
    store.close()


# --- the backlog -----------------------------------------------------------------------------

async def test_a_backlog_of_20000_events_is_sealed_in_order(make_core, seeded_store, store_key, erp_key):
    append_sales(seeded_store, 20_000)
    settings = Settings(batch_max_events=500, seal_max_events=8000, scan_max_events=8000)
    core = await make_core(seeded_store, extra_handlers=handlers_for(store_key, erp_key, settings, None))
    up = Upstream(core, store_key, erp_key, settings, None)
    answers = []
    while not answers or answers[-1]["last_event"] < 20_006:
        answers.append(await up.seal())
    # Nothing sealed yet: the balances as of the head are those of an empty store, nothing to read
    # first. A request seals at most 8000 events (the last with the partial tail).
    assert [a["sealed"] for a in answers] == [16, 16, 9]
    envs = up.envelopes()
    bodies = ChainChecker(store_key.public_key(), store="S001").accept_all(envs)
    assert envs[-1]["last_event"] == 20_006
    events = up.events()
    for env, body in zip(envs[::7], bodies[::7]):
        [row] = [r for r in body["stock"] if r[0] == "SKU-4"]
        assert row[3] == balances_at(events, env["last_event"])[("SKU-4", None)]


# --- the timer -------------------------------------------------------------------------------

@pytest.fixture
def trio_time_clock(mock_clock):
    # The core loop commits in a worker thread; a clock that jumps while a commit is under way would
    # make "before the deadline" meaningless, so time only jumps once everything has been idle a while.
    mock_clock.autojump_threshold = 0.2
    return mock_clock


async def _timed_upstream(mock_clock, make_core, seeded_store, store_key, erp_key, settings, nursery):
    def wall() -> float:
        # The core loop asks from its worker thread, where trio.current_time() is not available.
        return NOW + mock_clock.current_time()

    sig = SealSignal()
    core = await make_core(seeded_store, clock=wall, extra_handlers=handlers_for(store_key, erp_key, settings, sig))
    up = Upstream(core, store_key, erp_key, settings, sig)
    await nursery.start(lambda task_status: run_sealer(
        up.submit, lambda: read_backlog(seeded_store, settings), core.wait_commit,
        now_ms=lambda: int(wall() * 1000), task_status=task_status))
    return up


async def test_timer_seals_when_enough_events_wait(trio_time_clock, make_core, seeded_store, store_key, erp_key,
                                                   nursery):
    settings = Settings(batch_max_events=8, batch_max_age_s=3600)
    up = await _timed_upstream(trio_time_clock, make_core, seeded_store, store_key, erp_key, settings, nursery)
    start = trio.current_time()
    waiter = up.signal.waiter()
    await up.sale("x1")
    await up.sale("x2")  # 6 seeded + 2 sales = 8 events
    await waiter.wait()
    assert trio.current_time() - start < 3600
    [env] = up.envelopes()
    assert (env["first_event"], env["last_event"]) == (1, 8)


async def test_timer_seals_when_the_oldest_has_waited_long_enough(trio_time_clock, make_core, seeded_store,
                                                                  store_key, erp_key, nursery):
    settings = Settings(batch_max_events=100, batch_max_age_s=5.0)
    up = await _timed_upstream(trio_time_clock, make_core, seeded_store, store_key, erp_key, settings, nursery)
    await up.seal()  # the seeded events: the clock starts with the sale below
    waiter = up.signal.waiter()
    start = trio.current_time()
    await up.sale("lonely")
    await waiter.wait()
    assert 5.0 <= trio.current_time() - start < 6.0
    last = up.envelopes()[-1]
    sale = body_of(last)["docs"][-1]
    assert sale["id"] == "lane1:lonely" and last["created_ms"] - sale["ts_ms"] >= 5000


async def test_under_disk_pressure_the_timer_prunes_acknowledged_batches_early(upstream, nursery):
    for i in range(6):
        await upstream.sale(f"p{i}")
    await upstream.seal()
    total = len(upstream.envelopes())
    res = await upstream.submit(Request("ack", {"through": total - 1}, source="erp", channel="erp"))
    assert res.ok and res.body["acked"] == total - 1
    await nursery.start(lambda task_status: run_sealer(
        upstream.submit, lambda: read_backlog(upstream.store, upstream.settings), upstream.core.wait_commit,
        pressure=lambda: True, task_status=task_status))
    while [e["seq"] for e in upstream.envelopes()] != [total]:
        await upstream.core.wait_commit()
    # The one batch not acknowledged stays, whatever the disk says.
    with upstream.store.read() as tx:
        assert tx.meta("upstream.first_available") == total
