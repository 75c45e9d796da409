"""configs/example-store.toml as an IT person uses it: copied, its folders and keys made, checked."""
from __future__ import annotations

import dataclasses
import os
import re

import pytest

from gateway._cli import main
from gateway._config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "configs", "example-store.toml")
SECRETS = {"GATEWAY_TOKEN_LANE1": "lane1-token", "GATEWAY_TOKEN_LANE2": "lane2-token",
           "GATEWAY_ERP_TOKEN": "erp-token"}


def example_text() -> str:
    with open(EXAMPLE, encoding="utf-8") as f:
        return f.read()


@pytest.fixture
def store_root(tmp_path, monkeypatch):
    """The example's absolute folders moved under tmp_path, its keys and TLS files made."""
    root = tmp_path / "root"
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)

    def place(text: str) -> str:
        text = text.replace('"/var/lib/gateway/', f'"{root}/var/').replace('"/etc/gateway/', f'"{root}/etc/')
        path = tmp_path / "gateway.toml"
        path.write_text(text, encoding="utf-8")
        return str(path)

    assert main(["keygen", "--out", str(root / "var" / "keys")]) == 0
    assert main(["keygen", "--out", str(root / "var" / "keys"), "--name", "erp"]) == 0
    (root / "etc" / "tls").mkdir(parents=True)
    # A self-signed certificate made by the cryptography package: check-config reads the files only.
    from datetime import datetime, timedelta, timezone

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.x509.oid import NameOID

    key = Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + timedelta(days=1)).sign(key, None))
    (root / "etc" / "tls" / "gateway.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (root / "etc" / "tls" / "gateway.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.chmod(root / "etc" / "tls" / "gateway.key", 0o600)  # a key others may read is refused
    return place


def test_the_example_passes_check_config_once_its_keys_and_files_exist(store_root, capsys):
    path = store_root(example_text())
    assert main(["check-config", path]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == "OK: S001, 4 devices"
    assert "note:" not in out  # with the ERP's key installed nothing is left to say


def test_every_commented_option_of_the_example_is_a_real_one(store_root, capsys):
    # The example shows optional keys as comments; uncommented, they must still be a valid file.
    text = re.sub(r"^# (\[devices\.payment_map\].*|\w+ = .*)$", r"\1", example_text(), flags=re.M)
    assert text.count("\npoll_s = ") == 1 and "\nBAR = " in text
    path = store_root(text)
    assert main(["check-config", path]) == 0, capsys.readouterr()
    config = load_config(path)
    csv = next(d for d in config.devices if d["kind"] == "csv_drop")
    assert csv["columns"]["payment"] == "Tender" and csv["payment_map"]["BAR"] == "cash"


def test_the_example_says_every_key_the_loader_knows(store_root):
    config = load_config(store_root(example_text()))
    text = example_text()
    shown = 0
    for section in ("store", "keys", "pos_api", "upstream", "metrics", "nats"):
        for field in dataclasses.fields(getattr(config, section)):
            assert re.search(rf"^{field.name} = |^\[{section}\.{field.name}\]", text, re.M), \
                f"[{section}] {field.name} is not shown in the example"
            shown += 1
    assert shown >= 15


def test_the_example_names_each_terminal_apart_from_every_device():
    config_text = example_text()
    tokens = re.search(r"^\[pos_api\.tokens\][^\n]*\n((?:\w+ = [^\n]*\n)+)", config_text, re.M).group(1)
    terminals = set(re.findall(r"^(\w+) = ", tokens, re.M))
    devices = set(re.findall(r'^\[\[devices\]\]\nname = "([^"]+)"', config_text, re.M))
    assert terminals and len(devices) == 4
    assert not terminals & devices, "a terminal and a device with one name would share one id space"


MISTAKES = [
    ("[metrics]\nlisten", "[metrics]\nlisen", "metrics.lisen: unknown key (did you mean 'listen'?)"),
    ('timezone = "Asia/Shanghai"', 'timezone = "Asia/Shangai"', "store.timezone: unknown time zone 'Asia/Shangai'"),
    ("batch_max_events = 500", 'batch_max_events = "500"', "upstream.batch_max_events: must be a positive integer"),
    ("baudrate = 115200", 'baudrate = "fast"', "devices[0].baudrate: must be a positive integer, got 'fast'"),
    ('role = "receive"', 'role = "recieve"', "devices[1].role: must be one of receive, count, lane"),
    ('code = "ItemCode"', '', "devices[3].columns.code: is required"),
]


@pytest.mark.parametrize("old,new,said", MISTAKES, ids=[m[2].split(":")[0] for m in MISTAKES])
def test_a_mistake_in_the_example_is_named_by_its_key(store_root, capsys, old, new, said):
    text = example_text()
    assert old in text
    assert main(["check-config", store_root(text.replace(old, new, 1))]) == 2
    out = capsys.readouterr().out
    assert said in out, out
    assert len(out.strip().splitlines()) == 1, out  # that mistake alone, nothing else blamed


def test_an_unset_secret_names_the_key_and_the_variable(store_root, capsys, monkeypatch):
    monkeypatch.delenv("GATEWAY_ERP_TOKEN")
    assert main(["check-config", store_root(example_text())]) == 2
    assert capsys.readouterr().out.strip() == "upstream.token: environment variable GATEWAY_ERP_TOKEN is not set"


def test_the_example_is_what_the_readme_and_configuration_page_point_to():
    for doc in ("README.md", "docs/configuration.md"):
        with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
            assert "configs/example-store.toml" in f.read(), doc
