"""Keys, batch envelopes and signed documents: the bytes of UP/1, checked against the spec."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings, strategies as st

from upstream import (
    DocumentError, EnvelopeError, KeyFileError, ZERO_DIGEST, decode_body, decode_envelope, digest,
    document_signed_bytes, encode_envelope, load_private_key, load_public_key, raw_public_key, seal_envelope,
    sign_document, signed_bytes, verify_document, verify_envelope, write_keypair,
)

from .erp_test_client import ChainBroken, ChainChecker, spec_digest, spec_signed_bytes


@pytest.fixture
def keypair(tmp_path):
    priv, pub = str(tmp_path / "store.pem"), str(tmp_path / "store.pub.pem")
    write_keypair(priv, pub)
    return priv, pub


def body_of(n: int, first: int = 1) -> dict:
    return {"docs": [{"seq": first + i, "type": "sale", "id": f"lane1:{first + i}", "ts_ms": 1000 + i}
                     for i in range(n)],
            "stock": [["SKU-1", "A1", -n, 10]], "alerts": []}


def chain(key, count: int, *, per: int = 3) -> list[dict]:
    envs, prev, first = [], ZERO_DIGEST, 1
    for seq in range(1, count + 1):
        env = seal_envelope(store="S001", seq=seq, prev=prev, created_ms=1_700_000_000_000 + seq,
                            first_event=first, last_event=first + per - 1, body=body_of(per, first), private_key=key)
        envs.append(env)
        prev, first = digest(env), first + per
    return envs


# --- keys ------------------------------------------------------------------------------------

def test_keypair_files_are_pem_and_private_is_0600(keypair):
    priv, pub = keypair
    assert stat.S_IMODE(os.stat(priv).st_mode) == 0o600
    assert Path(priv).read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert Path(pub).read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    key = load_private_key(priv)
    assert raw_public_key(load_public_key(pub)) == raw_public_key(key)
    assert len(raw_public_key(key)) == 32
    # A private key file also yields its public half.
    assert raw_public_key(load_public_key(priv)) == raw_public_key(key)


def test_keypair_never_replaces_a_key(keypair):
    priv, pub = keypair
    before = Path(priv).read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        write_keypair(priv, pub)
    assert Path(priv).read_bytes() == before
    assert [n for n in os.listdir(os.path.dirname(priv)) if n.endswith(".tmp")] == []


def test_key_errors_name_the_file(tmp_path):
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(KeyFileError, match="nope.pem.*does not exist"):
        load_private_key(missing)
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"not a key")
    with pytest.raises(KeyFileError, match="junk.pem.*not a PEM private key"):
        load_private_key(str(junk))
    with pytest.raises(KeyFileError, match="junk.pem.*not a PEM public key"):
        load_public_key(str(junk))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_keys_load_and_openssl_accepts_a_batch_signature(tmp_path, keypair):
    # A key openssl made loads here...
    ossl_key = tmp_path / "ossl.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(ossl_key)], check=True)
    assert len(raw_public_key(load_private_key(str(ossl_key)))) == 32
    # ...and openssl verifies a batch signed with ours, from the spec's signed_bytes.
    priv, pub = keypair
    env = chain(load_private_key(priv), 1)[0]
    (tmp_path / "signed.bin").write_bytes(spec_signed_bytes(env))
    (tmp_path / "sig.bin").write_bytes(env["sig"])
    ok = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin",
                         "-in", str(tmp_path / "signed.bin"), "-sigfile", str(tmp_path / "sig.bin")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (tmp_path / "signed.bin").write_bytes(spec_signed_bytes(env) + b"x")
    bad = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin",
                          "-in", str(tmp_path / "signed.bin"), "-sigfile", str(tmp_path / "sig.bin")],
                         capture_output=True, text=True)
    assert bad.returncode != 0


# --- envelopes -------------------------------------------------------------------------------

def test_envelope_follows_the_spec_layout():
    key = Ed25519PrivateKey.generate()
    env = chain(key, 1)[0]
    assert list(env) == ["v", "store", "seq", "prev", "created_ms", "first_event", "last_event", "count",
                         "codec", "body", "sig"]
    assert signed_bytes(env) == spec_signed_bytes(env)
    assert digest(env) == spec_digest(env)
    assert env["count"] == 3 and env["codec"] == "zstd" and env["prev"] == ZERO_DIGEST
    assert decode_body(env) == body_of(3)
    plain = seal_envelope(store="S001", seq=1, prev=ZERO_DIGEST, created_ms=1, first_event=1, last_event=1,
                          body=body_of(1), private_key=key, codec="none")
    assert msgpack.unpackb(plain["body"]) == body_of(1)


def test_chain_verifies_here_and_in_the_independent_client():
    key = Ed25519PrivateKey.generate()
    envs = [decode_envelope(encode_envelope(e)) for e in chain(key, 5)]
    prev = ZERO_DIGEST
    for seq, env in enumerate(envs, 1):
        prev = verify_envelope(env, key.public_key(), prev, expect_seq=seq)
    bodies = ChainChecker(key.public_key(), store="S001").accept_all(envs)
    assert [b["docs"][0]["seq"] for b in bodies] == [1, 4, 7, 10, 13]


def _tamper_cases(envs):
    one_bit = [dict(e) for e in envs]
    body = bytearray(one_bit[2]["body"])
    body[len(body) // 2] ^= 0x01
    one_bit[2]["body"] = bytes(body)
    dropped = envs[:2] + envs[3:]
    swapped = envs[:1] + [envs[2], envs[1]] + envs[3:]
    return {"one bit": one_bit, "dropped": dropped, "swapped": swapped}


@pytest.mark.parametrize("case", ["one bit", "dropped", "swapped"])
def test_altered_dropped_or_swapped_batches_are_detected(case):
    key = Ed25519PrivateKey.generate()
    envs = _tamper_cases(chain(key, 5))[case]
    with pytest.raises(EnvelopeError) as caught:
        prev = ZERO_DIGEST
        for seq, env in enumerate(envs, 1):
            prev = verify_envelope(env, key.public_key(), prev, expect_seq=seq)
    assert caught.value.seq is not None
    assert caught.value.reason == ("signature" if case == "one bit" else "chain")
    with pytest.raises(ChainBroken):
        ChainChecker(key.public_key()).accept_all(envs)


def test_every_bit_of_the_signed_fields_counts():
    key = Ed25519PrivateKey.generate()
    env = chain(key, 1)[0]
    for field, value in [("store", "S002"), ("seq", 2), ("created_ms", 1), ("first_event", 2),
                         ("last_event", 9), ("count", 4), ("prev", b"\x01" * 32)]:
        with pytest.raises(EnvelopeError):
            verify_envelope({**env, field: value}, key.public_key(), None)


def test_a_batch_signed_by_another_key_is_refused():
    env = chain(Ed25519PrivateKey.generate(), 1)[0]
    with pytest.raises(EnvelopeError, match="signature"):
        verify_envelope(env, Ed25519PrivateKey.generate().public_key(), ZERO_DIGEST)


@pytest.mark.parametrize("raw,problem", [
    (b"\xc1", "not valid MessagePack"),
    (msgpack.packb([1, 2]), "not a map"),
    (msgpack.packb({"v": 1}), "'seq' is missing"),
])
def test_malformed_envelopes_name_the_problem(raw, problem):
    with pytest.raises(EnvelopeError, match=problem):
        decode_envelope(raw)


def test_envelope_with_trailing_garbage_is_refused():
    env = chain(Ed25519PrivateKey.generate(), 1)[0]
    with pytest.raises(EnvelopeError, match="not valid MessagePack"):
        decode_envelope(encode_envelope(env) + b"\x00")


def test_a_zstd_bomb_is_refused_not_inflated():
    key = Ed25519PrivateKey.generate()
    env = seal_envelope(store="S", seq=1, prev=ZERO_DIGEST, created_ms=1, first_event=1, last_event=1,
                        body={"docs": [{"pad": "x" * 100_000}], "stock": [], "alerts": []}, private_key=key)
    with pytest.raises(EnvelopeError, match="over 1000"):
        decode_body(env, max_bytes=1000)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decode_envelope_raises_only_its_own_error(data):
    try:
        env = decode_envelope(data)
    except EnvelopeError:
        return
    try:
        decode_body(env)
    except EnvelopeError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["v", "store", "seq", "prev", "created_ms", "first_event", "last_event",
                                         "count", "codec", "body", "sig"]),
                       st.one_of(st.integers(-5, 2 ** 64 - 1), st.binary(max_size=70), st.text(max_size=5),
                                 st.none(), st.booleans())))
def test_verify_envelope_raises_only_its_own_error(fields):
    key = Ed25519PrivateKey.generate()
    with pytest.raises(EnvelopeError):
        verify_envelope(fields, key.public_key(), ZERO_DIGEST)


# --- signed documents ------------------------------------------------------------------------

def test_document_round_trip_and_signed_layout():
    erp = Ed25519PrivateKey.generate()
    doc = sign_document("catalog", 7, {"items": []}, erp, issued_ms=1234, effective_ms=5678)
    assert document_signed_bytes(doc) == msgpack.packb([1, "catalog", 7, 1234, 5678, doc["body"]], use_bin_type=True)
    assert verify_document(doc, erp.public_key()) == {"items": []}
    now = sign_document("policy", 1, {}, erp, issued_ms=1)
    assert "effective_ms" not in now
    assert document_signed_bytes(now) == msgpack.packb([1, "policy", 1, 1, 0, now["body"]], use_bin_type=True)


def test_documents_signed_by_another_key_or_altered_are_refused():
    erp = Ed25519PrivateKey.generate()
    doc = sign_document("catalog", 7, {"items": []}, erp, issued_ms=1234)
    with pytest.raises(DocumentError) as caught:
        verify_document(doc, Ed25519PrivateKey.generate().public_key())
    assert caught.value.reason == "signature"
    for field, value in [("version", 8), ("kind", "members"), ("issued_ms", 1), ("effective_ms", 9),
                         ("body", msgpack.packb({"items": [1]}))]:
        with pytest.raises(DocumentError) as caught:
            verify_document({**doc, field: value}, erp.public_key())
        assert caught.value.reason == "signature", field


@pytest.mark.parametrize("doc,problem", [
    ([], "not a map"),
    ({"v": 1, "kind": "catalog", "version": "7"}, "'version'"),
    ({"v": 2, "kind": "catalog", "version": 7, "issued_ms": 1}, "format 2"),
    ({"v": 1, "kind": "prices", "version": 7, "issued_ms": 1}, "kind 'prices'"),
    ({"v": 1, "kind": "catalog", "version": 7, "issued_ms": 1, "body": "x"}, "'body'"),
])
def test_malformed_documents_name_the_field(doc, problem):
    with pytest.raises(DocumentError, match=problem) as caught:
        verify_document(doc, Ed25519PrivateKey.generate().public_key())
    assert caught.value.reason == "malformed"


@pytest.mark.parametrize("sig", [b"1", b"\x00" * 63, None, "not bytes"])
def test_a_missing_or_cut_signature_is_a_bad_signature_not_a_malformed_document(sig):
    doc = {"v": 1, "kind": "catalog", "version": 7, "issued_ms": 1, "body": b""}
    if sig is not None:
        doc["sig"] = sig
    with pytest.raises(DocumentError, match="'sig'") as caught:
        verify_document(doc, Ed25519PrivateKey.generate().public_key())
    assert caught.value.reason == "signature"
