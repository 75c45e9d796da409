"""The `gateway` command line: check-config, keygen, help and exit codes."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import types

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway import _cli
from gateway._cli import COMMANDS, main
from gateway._cmd_config import ensure_signing_key, prepare
from gateway._config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GOOD = '''
[store]
id = "S042"
timezone = "Europe/Berlin"
[pos_api.tokens]
lane1 = "lane1-token-0123456789"
[upstream]
token = "env:TEST_CLI_ERP_TOKEN"
[[devices]]
name = "lane1"
kind = "ecr_serial"
port = "loop://"
[[devices]]
name = "backroom"
kind = "scanner_serial"
port = "loop://"
role = "count"
'''


def write(folder, text: str, name: str = "gateway.toml") -> str:
    path = os.path.join(str(folder), name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def keygen(out, *extra) -> int:
    return main(["keygen", "--out", str(out), *extra])


def test_keygen_writes_an_ed25519_pair_private_0600(tmp_path, capsys):
    out = tmp_path / "keys"
    assert keygen(out) == 0
    private_path, public_path = out / "store.pem", out / "store.pub.pem"
    assert stat.S_IMODE(os.stat(private_path).st_mode) == 0o600
    private = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    public = serialization.load_pem_public_key(public_path.read_bytes())
    assert isinstance(private, Ed25519PrivateKey) and isinstance(public, Ed25519PublicKey)
    public.verify(private.sign(b"batch"), b"batch")  # the two halves belong together
    assert private_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    said = capsys.readouterr().out
    assert str(private_path) in said and str(public_path) in said


def test_keygen_never_overwrites(tmp_path, capsys):
    out = tmp_path / "keys"
    assert keygen(out, "--name", "erp") == 0
    before = (out / "erp.pem").read_bytes()
    capsys.readouterr()
    assert keygen(out, "--name", "erp") == 1
    assert "exists" in capsys.readouterr().err
    assert (out / "erp.pem").read_bytes() == before
    # A lone public half blocks too: a new private key would not match what the ERP holds.
    (out / "erp.pem").unlink()
    assert keygen(out, "--name", "erp") == 1
    assert not (out / "erp.pem").exists()


def test_keygen_refuses_a_bad_name_and_an_unwritable_folder(tmp_path, capsys):
    assert keygen(tmp_path, "--name", "../evil") == 2
    assert "--name" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert keygen(blocker / "keys") == 1
    assert "keygen:" in capsys.readouterr().err


def test_check_config_ok(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TEST_CLI_ERP_TOKEN", "erp-token-0123456789")
    path = write(tmp_path, GOOD)
    assert keygen(tmp_path / "keys") == 0
    capsys.readouterr()
    assert main(["check-config", path]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "OK: S042, 2 devices"
    # The ERP key is absent, and a device shares a terminal's name: allowed, and said.
    assert out[:-1] == [f"note: keys.erp_public_key: {tmp_path / 'keys' / 'erp.pub.pem'} does not exist: "
                        "master documents will be refused (403) until it is installed",
                        "note: devices[0].name: 'lane1' is also a POS/1 terminal name: a sale id used by both "
                        "would be taken for a repeat; give them different names"]


def test_check_config_lists_each_problem_and_exits_2(tmp_path, capsys):
    path = write(tmp_path, GOOD.replace('role = "count"', 'role = "counting"').replace("Europe/Berlin", "Europe/Bern"))
    assert main(["check-config", path]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "store.timezone: unknown time zone 'Europe/Bern' (an IANA name such as 'Asia/Shanghai')",
        "upstream.token: environment variable TEST_CLI_ERP_TOKEN is not set",
        "devices[1].role: must be one of receive, count, lane, got 'counting' (did you mean 'count'?)",
    ]


def test_check_config_needs_the_signing_key(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TEST_CLI_ERP_TOKEN", "erp-token-0123456789")
    path = write(tmp_path, GOOD)
    assert main(["check-config", path]) == 2
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith(f"keys.signing_key: {tmp_path / 'keys' / 'store.pem'} does not exist")
    assert "gateway keygen" in line


def test_first_start_makes_the_store_key_once(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    assert prepare(config, create_keys=False) == [
        ("keys.signing_key", f"{tmp_path / 'keys' / 'store.pem'} does not exist "
                             f"(`gateway keygen --out {tmp_path / 'keys'}` writes one)")]
    assert prepare(config, create_keys=True) == []
    assert "made a new store signing key" in caplog.text
    assert "master documents will be refused (403)" in caplog.text
    key = (tmp_path / "keys" / "store.pem").read_bytes()
    assert ensure_signing_key(config.keys) is False  # a second start keeps the key
    assert (tmp_path / "keys" / "store.pem").read_bytes() == key
    assert (tmp_path / "keys" / "store.pub.pem").exists()


def test_help_and_usage_errors(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out
    assert main(["check-config", "--help"]) == 0
    assert "OK: <store id>, N devices" in capsys.readouterr().out
    assert main(["keygen", "--help"]) == 0
    assert "0600" in capsys.readouterr().out
    assert main([]) == 2
    assert main(["no-such-command"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["check-config"]) == 2  # FILE missing
    assert main(["keygen", "--bogus"]) == 2


def test_a_command_whose_module_is_absent_fails_clearly(capsys, monkeypatch):
    monkeypatch.setitem(COMMANDS, "ghost", ("gateway._no_such_module", "a ghost", "A ghost."))
    assert main(["ghost"]) == 1
    assert "gateway ghost: not available" in capsys.readouterr().err


def test_config_errors_from_any_command_exit_2(tmp_path, capsys, monkeypatch):
    module = types.ModuleType("gateway._test_cmd")
    module.add_arguments = lambda parser: parser.add_argument("--config")

    def run(args):
        load_config(args.config)
        return 0

    module.run = run
    monkeypatch.setitem(sys.modules, "gateway._test_cmd", module)
    monkeypatch.setitem(COMMANDS, "try", ("gateway._test_cmd", "try a config", "Try."))
    bad = write(tmp_path, "[store]\n")
    assert main(["try", "--config", bad]) == 2
    assert capsys.readouterr().err == "store.id: is required (the store id in every batch)\n"


def test_only_the_chosen_command_is_imported(capsys, monkeypatch):
    imported = []
    real_import = _cli.importlib.import_module
    monkeypatch.setattr(_cli.importlib, "import_module", lambda name: imported.append(name) or real_import(name))
    assert main(["keygen", "--help"]) == 0
    assert imported == ["gateway._cmd_config"]
    capsys.readouterr()
    assert main(["--version"]) == 0
    assert imported == ["gateway._cmd_config"]
    assert capsys.readouterr().out.startswith("gateway ")


def test_the_entry_point_exit_code_in_a_real_process(tmp_path):
    bad = write(tmp_path, "[store]\nid = 5\n")
    env = {**os.environ, "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, "-c", "import sys; from gateway._cli import main; sys.exit(main())",
                           "check-config", bad], capture_output=True, text=True, env=env, cwd=str(tmp_path),
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == "store.id: must be a string, got 5\n"


def test_verify_ledger_reads_the_config_without_needing_its_secrets(tmp_path, capsys, monkeypatch):
    from core_ext import Store
    monkeypatch.delenv("TEST_CLI_ERP_TOKEN", raising=False)  # the upstream token's env: is unset
    path = write(tmp_path, GOOD)
    Store(load_config(path, resolve_secrets=False).store.data_dir).close()  # the gateway made its store
    assert main(["verify-ledger", "--config", path]) == 0
    assert "OK" in capsys.readouterr().out


def test_verify_ledger_beside_an_older_gateway_changes_nothing(tmp_path, capsys):
    # Installed before the gateway was restarted: the store is still of the running gateway's
    # schema, which only a gateway of this version, starting, upgrades.
    import lmdb
    import msgpack
    from core_ext import Store
    data = str(tmp_path / "data")
    Store(data).close()
    env = lmdb.open(data, max_dbs=32, subdir=True)
    meta = env.open_db(b"meta")
    with env.begin(write=True) as txn:
        txn.put(b"schema", msgpack.packb(2), db=meta)
    env.close()
    assert main(["verify-ledger", "--data-dir", data]) == 2
    assert "holds a store of schema 2, not of schema 3" in capsys.readouterr().err
    assert main(["status", "--data-dir", data, "--config", write(tmp_path, GOOD)]) == 2
    env = lmdb.open(data, max_dbs=32, subdir=True, readonly=True)
    meta = env.open_db(b"meta", create=False)  # before the read transaction: opening takes one of its own
    with env.begin() as txn:
        assert msgpack.unpackb(txn.get(b"schema", db=meta)) == 2
    env.close()


def test_keygen_for_another_party_does_not_call_it_the_stores_key(tmp_path, capsys):
    assert main(["keygen", "--out", str(tmp_path), "--name", "erp"]) == 0
    out = capsys.readouterr().out
    assert "erp.pub.pem" in out and "this store's batches" not in out
