"""The reference ERP client, as `gateway erp ...` run against a real gateway on loopback."""
from __future__ import annotations

import json

import msgpack
import pytest
import trio
from cryptography.hazmat.primitives import serialization

from core_ext import u64
from gateway._cli import main
from upstream import decode_envelope, encode_envelope, load_private_key, write_keypair

from ._upstream import TOKEN, sales_and_seal
from ._data import stored_on_hand


@pytest.fixture
def key_files(tmp_path, upstream):
    """The store's public key and the ERP's private key as files, as each side would hold them."""
    store_pub = tmp_path / "store.pub.pem"
    store_pub.write_bytes(upstream.store_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    erp_pem = tmp_path / "erp.pem"
    erp_pem.write_bytes(upstream.erp_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(store_pub), str(erp_pem)


async def gateway(*argv) -> int:
    return await trio.to_thread.run_sync(main, list(argv))


def conn(served):
    return ["--url", served.url, "--token", TOKEN]


async def test_pull_verifies_summarizes_and_acknowledges(served, key_files, capsys):
    up = served.up
    await sales_and_seal(up, 5)
    total = len(up.envelopes())
    assert await gateway("erp", "pull", *conn(served), "--store-key", key_files[0], "--verify", "--ack") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("batch 1: events 1-4, 4 docs (receipt 4)")
    assert len(out) == total + 1 and out[-1].startswith(f"total: {total} batches")
    assert f"acknowledged through {total}" in out[-1]
    with up.store.read() as tx:
        assert tx.meta("upstream.acked") == total


async def test_pull_json_lines_carry_decoded_bodies(served, key_files, capsys):
    up = served.up
    await sales_and_seal(up, 2)
    assert await gateway("erp", "pull", *conn(served), "--store-key", key_files[0], "--json") == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    batches = [line["batch"] for line in lines[:-1]]
    assert [b["seq"] for b in batches] == [e["seq"] for e in up.envelopes()]
    assert batches[-1]["body"]["docs"][-1]["id"] == "lane1:s1"
    assert lines[-1]["totals"]["docs"] == up.envelopes()[-1]["last_event"]
    assert lines[-1]["totals"]["acked"] is None
    with up.store.read() as tx:
        assert tx.meta("upstream.acked", 0) == 0  # no --ack, nothing acknowledged


async def test_pull_with_state_continues_the_chain_and_rejects_a_tampered_batch(served, key_files, tmp_path, capsys):
    up = served.up
    state = str(tmp_path / "erp-state.json")
    await sales_and_seal(up, 2)
    assert await gateway("erp", "pull", *conn(served), "--store-key", key_files[0], "--state", state, "--ack") == 0
    first_total = len(up.envelopes())
    await sales_and_seal(up, 6, prefix="more")
    # One bit of the next-but-one batch flipped on disk.
    victim = first_total + 2
    with up.store.begin(write=True) as tx:
        env = decode_envelope(tx.get_raw("batches", u64(victim)))
        body = bytearray(env["body"])
        body[len(body) // 2] ^= 0x01
        tx.put_raw("batches", u64(victim), encode_envelope({**env, "body": bytes(body)}))
    capsys.readouterr()
    assert await gateway("erp", "pull", *conn(served), "--store-key", key_files[0], "--state", state, "--ack") == 1
    err = capsys.readouterr().err
    assert f"REJECTED batch {victim}" in err and f"verified through batch {victim - 1}" in err
    with up.store.read() as tx:
        assert tx.meta("upstream.acked") == first_total  # the page with the bad batch was not acknowledged
    with open(state, encoding="utf-8") as f:
        assert json.load(f)["seq"] == victim - 1


async def test_pull_with_the_wrong_store_key_is_rejected(served, tmp_path, capsys):
    await sales_and_seal(served.up, 1)
    write_keypair(str(tmp_path / "other.pem"), str(tmp_path / "other.pub.pem"))
    assert await gateway("erp", "pull", *conn(served), "--store-key", str(tmp_path / "other.pub.pem")) == 1
    assert "REJECTED batch 1: signature" in capsys.readouterr().err


async def test_push_master_from_json_and_toml(served, key_files, tmp_path, capsys):
    up = served.up
    policy = tmp_path / "policy.toml"
    policy.write_text('negative_stock = "refuse"\nexpiry_warn_days = 60\n')
    assert await gateway("erp", "push-master", "policy", str(policy), "--key", key_files[1], *conn(served)) == 0
    assert "policy version 1 accepted" in capsys.readouterr().out
    members = tmp_path / "members.json"
    members.write_text(json.dumps({"mode": "delta", "members": [{"id": "M7", "tier": "silver", "points": 3}]}))
    assert await gateway("erp", "push-master", "members", str(members), "--key", key_files[1], *conn(served),
                         "--effective", "2020-01-01T00:00:00+08:00") == 0
    assert "members version 2 accepted" in capsys.readouterr().out  # the in-force version was 1
    with up.store.read() as tx:
        assert tx.get("master", "policy")["version"] == 1 and tx.meta("policy")["expiry_warn_days"] == 60
        assert tx.get("members", "M7")["points"] == 3


async def test_push_master_refusals_list_each_entry(served, key_files, tmp_path, capsys):
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"items": [{"sku": "", "category": "x", "unit_cents": 1},
                                             {"sku": "Z", "category": "x", "unit_cents": -5}]}))
    assert await gateway("erp", "push-master", "catalog", str(catalog), "--key", key_files[1], *conn(served)) == 1
    err = capsys.readouterr().err
    assert "422 INVALID_CONTENT" in err and "  - items[0]: sku" in err and "  - items[1] (sku 'Z'): unit_cents" in err


async def test_push_movements_twice_applies_once(served, key_files, tmp_path, capsys):
    moves = tmp_path / "moves.toml"
    moves.write_text('[[movements]]\nid = "RCV-1"\ntype = "receipt"\nsku = "SKU-4"\nqty = 10\n')
    for _ in range(2):
        assert await gateway("erp", "push-movements", str(moves), "--key", key_files[1], *conn(served)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["movements: 1 applied, 0 already applied before", "movements: 0 applied, 1 already applied before"]
    with served.up.store.read() as tx:
        assert stored_on_hand(tx, "SKU-4") == 110


@pytest.mark.parametrize("argv,problem", [
    (["push-master", "catalog", "{missing}", "--key", "{erp}"], "cannot be read"),
    (["push-master", "catalog", "{bad_json}", "--key", "{erp}"], "not valid JSON"),
    (["push-master", "catalog", "{bad_json}", "--key", "{bad_json}"], "not a PEM private key"),
    (["pull", "--store-key", "{missing}"], "does not exist"),
    (["push-master", "members", "{good_json}", "--key", "{erp}", "--effective", "next tuesday"], "ISO 8601"),
])
async def test_bad_input_exits_2_naming_the_problem(served, key_files, tmp_path, capsys, argv, problem):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    good_json = tmp_path / "good.json"
    good_json.write_text('{"mode": "full", "members": []}')
    names = {"missing": str(tmp_path / "missing.json"), "erp": key_files[1], "bad_json": str(bad_json),
             "good_json": str(good_json)}
    argv = [a.format(**names) for a in argv]
    assert await gateway("erp", *argv, *conn(served)) == 2
    assert problem in capsys.readouterr().err


async def test_a_wrong_token_is_reported(served, key_files, capsys):
    assert await gateway("erp", "pull", "--url", served.url, "--token", "nope", "--store-key", key_files[0]) == 1
    assert "401 UNAUTHORIZED" in capsys.readouterr().err


def test_keys_written_by_write_keypair_sign_documents(tmp_path):
    write_keypair(str(tmp_path / "erp.pem"), str(tmp_path / "erp.pub.pem"))
    key = load_private_key(str(tmp_path / "erp.pem"))
    assert len(key.sign(b"x")) == 64


# --- pulling without a caller for the documents: bodies counted, not decoded ------------------

def _pull(served, **kw):
    from upstream import ChainVerifier, ErpClient, pull
    with ErpClient(served.url, TOKEN) as client:
        verifier = ChainVerifier(served.up.store_key.public_key())
        return pull(client, verifier, limit=3, **kw), verifier


async def test_pull_counting_bodies_totals_what_decoding_them_totals(served):
    await sales_and_seal(served.up, 7)
    seen = []
    decoded, _ = await trio.to_thread.run_sync(lambda: _pull(served, on_batch=lambda e, b, s: seen.append(b)))
    counted, verifier = await trio.to_thread.run_sync(lambda: _pull(served, ack=True))
    assert counted.acked == counted.last_seq and decoded.acked == 0
    counted.acked = 0
    assert counted == decoded and counted.batches == len(seen) > 2 and counted.by_type
    assert verifier.last_event == served.up.envelopes()[-1]["last_event"]


async def test_pull_counting_bodies_rejects_a_tampered_batch_and_a_gap(served):
    from upstream import EnvelopeError
    up = served.up
    await sales_and_seal(up, 7)
    total = len(up.envelopes())
    with up.store.begin(write=True) as tx:
        env = decode_envelope(tx.get_raw("batches", u64(2)))
        body = bytearray(env["body"])
        body[len(body) // 2] ^= 0x01
        tx.put_raw("batches", u64(2), encode_envelope({**env, "body": bytes(body)}))
        tx.delete("batches", u64(total - 1))
    with pytest.raises(EnvelopeError) as bad:
        await trio.to_thread.run_sync(_pull, served)
    assert (bad.value.seq, bad.value.reason) == (2, "signature")
    with up.store.begin(write=True) as tx:
        tx.put_raw("batches", u64(2), encode_envelope(env))
    with pytest.raises(EnvelopeError) as gap:
        await trio.to_thread.run_sync(_pull, served)
    assert (gap.value.seq, gap.value.reason) == (total, "chain")


def test_a_signed_body_that_is_not_what_its_envelope_says_is_refused_when_counted():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from upstream import EnvelopeError
    from upstream._envelope import ZERO_DIGEST, count_body, decode_body, seal_packed, verify_envelope
    key = Ed25519PrivateKey.generate()
    good = msgpack.packb({"docs": [{"type": "sale"}], "stock": [], "alerts": []})
    for packed, count, problem in ((good, 2, "holds 1 documents, the envelope says 2"),
                                   (good[:-1], 1, "not valid MessagePack"),
                                   (msgpack.packb({"docs": [], "stock": []}), 0, "'alerts' is missing"),
                                   (msgpack.packb([1]), 0, "not a map")):
        env, _digest = seal_packed(store="S001", seq=1, prev=ZERO_DIGEST, created_ms=1, first_event=1,
                                   last_event=1, packed_body=packed, count=count, private_key=key)
        verify_envelope(env, key.public_key(), ZERO_DIGEST)   # signed as it is: only its body is wrong
        for read in (count_body, decode_body):
            with pytest.raises(EnvelopeError, match=problem):
                read(env)
