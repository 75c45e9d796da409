"""Second-round attacks on the upstream: documents sent ahead across restarts, seal/ack/prune/long
poll racing a stream of sales, and a push_url server that fails in every way it can."""
from __future__ import annotations

import copy
import http.server
import threading
import time

import trio
from prometheus_client import CollectorRegistry

from core_ext import Request, Store
from gateway._app_core import build_core
from upstream import SealSignal, Settings, run_push, sign_document
from upstream._envelope import ZERO_DIGEST, decode_envelope, verify_envelope
from upstream._sealer import ACKED, FIRST_AVAILABLE, read_head

from ._data import CATALOG, NOW, STORE, seed
from ._upstream import Upstream, handlers_for, serve

NOW_MS = int(NOW * 1000)


def catalog(cents: int) -> dict:
    body = copy.deepcopy(CATALOG)
    body["items"][1]["unit_cents"] = cents
    return body


async def with_core(path, clock, store_key, erp_key, settings, fn):
    """Open the store at `path`, run a core over it, call `fn(core)`, stop and close: one gateway life."""
    store = Store(path)
    try:
        async with trio.open_nursery() as nursery:
            sig = SealSignal()
            loop = build_core(store, STORE, clock=clock,
                              extra_handlers=handlers_for(store_key, erp_key, settings, sig))
            await nursery.start(loop.run)
            result = await fn(loop, store)
            nursery.cancel_scope.cancel()
        return result
    finally:
        store.close()


def in_force(store) -> tuple[int, int, list[str]]:
    with store.read() as tx:
        ids = [e["id"] for e in tx.events() if str(e.get("id", "")).startswith("erp:catalog:")]
        return tx.get("master", "catalog")["version"], tx.get("catalog", "SKU-2")["unit_cents"], ids


async def test_documents_sent_ahead_survive_restarts_and_come_in_force_once(tmp_path, clock, store_key, erp_key):
    path = str(tmp_path / "data")
    store = Store(path)
    seed(store)
    store.close()
    settings = Settings(token="t")
    t2, t3 = NOW_MS + 3_600_000, NOW_MS + 7_200_000

    async def send(loop, store):
        for version, cents, at in ((2, 5990, t2), (3, 6990, t3)):
            doc = sign_document("catalog", version, catalog(cents), erp_key, issued_ms=NOW_MS, effective_ms=at)
            res = await loop.submit(Request("master", {"kind": "catalog", "doc": doc}, source="erp", channel="erp"))
            assert res.ok, res.body

    async def activate(loop, store):
        res = await loop.submit(Request("master_activate", {}))
        assert res.ok, res.body
        return res.body["activated"], in_force(store)

    await with_core(path, clock, store_key, erp_key, settings, send)
    # Restarted before either moment: nothing yet.
    assert await with_core(path, clock, store_key, erp_key, settings, activate) == ([], (1, 4990, []))
    clock.t = t2 / 1000
    expect2 = (2, 5990, ["erp:catalog:2"])
    assert await with_core(path, clock, store_key, erp_key, settings, activate) == ([["catalog", 2]], expect2)
    assert await with_core(path, clock, store_key, erp_key, settings, activate) == ([], expect2)
    # Down across the second moment: at restart the later one is in force, each recorded once.
    clock.t = t3 / 1000 + 60
    expect3 = (3, 6990, ["erp:catalog:2", "erp:catalog:3"])
    assert await with_core(path, clock, store_key, erp_key, settings, activate) == ([["catalog", 3]], expect3)
    assert await with_core(path, clock, store_key, erp_key, settings, activate) == ([], expect3)


async def test_both_documents_due_while_down_put_only_the_newest_in_force(tmp_path, clock, store_key, erp_key):
    path = str(tmp_path / "data")
    store = Store(path)
    seed(store)
    store.close()
    settings = Settings(token="t")

    async def send(loop, store):
        for version, cents, at in ((2, 5990, NOW_MS + 1000), (3, 6990, NOW_MS + 2000)):
            doc = sign_document("catalog", version, catalog(cents), erp_key, issued_ms=NOW_MS, effective_ms=at)
            assert (await loop.submit(Request("master", {"kind": "catalog", "doc": doc}, source="erp"))).ok

    async def activate(loop, store):
        await loop.submit(Request("master_activate", {}))
        return in_force(store)[:2]

    await with_core(path, clock, store_key, erp_key, settings, send)
    clock.t = NOW + 10
    assert await with_core(path, clock, store_key, erp_key, settings, activate) == (3, 6990)
    assert await with_core(path, clock, store_key, erp_key, settings, activate) == (3, 6990)


def check_chain(up) -> None:
    """Every batch still stored verifies and continues the one before; seqs have no gaps."""
    # One snapshot: a seal committing between two reads would look like a batch too many.
    with up.store.read() as tx:
        first, acked, head = tx.meta(FIRST_AVAILABLE, 1), tx.meta(ACKED, 0), read_head(tx).seq
        envs = [decode_envelope(bytes(v)) for _k, v in tx.txn.cursor(db=tx.db["batches"])]
    assert [e["seq"] for e in envs] == list(range(first, head + 1))
    assert first <= acked + 1  # nothing unacknowledged pruned
    prev = ZERO_DIGEST if first == 1 else envs[0]["prev"]
    expect_event = envs[0]["first_event"] if envs else None
    for env in envs:
        prev = verify_envelope(env, up.store_key.public_key(), prev, expect_first_event=expect_event)
        expect_event = env["last_event"] + 1


async def test_seal_ack_prune_and_long_polls_racing_sales_never_break_the_chain(
        make_core, seeded_store, store_key, erp_key, nursery):
    settings = Settings(token="t0ken", batch_max_events=3, batch_max_age_s=0.0, retention_acked_s=0.0)
    sig = SealSignal()
    core = await make_core(seeded_store, extra_handlers=handlers_for(store_key, erp_key, settings, sig))
    up = Upstream(core, store_key, erp_key, settings, sig)
    served = await serve(nursery, up)
    acked_seen: list[int] = []
    polls = []
    done = trio.Event()

    async def sales():
        for i in range(300):
            await up.sale(f"race{i}", sku="SKU-4", unit=350)
        done.set()

    async def sealer():
        while not done.is_set():
            await up.seal(flush=False)
            await trio.sleep(0)
        await up.seal()

    async def acker():
        while not done.is_set():
            with up.store.read() as tx:
                head = read_head(tx).seq
            res = await up.submit(Request("ack", {"through": max(0, head - 1)}, source="erp", channel="erp"))
            assert res.ok, res.body
            acked_seen.append(res.body["acked"])
            # An old ack arriving late must not move the mark back.
            res = await up.submit(Request("ack", {"through": max(0, head - 5)}, source="erp", channel="erp"))
            acked_seen.append(res.body["acked"])
            await trio.sleep(0.005)

    async def pruner():
        while not done.is_set():
            res = await up.submit(Request("prune", {}, source="timer"))
            assert res.ok, res.body
            check_chain(up)
            await trio.sleep(0.003)

    async def long_poll_and_leave():
        # A client that asks to wait 30 s and goes away after a moment, again and again.
        while not done.is_set():
            with trio.move_on_after(0.02):
                stream = await trio.open_tcp_stream("127.0.0.1", int(served.url.rsplit(":", 1)[1].rstrip("/")))
                async with stream:
                    await stream.send_all(b"GET /upstream/v1/batches?after=100000&wait=30 HTTP/1.1\r\n"
                                          b"Host: x\r\nAuthorization: Bearer t0ken\r\n\r\n")
                    polls.append(1)
                    await stream.receive_some(1)
            await trio.sleep(0)

    with trio.fail_after(25):
        async with trio.open_nursery() as race:
            for fn in (sales, sealer, acker, pruner, long_poll_and_leave):
                race.start_soon(fn)
    check_chain(up)
    assert acked_seen == sorted(acked_seen) and acked_seen[-1] > 0
    with up.store.read() as tx:
        assert read_head(tx).last_event == tx.last_seq()
        assert tx.meta(FIRST_AVAILABLE, 1) > 1  # the prunes did take batches away
    assert len(polls) > 3
    # The server still answers after every waiting client went away.
    status, _h, _answer = await served.call("GET", "/upstream/v1/status")
    assert status == 200


class FlakyErp(http.server.BaseHTTPRequestHandler):
    """Answers by a script: 500, a dropped connection, then 204 for the rest; records every POST."""

    script: list[str] = []
    seen: list[tuple[float, int]] = []

    def do_POST(self):
        from upstream import decode_envelope

        raw = self.rfile.read(int(self.headers["Content-Length"]))
        seq = decode_envelope(raw)["seq"]
        FlakyErp.seen.append((time.monotonic(), seq))
        what = FlakyErp.script.pop(0) if FlakyErp.script else "ok"
        if what == "500":
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif what == "close":
            self.close_connection = True
            self.connection.shutdown(2)
        else:
            self.send_response(204)
            self.end_headers()

    def log_message(self, *args):
        pass


async def test_push_to_a_failing_erp_keeps_order_caps_backoff_and_skips_nothing(upstream, nursery):
    FlakyErp.script = ["500", "500", "close", "500", "500", "500", "ok", "close"]
    FlakyErp.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FlakyErp)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = Settings(token="t", batch_max_events=2, push_url=f"http://127.0.0.1:{server.server_port}/in",
                            push_backoff_s=0.02, push_backoff_max_s=0.1)
        for i in range(8):
            await upstream.sale(f"p{i}", sku="SKU-4", unit=350)
        await upstream.seal()
        with upstream.store.read() as tx:
            head = read_head(tx).seq
        assert head >= 4
        await nursery.start(run_push, upstream.submit, upstream.store, settings, upstream.signal)
        with trio.fail_after(15):
            while True:
                with upstream.store.read() as tx:
                    if tx.meta(ACKED, 0) == head:
                        break
                await trio.sleep(0.01)
    finally:
        server.shutdown()
        server.server_close()
    seqs = [s for _t, s in FlakyErp.seen]
    assert seqs == sorted(seqs) and sorted(set(seqs)) == list(range(1, head + 1))
    gaps = [b[0] - a[0] for a, b in zip(FlakyErp.seen, FlakyErp.seen[1:]) if a[1] == b[1]]
    assert gaps and max(gaps) < 0.1 + 0.5  # the cap, plus a worker thread's start
