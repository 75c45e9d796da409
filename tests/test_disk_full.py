"""Disk full: new business is refused with UNAVAILABLE, nothing acknowledged is lost, and the
service comes back by itself once the ERP's acknowledgement lets pruning free room.

The quick case fills a small LMDB map; the soak case fills a small tmpfs (root only) under a real
`gateway run`, which must skip where mounting is not permitted."""
from __future__ import annotations

import contextlib
import os
import subprocess

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core_ext import Request, Store
from core_ext._verify import verify
from gateway._app_core import build_core
from upstream import SealSignal, Settings

from ._data import STORE, seed
from ._fuzz import assert_refusal, ledger_state
from ._upstream import handlers_for

MAP = 1 << 20  # 1 MiB: a few hundred sales with their batches


def sale(sale_id: str) -> dict:
    return {"id": sale_id, "lines": [{"code": "SKU-4", "qty": 1}], "payments": [{"method": "cash", "cents": 350}]}


class Gateway:
    """A core with the upstream handlers over a store of `MAP` bytes, started and stopped at will."""

    def __init__(self, path: str, clock):
        self.path = path
        self.clock = clock
        self.keys = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        self.settings = Settings(token="t", batch_max_events=8, batch_max_age_s=5.0, retention_acked_s=0)

    @contextlib.asynccontextmanager
    async def running(self):
        store = Store(self.path, map_size=MAP, min_free_bytes=128 << 10)
        try:
            core = build_core(store, STORE, clock=self.clock,
                              extra_handlers=handlers_for(*self.keys, self.settings, SealSignal()))
            async with trio.open_nursery() as nursery:
                await nursery.start(core.run)
                yield core
                nursery.cancel_scope.cancel()
        finally:
            store.close()


async def submit(core, kind: str, body: dict, source: str = "lane1"):
    return (await core.submit(Request(kind, body, source=source, channel="ecr"))).body


async def sell_until_refused(core, acked: list[str], limit: int = 5000) -> dict:
    for i in range(len(acked), limit):
        answer = await submit(core, "sale", sale(f"s{i}"))
        if not answer["ok"]:
            return answer
        acked.append(f"s{i}")
        if i % 8 == 7:
            assert (await submit(core, "seal", {"flush": True}, "sealer"))["ok"]
    raise AssertionError(f"{limit} sales fitted in a map of {MAP} bytes: the test filled nothing")


async def test_a_full_store_refuses_new_business_keeps_every_ack_and_recovers_after_pruning(tmp_path, clock):
    gw = Gateway(str(tmp_path / "data"), clock)
    seed_store = Store(gw.path, map_size=MAP)
    seed(seed_store)
    seed_store.close()
    acked: list[str] = []
    async with gw.running() as core:
        refused = await sell_until_refused(core, acked)
        assert_refusal(refused)
        assert refused["err"] == "UNAVAILABLE"
        # Refused again and again, changing nothing, while the room is not there.
        before = ledger_state(core.store)
        for i in range(20):
            answer = await submit(core, "sale", sale(f"late-{i}"))
            assert answer["err"] == "UNAVAILABLE"
        assert ledger_state(core.store) == before
        # Queries still answer: the store is full, not down.
        assert (await submit(core, "stock", {"id": "q", "code": "SKU-4"}))["ok"]
    # After a restart, every acknowledged sale is there, once.
    async with gw.running() as core:
        with core.store.read() as tx:
            ids = [e["id"] for e in tx.events() if e["type"] == "sale"]
        assert sorted(ids) == sorted(f"lane1:{s}" for s in acked)
        assert verify(core.store) == []
        # The ERP takes the batches and acknowledges them; pruning frees their pages.
        last = (await submit(core, "seal", {"flush": True}, "sealer"))["last_seq"]
        assert (await submit(core, "ack", {"through": last}, "erp"))["ok"]
        pruned = (await submit(core, "prune", {}, "sealer"))["pruned"]
        assert pruned > 0
        # Service is back by itself: the next sale goes through.
        answer = await submit(core, "sale", sale("after-prune"))
        assert answer["ok"], answer
    async with gw.running() as core:
        assert verify(core.store) == []
        with core.store.read() as tx:
            assert sum(1 for e in tx.events() if e["type"] == "sale") == len(acked) + 1


async def test_a_store_full_inside_a_group_rolls_the_group_back_whole(tmp_path, clock):
    # No early refusal: the map itself runs out mid-write (MapFullError); nothing half-applied.
    store = Store(str(tmp_path / "data"), map_size=MAP, min_free_bytes=0)
    try:
        seed(store)
        core = build_core(store, STORE, clock=clock)
        async with trio.open_nursery() as nursery:
            await nursery.start(core.run)
            acked, refusals = [], 0
            for i in range(20000):
                body = {**sale(f"m{i}"), "note": "x" * 2000}  # a big remembered body fills it fast
                before = ledger_state(store)
                answer = await submit(core, "sale", body)
                if answer["ok"]:
                    acked.append(f"lane1:m{i}")
                    continue
                # Refused: whole, with the code to retry later, and nothing of it stayed.
                assert answer["err"] == "UNAVAILABLE", answer
                assert ledger_state(store) == before
                refusals += 1
                if refusals == 30:
                    break
            assert refusals == 30, "the map never filled"
            nursery.cancel_scope.cancel()
        with store.read() as tx:
            assert [e["id"] for e in tx.events() if e["type"] == "sale"] == acked
        assert verify(store) == []
    finally:
        store.close()


# --- a real gateway on a small tmpfs ------------------------------------------------------------

@contextlib.contextmanager
def small_tmpfs(path, size: str):
    path.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=10)


@pytest.mark.soak
def test_a_real_gateway_on_a_full_filesystem_refuses_sales_and_keeps_every_ack(tmp_path, processes):
    from .test_gateway_process import call, free_ports, stop, wait_ready
    from .test_gateway_e2e import ERP_TOKEN, RECEIPTS, TILL_TOKEN, make_keys, signed, write_config
    from ._data import CATALOG

    _store_key, erp_key = make_keys(tmp_path)
    pos, up, metrics = free_ports(3)
    config = write_config(tmp_path, pos=f"127.0.0.1:{pos}", upstream=f"127.0.0.1:{up}",
                          metrics=f"127.0.0.1:{metrics}")
    with small_tmpfs(tmp_path / "data", "24m"):
        gw = processes("--config", config)
        wait_ready(gw, metrics)
        assert call(up, "PUT", "/upstream/v1/master/catalog", signed("catalog", 1, CATALOG, erp_key),
                    token=ERP_TOKEN)[0] == 200
        assert call(up, "POST", "/upstream/v1/movements", signed("movements", 1, {"movements": RECEIPTS}, erp_key),
                    token=ERP_TOKEN)[0] == 200
        # Ballast takes the filesystem down to just above the gateway's floor (16 MiB free).
        ballast = tmp_path / "data" / "ballast"
        free = os.statvfs(ballast.parent).f_bavail * os.statvfs(ballast.parent).f_frsize
        ballast.write_bytes(b"\0" * max(0, free - (17 << 20)))
        acked, refused = [], None
        for i in range(20000):
            body = {**sale(f"F{i}"), "note": "z" * 3000}
            status, _h, answer = call(pos, "POST", "/pos/v1/sales", body, token=TILL_TOKEN)
            if status == 201:
                acked.append(f"F{i}")
                continue
            refused = (status, answer)
            break
        assert refused is not None and refused[0] == 503 and refused[1]["err"] == "UNAVAILABLE", refused
        assert acked, "not one sale fitted: the ballast left too little"
        assert stop(gw) == 0, gw.output()
        # Room comes back (the ballast goes): a restarted gateway has every acknowledged sale and sells.
        ballast.unlink()
        again = processes("--config", config)
        wait_ready(again, metrics)
        for sid in acked:
            status, _h, answer = call(pos, "POST", "/pos/v1/sales", {**sale(sid), "note": "z" * 3000},
                                      token=TILL_TOKEN)
            assert status == 200, (sid, status, answer)  # already committed: the first answer again
        status, _h, answer = call(pos, "POST", "/pos/v1/sales", sale("after"), token=TILL_TOKEN)
        assert status == 201, answer
        assert stop(again) == 0, again.output()


from .test_gateway_process import processes  # noqa: E402,F401  (the fixture, for the soak case)


def test_nearly_full_answers_as_the_exact_count_would_around_freed_pages(tmp_path):
    # Pages freed by deletes lie below LMDB's high-water mark: the quick bound counts them as used,
    # so between that bound and the exact room left only the exact count may answer.
    store = Store(str(tmp_path / "data"), map_size=64 << 20)
    with store.begin(write=True) as tx:
        for i in range(2000):
            tx.put("batches", i.to_bytes(8, "big"), b"x" * 4000)
    with store.begin(write=True) as tx:
        tx.clear("batches")
    exact = store.space_left()
    bound = min(store.map_size - (store.env.info()["last_pgno"] + 1) * store.env.stat()["psize"], exact)
    assert bound < exact - (4 << 20), "the deletes left freed pages under the high-water mark"
    for limit in (bound - 1, bound + 1, (bound + exact) // 2, exact, exact + 1, exact + (1 << 20)):
        store.min_free_bytes = limit
        assert store.nearly_full() == (store.space_left() < limit), limit
    store.close()
