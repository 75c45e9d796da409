"""The chain's side of NATS/1: one consumer verifies every store's chain from the hub; documents are
signed and published from the command line."""
from __future__ import annotations

import json

import msgpack
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway._cli import main
from upstream import ZERO_DIGEST, digest, encode_envelope, seal_envelope
from upstream._keys import write_keypair
from upstream._nats_erp import (DUPLICATE, REJECTED, VERIFIED, ChainConsumer, ConsumeOptions, connect, consume,
                                ensure_streams)

from ._nats_rig import bridge, chain, hub  # noqa: F401


def chain_of(store: str, key, n: int) -> list[bytes]:
    prev, out, event = ZERO_DIGEST, [], 1
    for seq in range(1, n + 1):
        body = {"docs": [{"seq": event, "type": "sale", "id": f"{store}:{seq}", "ts_ms": seq}], "stock": [],
                "alerts": []}
        env = seal_envelope(store=store, seq=seq, prev=prev, created_ms=seq, first_event=event, last_event=event,
                            body=body, private_key=key)
        prev, event = digest(env), event + 1
        out.append(encode_envelope(env))
    return out


def test_the_consumer_verifies_each_chain_takes_repeats_and_rejects_a_forgery():
    keys = {s: Ed25519PrivateKey.generate() for s in ("S001", "S002")}
    consumer = ChainConsumer({s: k.public_key() for s, k in keys.items()})
    one, two = chain_of("S001", keys["S001"], 3), chain_of("S002", keys["S002"], 2)
    assert consumer.take("gw.batches.S001", one[0])[0] == VERIFIED
    assert consumer.take("gw.batches.S002", two[0])[0] == VERIFIED
    assert consumer.take("gw.batches.S001", one[0])[0] == DUPLICATE   # redelivered before its ack
    assert consumer.take("gw.batches.S001", one[2])[0] == REJECTED    # batch 2 missing
    assert consumer.take("gw.batches.S001", one[1])[0] == VERIFIED
    forged = chain_of("S002", Ed25519PrivateKey.generate(), 2)[1]
    assert consumer.take("gw.batches.S002", forged)[0] == REJECTED
    assert consumer.take("gw.batches.S003", one[2])[0] == REJECTED    # a store's batch on another's subject
    resumed = ChainConsumer({s: k.public_key() for s, k in keys.items()}, state=consumer.state())
    assert resumed.take("gw.batches.S001", one[2])[0] == VERIFIED
    assert consumer.failed and "store S001: 2 batches verified through 2" in consumer.report()[0]


def test_a_day_close_is_counted_and_handed_to_the_checker_with_its_range():
    key = Ed25519PrivateKey.generate()
    seen = []
    consumer = ChainConsumer({"S001": key.public_key()},
                             day_close_check=lambda store, close, docs: seen.append((store, close["day"],
                                                                                    [d["seq"] for d in docs])) or [])
    body = {"docs": [{"seq": 1, "type": "sale", "id": "a", "ts_ms": 1},
                     {"seq": 2, "type": "day_close", "id": "close:2026-12-01", "day": "2026-12-01", "from_seq": 1,
                      "to_seq": 2, "ts_ms": 2}], "stock": [], "alerts": []}
    env = seal_envelope(store="S001", seq=1, prev=ZERO_DIGEST, created_ms=1, first_event=1, last_event=2,
                        body=body, private_key=key)
    assert consumer.take("gw.batches.S001", encode_envelope(env))[0] == VERIFIED
    assert seen == [("S001", "2026-12-01", [1, 2])]
    assert consumer.summary("S001").day_closes == 1


async def test_erp_consume_and_publish_master_from_the_command_line(tmp_path, chain, hub, capsys):
    keys_dir = tmp_path / "stores"
    stores = {}
    keys_dir.mkdir()
    for store in ("S001", "S002"):
        stores[store] = write_keypair(str(tmp_path / f"{store}.pem"), str(keys_dir / f"{store}.pub.pem"))

    async def publish_all():
        js = chain.nc.jetstream()
        for store, key in stores.items():
            previous = 0
            for n, raw in enumerate(chain_of(store, key, 3), 1):
                ack = await js.publish(f"gw.batches.{store}", raw, headers={
                    "Nats-Msg-Id": f"{store}:{n}", "Nats-Expected-Last-Subject-Sequence": str(previous)})
                previous = ack.seq
    await chain.bridge.run(publish_all)
    state = tmp_path / "erp-state.json"
    args = ["erp", "consume", "--nats", hub.url, "--keys", str(keys_dir), "--state", str(state), "--idle", "0.5"]
    assert await trio.to_thread.run_sync(main, args) == 0
    out = capsys.readouterr().out
    assert "store S001: 3 batches verified through 3" in out and "store S002: 3 batches verified through 3" in out
    assert json.loads(state.read_text())["S002"]["seq"] == 3
    # Run again: everything was acknowledged, nothing comes twice.
    assert await trio.to_thread.run_sync(main, args) == 0
    assert "verified" not in capsys.readouterr().out

    erp = tmp_path / "erp"
    erp.mkdir()
    write_keypair(str(erp / "erp.pem"), str(erp / "erp.pub.pem"))
    (tmp_path / "catalog.json").write_text(json.dumps({"items": []}))
    publish = ["erp", "publish-master", "catalog", str(tmp_path / "catalog.json"), "--key", str(erp / "erp.pem"),
               "--nats", hub.url, "--store", "S002", "--version", "4"]
    assert await trio.to_thread.run_sync(main, publish) == 0
    assert "catalog version 4 published for store S002" in capsys.readouterr().out

    async def last():
        return await chain.nc.jetstream().get_last_msg("GW_DOWN", "gw.master.catalog.S002")
    doc = msgpack.unpackb((await chain.bridge.run(last)).data)
    assert doc["kind"] == "catalog" and doc["version"] == 4


async def test_a_fetch_whose_wait_runs_out_in_any_of_its_steps_is_an_idle_page(bridge, hub):
    # A wait of a fraction of a millisecond runs out at every step of nats-py's fetch in turn: before
    # the server's first answer, and between its "no messages" and the lingering request (where
    # nats-py raises asyncio's TimeoutError, not its own). Each is an idle page, never an error.
    key = Ed25519PrivateKey.generate()

    async def consume_idle_stream():
        nc = await connect([hub.url])
        try:
            await ensure_streams(nc.jetstream(), "gw")
            for _ in range(40):
                consumer = ChainConsumer({"S001": key.public_key()})
                await consume(nc, consumer, ConsumeOptions(fetch_wait_s=0.0005, idle_s=0.01))
                assert consumer.report() == [] and not consumer.failed
        finally:
            await nc.close()
    await bridge.run(consume_idle_stream)
