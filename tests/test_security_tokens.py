"""Terminal tokens: stored as SHA-256 if wished, made by `gateway token new`, reloaded on SIGHUP
without a restart and without dropping a connection or a request in flight."""
from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import textwrap
import time

import pytest
import trio

from core_ext._tokens import TokenTable, hashed_form
from gateway._app import run_until_signal
from gateway._cli import main
from gateway._config import ConfigError, load_config

from .test_gateway_e2e import ERP_TOKEN, make_keys
from .test_gateway_process import free_ports, stop, wait_ready

OLD, NEW, THIRD = "lane1-old-token-5d1c", "lane1-new-token-93ab", "lane3-token-e7f0aa"


def config_text(tokens: dict, ports=("127.0.0.1:0",) * 3, devices: str = "") -> str:
    lines = "\n".join(f'{name} = "{token}"' for name, token in tokens.items())
    return textwrap.dedent(f"""\
        [store]
        id = "S078"
        [keys]
        signing_key = "keys/store.pem"
        erp_public_key = "keys/erp.pub.pem"
        [pos_api]
        listen = "{ports[0]}"
        [pos_api.tokens]
        """) + lines + textwrap.dedent(f"""
        [upstream]
        listen = "{ports[1]}"
        token = "{ERP_TOKEN}"
        [metrics]
        listen = "{ports[2]}"
        """) + devices


def test_a_token_and_its_digest_open_the_same_door():
    table = TokenTable({"lane1": "secret-one", "lane2": hashed_form("secret-two")})
    assert table.find(b"secret-one") == "lane1" and table.find(b"secret-two") == "lane2"
    assert table.find(hashed_form("secret-two").encode()) == ""  # the digest itself is no token
    assert table.find(b"") == "" and table.find(b"secret-on") == ""


@pytest.mark.parametrize("value,problem", [
    ("sha256:abc", "a 'sha256:' token must be followed by 64 lower-case hex digits"),
    ("sha256:" + "A" * 64, "a 'sha256:' token must be followed by 64 lower-case hex digits"),
])
def test_a_malformed_digest_is_named(tmp_path, value, problem):
    (tmp_path / "g.toml").write_text(config_text({"lane1": value}))
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path / "g.toml"))
    assert caught.value.problems == [("pos_api.tokens.lane1", problem + " (`gateway token new` prints one)")]


def test_a_token_given_twice_once_as_its_digest_is_one_token(tmp_path):
    (tmp_path / "g.toml").write_text(config_text({"lane1": OLD, "lane2": hashed_form(OLD)}))
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path / "g.toml"))
    assert caught.value.problems == [("pos_api.tokens.lane2", "is the same token as pos_api.tokens.lane1")]


def test_token_new_prints_a_token_and_both_lines_to_paste(tmp_path, capsys):
    assert main(["token", "new", "lane3"]) == 0
    out = capsys.readouterr().out
    token = out.splitlines()[1].strip()
    assert len(token) >= 43 and f'  lane3 = "{token}"\n' in out
    digest = re.search(r'  lane3 = "sha256:([0-9a-f]{64})"', out).group(1)
    assert digest == hashlib.sha256(token.encode()).hexdigest()
    # Pasted, either line loads and the token opens the door as lane3.
    for line in (f'lane3 = "{token}"', f'lane3 = "sha256:{digest}"'):
        (tmp_path / "g.toml").write_text(config_text({}).replace("[pos_api.tokens]\n", f"[pos_api.tokens]\n{line}\n"))
        tokens = load_config(str(tmp_path / "g.toml")).pos_api.tokens
        assert TokenTable(tokens).find(token.encode()) == "lane3"
    assert main(["token", "new", "lane3"]) == 0
    assert capsys.readouterr().out.splitlines()[1].strip() != token  # fresh every time
    assert main(["token", "new", "bad name"]) == 2


def raw_request(sock: socket.socket, path: str, token: str) -> int:
    """One keep-alive HTTP/1.1 GET on an open socket; returns the status (the body is read whole)."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the connection was closed"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection was closed"
        rest += chunk
    return int(head.split(b" ")[1])


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


async def test_sighup_in_process_swaps_tokens_on_open_connections(tmp_path, caplog):
    make_keys(tmp_path)
    path = tmp_path / "gateway.toml"
    path.write_text(config_text({"lane1": OLD}))
    caplog.set_level("INFO", logger="gateway.reload")
    async with trio.open_nursery() as nursery:
        gateway = await nursery.start(run_until_signal, load_config(str(path)))
        sock = connect(gateway.urls["pos_api"][0])
        ask = lambda token: trio.to_thread.run_sync(raw_request, sock, "/pos/v1/stock/SKU-1", token)  # noqa: E731
        assert await ask(OLD) == 404 and await ask(NEW) == 401

        # A long poll in flight across the reload still gets its answer.
        poll = connect(gateway.urls["upstream"][0])
        poll.sendall(f"GET /upstream/v1/batches?after=0&wait=2 HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {ERP_TOKEN}\r\n\r\n".encode())
        path.write_text(config_text({"lane1": NEW, "lane3": hashed_form(THIRD)}, devices=textwrap.dedent("""
            [[devices]]
            name = "backroom"
            kind = "csv_drop"
            dir = "drop"
            [devices.columns]
            code = "c"
            qty = "q"
            """)))
        done = gateway.reload_waiter()
        os.kill(os.getpid(), signal.SIGHUP)
        with trio.fail_after(10):
            await done.wait()
        assert await ask(NEW) == 404 and await ask(OLD) == 401 and await ask(THIRD) == 404
        status = await trio.to_thread.run_sync(lambda: poll.recv(65536).split(b" ")[1])
        assert status == b"200"
        sock.close()
        poll.close()
        nursery.cancel_scope.cancel()
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert "terminal tokens added lane3; changed lane1; ERP token unchanged" in said
    assert "devices (backroom) changed but is read only at start; restart the gateway to apply it" in said
    for secret in (OLD, NEW, THIRD, hashed_form(THIRD)):
        assert secret not in said


async def test_an_invalid_file_on_sighup_keeps_the_tokens_in_force(tmp_path, caplog):
    make_keys(tmp_path)
    path = tmp_path / "gateway.toml"
    path.write_text(config_text({"lane1": OLD}))
    async with trio.open_nursery() as nursery:
        gateway = await nursery.start(run_until_signal, load_config(str(path)))
        path.write_text(config_text({"lane1": "sha256:nothex"}))
        result = await gateway.reload()
        assert [k for k, _ in result.problems] == ["pos_api.tokens.lane1"]
        sock = connect(gateway.urls["pos_api"][0])
        assert await trio.to_thread.run_sync(raw_request, sock, "/pos/v1/stock/SKU-1", OLD) == 404
        sock.close()
        nursery.cancel_scope.cancel()
    assert "is invalid; nothing was changed" in caplog.text


def test_sighup_reloads_a_running_gateway_process(tmp_path, processes):
    make_keys(tmp_path)
    ports = free_ports(3)
    addresses = tuple(f"127.0.0.1:{p}" for p in ports)
    path = tmp_path / "gateway.toml"
    path.write_text(config_text({"lane1": OLD}, addresses))
    proc = processes("--config", str(path))
    wait_ready(proc, ports[2])
    sock = socket.create_connection(("127.0.0.1", ports[0]), timeout=10)
    assert raw_request(sock, "/pos/v1/stock/SKU-1", OLD) == 404
    path.write_text(config_text({"lane1": hashed_form(NEW)}, addresses))
    proc.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while "SIGHUP: reloaded" not in proc.output():  # another process: its log is all there is to wait on
        assert time.monotonic() < deadline, proc.output()
        time.sleep(0.05)
    # The same connection, never closed: the new token in, the old one out.
    assert raw_request(sock, "/pos/v1/stock/SKU-1", NEW) == 404
    assert raw_request(sock, "/pos/v1/stock/SKU-1", OLD) == 401
    sock.close()
    assert stop(proc) == 0
    out = proc.output()
    assert "terminal tokens changed lane1" in out
    assert OLD not in out and NEW not in out


@pytest.fixture
def processes(tmp_path):
    from .test_gateway_process import Process

    started = []

    def start(*args):
        started.append(Process(tmp_path, *args))
        return started[-1]

    yield start
    for p in started:
        p.close()
