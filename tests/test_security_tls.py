"""TLS on every listener, client certificates on POS/1 and UP/1, and the files check-config judges.

Real TLS on loopback: a local CA made with `cryptography`, the gateway serving POS/1, UP/1 and the
metrics listener over HTTPS, clients holding a terminal's certificate, another terminal's, one from a
CA the store does not trust, an expired one, and none.
"""
from __future__ import annotations

import functools
import http.client
import json
import os
import ssl
import textwrap

import msgpack
import pytest
import trio

from gateway._app import Gateway, StartError
from gateway._cli import main
from gateway._config import check_files, load_config

from ._pki import LocalCA
from .test_gateway_e2e import ERP_TOKEN, make_keys

LANE1_TOKEN = "lane1-token-0a9f3e"
LANE2_TOKEN = "lane2-token-77c1d2"


@pytest.fixture
def pki(tmp_path):
    folder = tmp_path / "pki"
    folder.mkdir()
    server_ca = LocalCA(folder, "Store Server CA")
    terminals = LocalCA(folder, "Store Terminals CA")
    stranger = LocalCA(folder, "Stranger CA")
    return {
        "server_ca": server_ca.path,
        "server": server_ca.issue("127.0.0.1", server=True),
        "terminals_ca": terminals.path,
        "lane1": terminals.issue("lane1"),
        "lane2": terminals.issue("lane2"),
        "erp": terminals.issue("erp"),
        "expired": terminals.issue("lane1", expired=True),
        "stranger": stranger.issue("lane1"),
    }


def tls_config(root, pki, *, client_ca: bool = True, erp_name: str = "") -> str:
    server = pki["server"]
    ca = pki["terminals_ca"] if client_ca else ""
    text = textwrap.dedent(f"""\
        [store]
        id = "S077"
        [keys]
        signing_key = "keys/store.pem"
        erp_public_key = "keys/erp.pub.pem"
        [pos_api]
        listen = "127.0.0.1:0"
        tls_cert = "{server.cert}"
        tls_key = "{server.key}"
        tls_client_ca = "{ca}"
        [pos_api.tokens]
        lane1 = "{LANE1_TOKEN}"
        lane2 = "sha256:{__import__('hashlib').sha256(LANE2_TOKEN.encode()).hexdigest()}"
        [upstream]
        listen = "127.0.0.1:0"
        token = "{ERP_TOKEN}"
        tls_cert = "{server.cert}"
        tls_key = "{server.key}"
        tls_client_ca = "{ca}"
        tls_client_name = "{erp_name}"
        [metrics]
        listen = "127.0.0.1:0"
        tls_cert = "{server.cert}"
        tls_key = "{server.key}"
        """)
    path = root / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def https(url: str, method: str, path: str, *, cafile: str, client=None, token: str | None = None, body=None):
    """One HTTPS request trusting only `cafile`, presenting `client` (an Issued) if given."""
    context = ssl.create_default_context(cafile=cafile)
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    host, port = url.removeprefix("https://").rsplit(":", 1)
    conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if resp.getheader("content-type", "").startswith("application/json"):
        return resp.status, json.loads(data)
    if resp.getheader("content-type", "").startswith("application/msgpack"):
        return resp.status, msgpack.unpackb(data)
    return resp.status, data


async def call(*args, **kwargs):
    return await trio.to_thread.run_sync(functools.partial(https, *args, **kwargs))


REFUSED_HANDSHAKE = (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)


async def test_pos_api_needs_the_terminals_own_certificate(tmp_path, pki):
    make_keys(tmp_path)
    config = load_config(tls_config(tmp_path, pki))
    async with trio.open_nursery() as nursery:
        gateway = await nursery.start(Gateway(config).run)
        assert all(urls[0].startswith("https://") for urls in gateway.urls.values()), gateway.urls
        pos = gateway.urls["pos_api"][0]
        ca = pki["server_ca"]

        status, answer = await call(pos, "GET", "/pos/v1/stock/SKU-1", cafile=ca, client=pki["lane1"],
                                    token=LANE1_TOKEN)
        assert status == 404 and answer["err"] == "UNKNOWN_ITEM"  # through to the core: no catalog yet
        # lane2's token is configured as its SHA-256 only.
        status, answer = await call(pos, "GET", "/pos/v1/stock/SKU-1", cafile=ca, client=pki["lane2"],
                                    token=LANE2_TOKEN)
        assert status == 404 and answer["err"] == "UNKNOWN_ITEM"
        # lane1's token from a machine holding lane2's certificate: refused, before the core.
        status, answer = await call(pos, "GET", "/pos/v1/stock/SKU-1", cafile=ca, client=pki["lane2"],
                                    token=LANE1_TOKEN)
        assert status == 403 and answer["err"] == "UNAUTHORIZED", answer
        status, _a = await call(pos, "GET", "/pos/v1/stock/SKU-1", cafile=ca, client=pki["lane1"], token="nope")
        assert status == 401
        for client in (None, pki["stranger"], pki["expired"]):
            # No certificate, one the store's CA never signed, an expired one: no HTTP exchange at all.
            with pytest.raises(REFUSED_HANDSHAKE):
                await call(pos, "GET", "/pos/v1/stock/SKU-1", cafile=ca, client=client, token=LANE1_TOKEN)
        core = gateway.registry.get_sample_value("gateway_core_requests_total", {"kind": "stock", "outcome": "refused"})
        assert core == 2  # only the two requests whose certificate matched their token reached the core
        nursery.cancel_scope.cancel()


async def test_upstream_and_metrics_over_tls(tmp_path, pki):
    make_keys(tmp_path)
    config = load_config(tls_config(tmp_path, pki))
    async with trio.open_nursery() as nursery:
        gateway = await nursery.start(Gateway(config).run)
        ca = pki["server_ca"]
        status, head = await call(gateway.urls["upstream"][0], "GET", "/upstream/v1/status", cafile=ca,
                                  client=pki["erp"], token=ERP_TOKEN)
        assert status == 200 and head["store"] == "S077"
        with pytest.raises(REFUSED_HANDSHAKE):
            await call(gateway.urls["upstream"][0], "GET", "/upstream/v1/status", cafile=ca, token=ERP_TOKEN)
        status, text = await call(gateway.urls["metrics"][0], "GET", "/metrics", cafile=ca)
        assert status == 200 and b"gateway_store_open 1.0" in text
        with pytest.raises(ssl.SSLCertVerificationError):
            # A client that does not trust the store's CA cannot be fooled into talking to another.
            await call(gateway.urls["metrics"][0], "GET", "/metrics", cafile=pki["terminals_ca"])
        nursery.cancel_scope.cancel()


async def test_upstream_with_a_client_name_takes_only_the_erps_certificate(tmp_path, pki):
    # One CA signs the tills' certificates and the ERP's: the ERP's token from a till's certificate
    # is refused once the ERP's name is configured, and nothing reaches the core.
    make_keys(tmp_path)
    config = load_config(tls_config(tmp_path, pki, erp_name="erp"))
    async with trio.open_nursery() as nursery:
        gateway = await nursery.start(Gateway(config).run)
        up, ca = gateway.urls["upstream"][0], pki["server_ca"]
        status, head = await call(up, "GET", "/upstream/v1/status", cafile=ca, client=pki["erp"], token=ERP_TOKEN)
        assert status == 200 and head["store"] == "S077"
        status, answer = await call(up, "GET", "/upstream/v1/status", cafile=ca, client=pki["lane1"], token=ERP_TOKEN)
        assert status == 403 and answer["error"] == "UNAUTHORIZED", answer
        status, answer = await call(up, "POST", "/upstream/v1/ack", cafile=ca, client=pki["lane1"], token=ERP_TOKEN,
                                    body={"through": 0})
        assert status == 403
        # The token is still asked first: a wrong one says nothing about the certificate.
        status, _a = await call(up, "GET", "/upstream/v1/status", cafile=ca, client=pki["lane1"], token="nope")
        assert status == 401
        refused = gateway.registry.get_sample_value("gateway_http_refused_total",
                                                    {"listener": "upstream", "reason": "unauthorized"})
        assert refused == 3
        assert gateway.registry.get_sample_value("gateway_core_requests_total", {"kind": "ack", "outcome": "ok"}) is None
        nursery.cancel_scope.cancel()


def test_a_client_name_without_a_client_ca_is_named(tmp_path, pki):
    make_keys(tmp_path)
    path = tls_config(tmp_path, pki, client_ca=False, erp_name="erp")
    with pytest.raises(Exception) as caught:
        load_config(path)
    assert ("upstream.tls_client_name", "needs tls_client_ca: the name is checked on the ERP's client certificate") \
        in caught.value.problems


async def test_without_a_client_ca_tls_alone_serves_any_client(tmp_path, pki):
    make_keys(tmp_path)
    config = load_config(tls_config(tmp_path, pki, client_ca=False))
    async with trio.open_nursery() as nursery:
        gateway = await nursery.start(Gateway(config).run)
        status, answer = await call(gateway.urls["pos_api"][0], "GET", "/pos/v1/stock/SKU-1",
                                    cafile=pki["server_ca"], token=LANE1_TOKEN)
        assert status == 404 and answer["err"] == "UNKNOWN_ITEM"
        nursery.cancel_scope.cancel()


# --- check-config ---------------------------------------------------------------------------------

def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def problems_of(path: str) -> dict:
    return dict(check_files(load_config(path)))


def test_check_config_accepts_the_tls_files(tmp_path, pki):
    make_keys(tmp_path)
    assert problems_of(tls_config(tmp_path, pki)) == {}


def test_a_certificate_with_another_key_is_named(tmp_path, pki):
    make_keys(tmp_path)
    path = tls_config(tmp_path, pki)
    text = read(path).replace(f'tls_key = "{pki["server"].key}"\ntls_client_ca = "{pki["terminals_ca"]}"\n'
                                     '[pos_api.tokens]', f'tls_key = "{pki["lane1"].key}"\n'
                                     f'tls_client_ca = "{pki["terminals_ca"]}"\n[pos_api.tokens]', 1)
    write(path, text)
    problems = problems_of(path)
    assert list(problems) == ["pos_api.tls_key"]
    assert problems["pos_api.tls_key"] == (f"{pki['lane1'].key} is not the key of the certificate "
                                           f"{pki['server'].cert} (their public keys differ)")


def test_tls_files_missing_unreadable_or_not_pem(tmp_path, pki):
    make_keys(tmp_path)
    path = tls_config(tmp_path, pki)
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    text = (read(path).replace(pki["terminals_ca"], str(not_pem))
            .replace(f'[metrics]\nlisten = "127.0.0.1:0"\ntls_cert = "{pki["server"].cert}"',
                     f'[metrics]\nlisten = "127.0.0.1:0"\ntls_cert = "{tmp_path}/missing.crt"'))
    write(path, text)
    problems = problems_of(path)
    assert problems["pos_api.tls_client_ca"] == f"{not_pem} holds no PEM certificate"
    assert problems["upstream.tls_client_ca"] == f"{not_pem} holds no PEM certificate"
    assert problems["metrics.tls_cert"].startswith(f"{tmp_path}/missing.crt does not exist")


def test_one_of_cert_and_key_and_a_client_ca_without_tls(tmp_path, capsys):
    (tmp_path / "gateway.toml").write_text(textwrap.dedent("""\
        [store]
        id = "S1"
        [pos_api]
        tls_cert = "c.pem"
        [metrics]
        tls_key = "k.pem"
        [upstream]
        tls_client_ca = "ca.pem"
        """))
    assert main(["check-config", str(tmp_path / "gateway.toml")]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out == ["pos_api.tls_key: must be set too: give both tls_cert and tls_key (HTTPS) or neither",
                   "upstream.tls_client_ca: needs tls_cert and tls_key: client certificates come with TLS",
                   "metrics.tls_cert: must be set too: give both tls_cert and tls_key (HTTPS) or neither"]


@pytest.mark.parametrize("mode,words", [(0o644, "mode 0644: readable by its group and others"),
                                        (0o640, "mode 0640: readable by its group"),
                                        (0o604, "mode 0604: readable by others"),
                                        (0o620, "mode 0620: writable by its group")])
def test_a_signing_key_others_may_read_is_refused_with_the_chmod(tmp_path, capsys, mode, words):
    make_keys(tmp_path)
    key = tmp_path / "keys" / "store.pem"
    key.chmod(mode)
    (tmp_path / "gateway.toml").write_text('[store]\nid = "S1"\n')
    assert main(["check-config", str(tmp_path / "gateway.toml")]) == 2
    assert capsys.readouterr().out == f"keys.signing_key: {key} is {words}; run chmod 600 {key}\n"
    key.chmod(0o600)
    assert main(["check-config", str(tmp_path / "gateway.toml")]) == 0


async def test_gateway_run_refuses_an_open_key_before_touching_the_store(tmp_path, pki):
    make_keys(tmp_path)
    config = load_config(tls_config(tmp_path, pki))
    os.chmod(pki["server"].key, 0o644)
    with pytest.raises(StartError) as caught:
        await Gateway(config).run()
    assert caught.value.key == "pos_api.tls_key"
    assert caught.value.problem.endswith(f"readable by its group and others; run chmod 600 {pki['server'].key}")
    assert not (tmp_path / "data").exists()
    os.chmod(pki["server"].key, 0o600)
    (tmp_path / "keys" / "store.pem").chmod(0o640)
    with pytest.raises(StartError) as caught:
        await Gateway(config).run()
    assert caught.value.key == "keys.signing_key"


def test_a_nats_credentials_file_others_may_read_is_refused(tmp_path):
    make_keys(tmp_path)
    creds = tmp_path / "store.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\n")
    creds.chmod(0o644)
    (tmp_path / "gateway.toml").write_text('[store]\nid = "S1"\n[nats]\nservers = ["nats://127.0.0.1:4222"]\n'
                                           'creds = "store.creds"\n')
    assert problems_of(str(tmp_path / "gateway.toml")) == {
        "nats.creds": f"{creds} is mode 0644: readable by its group and others; run chmod 600 {creds}"}
