"""The configuration loader: the spec's example, the embedded default, and every kind of mistake."""
from __future__ import annotations

import os
import re
import sys
import textwrap
import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway._config import (DEVICE_KINDS, Config, ConfigError, check_files, default_text, load_config, notes,
                             public_key_path)
from upstream import write_keypair

from ._pki import LocalCA

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The example of the spec (shared/spec/config.md), with its elided secrets filled in.
SPEC_EXAMPLE = '''
[store]
id = "S001"                      # the store id in every batch
data_dir = "data"                # LMDB environment and nothing else of value lives here
timezone = "Asia/Shanghai"       # store-local time for promotion windows and expiry dates

[keys]
signing_key = "keys/store.pem"   # Ed25519 private key, PEM; `gateway keygen` writes one (mode 0600)
erp_public_key = "keys/erp.pub.pem"

[pos_api]
listen = "127.0.0.1:8600"
[pos_api.tokens]                 # terminal name = bearer token
lane1 = "t-lane1-0123456789"

[upstream]
listen = "127.0.0.1:8700"
token = "env:TEST_ERP_TOKEN"     # the ERP's bearer token
tls_cert = ""                    # both set: HTTPS
tls_key = ""
batch_max_events = 500
batch_max_age_s = 5.0
retention_acked_s = 604800
push_url = ""                    # optional push mode

[metrics]
listen = "127.0.0.1:9600"        # /metrics, /healthz, /readyz

[[devices]]
name = "lane1"
kind = "ecr_serial"              # ecr_serial | scanner_serial | csv_drop
port = "/dev/ttyUSB0"            # a device path or a pyserial URL (loop://, socket://host:port)
baudrate = 115200

[[devices]]
name = "backroom"
kind = "scanner_serial"
port = "/dev/ttyACM0"
role = "receive"                 # receive | count | lane
lane = ""                        # with role = "lane"

[[devices]]
name = "legacy-pos"
kind = "csv_drop"
dir = "drop/legacy"
settle_s = 2.0
[devices.columns]                # gateway field = the POS file's column
id = "TicketNo"
code = "ItemCode"
qty = "Qty"
'''


def write(folder, text: str, name: str = "gateway.toml") -> str:
    path = os.path.join(folder, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(textwrap.dedent(text))
    return path


def problems_of(path: str, environ=None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ or {})
    return info.value.problems


def test_the_spec_example_loads_with_paths_from_its_own_folder(tmp_path, monkeypatch):
    folder = tmp_path / "etc"
    (folder / "drop" / "legacy").mkdir(parents=True)  # the csv_drop plugin wants its directory to exist
    path = write(folder, SPEC_EXAMPLE)
    monkeypatch.chdir(tmp_path)  # paths follow the file, not the current directory
    config = load_config(os.path.relpath(path), environ={"TEST_ERP_TOKEN": "erp-secret-42"})

    assert isinstance(config, Config) and config.path == path
    assert config.store.id == "S001" and config.store.timezone == "Asia/Shanghai"
    assert config.store.data_dir == str(folder / "data")
    assert config.keys.signing_key == str(folder / "keys" / "store.pem")
    assert config.keys.public_key == str(folder / "keys" / "store.pub.pem")
    assert config.keys.erp_public_key == str(folder / "keys" / "erp.pub.pem")
    assert config.pos_api.tokens == {"lane1": "t-lane1-0123456789"}
    assert config.upstream.token == "erp-secret-42"
    assert (config.pos_api.listen, config.upstream.listen, config.metrics.listen) == (
        "127.0.0.1:8600", "127.0.0.1:8700", "127.0.0.1:9600")
    assert config.upstream.batch_max_events == 500 and config.upstream.batch_max_age_s == 5.0
    assert config.upstream.retention_acked_s == 604800 and config.upstream.push_url == ""

    ecr, scanner, csv = config.devices
    assert ecr == {"name": "lane1", "kind": "ecr_serial", "port": "/dev/ttyUSB0", "baudrate": 115200,
                   "bytesize": 8, "parity": "N", "stopbits": 1}
    assert scanner["role"] == "receive" and scanner["lane"] == "" and scanner["terminator"] == "any"
    assert csv["dir"] == str(folder / "drop" / "legacy")
    assert csv["columns"] == {"id": "TicketNo", "code": "ItemCode", "qty": "Qty"}
    assert csv["settle_s"] == 2.0


def test_the_embedded_default_resolves_against_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    assert config.path is None and config.devices == ()
    assert config.store.data_dir == str(tmp_path / "data")
    assert config.keys.signing_key == str(tmp_path / "keys" / "store.pem")
    assert config.keys.erp_public_key == str(tmp_path / "keys" / "erp.pub.pem")
    # It listens where the spec's example does.
    example = tomllib_loads(SPEC_EXAMPLE)
    assert config.pos_api.listen == example["pos_api"]["listen"]
    assert config.upstream.listen == example["upstream"]["listen"]
    assert config.metrics.listen == example["metrics"]["listen"]
    assert "[pos_api.tokens]" in default_text()
    # Before first start: no keys yet, which is a file problem, not a problem of the file.
    assert [k for k, _ in check_files(config)] == ["keys.signing_key"]
    assert {k for k, _ in notes(config)} == {"keys.erp_public_key", "upstream.token", "pos_api.tokens"}


def tomllib_loads(text):
    import tomllib
    return tomllib.loads(text)


def test_the_commented_example_for_a_store_is_valid(tmp_path):
    with open(os.path.join(REPO, "configs", "example-store.toml"), encoding="utf-8") as f:
        text = f.read()
    # It names real machine paths; move them under the test's folder.
    text = text.replace("/var/lib/gateway", str(tmp_path / "var")).replace("/etc/gateway", str(tmp_path / "etc"))
    (tmp_path / "var" / "drop" / "legacy").mkdir(parents=True)
    env = {"GATEWAY_TOKEN_LANE1": "a" * 24, "GATEWAY_TOKEN_LANE2": "b" * 24, "GATEWAY_ERP_TOKEN": "c" * 24}
    config = load_config(write(tmp_path, text), environ=env)
    assert {d["kind"] for d in config.devices} == set(DEVICE_KINDS)
    assert config.upstream.tls_cert == str(tmp_path / "etc" / "tls" / "gateway.crt")
    assert config.pos_api.tokens == {"lane1": "a" * 24, "lane2": "b" * 24}
    lane_scanner = next(d for d in config.devices if d.get("role") == "lane")
    assert lane_scanner["lane"] == "lane2"


MINIMAL = '''
[store]
id = "S001"
'''

# (what is added to a minimal file, the key reported, words the problem must contain)
MISTAKES = [
    ('[[devices]]\nname = "lane1"\nkind = "ecr_serial"\nport = "/dev/ttyUSB0"\nbaudrate = "fast"\n',
     "devices[0].baudrate", "must be a positive integer, got 'fast'"),
    ('[[devices]]\nname = "lane1"\nkind = "ecr_serial"\nport = "/dev/ttyUSB0"\nbaudrate = true\n',
     "devices[0].baudrate", "must be a positive integer, got True"),
    ('[[devices]]\nname = "lane1"\nkind = "ecr_serial"\nport = "/dev/ttyUSB0"\nparity = "X"\n',
     "devices[0].parity", "must be one of N, E, O, M, S, got 'X'"),
    ('[[devices]]\nname = "lane1"\nkind = "ecr_serial"\nport = "/dev/ttyUSB0"\nstopbits = 3\n',
     "devices[0].stopbits", "must be 1, 1.5 or 2"),
    ('[[devices]]\nname = "lane1"\nkind = "ecr_serial"\nport = "/dev/ttyUSB0"\nbaudrat = 9600\n',
     "devices[0].baudrat", "unknown option of ecr_serial (did you mean 'baudrate'?)"),
    ('[[devices]]\nname = "lane1"\nkind = "ecr_serial"\n', "devices[0].port", "is required"),
    ('[[devices]]\nname = "lane1"\nkind = "ecr_seriel"\nport = "/dev/x"\n',
     "devices[0].kind", "did you mean 'ecr_serial'?"),
    ('[[devices]]\nname = "lane1"\nport = "/dev/x"\n', "devices[0].kind", "is required"),
    ('[[devices]]\nkind = "ecr_serial"\nport = "/dev/x"\n', "devices[0].name", "is required"),
    ('[[devices]]\nname = "lane 1"\nkind = "ecr_serial"\nport = "/dev/x"\n', "devices[0].name", "got 'lane 1'"),
    ('[[devices]]\nname = "a"\nkind = "ecr_serial"\nport = "/dev/x"\n'
     '[[devices]]\nname = "a"\nkind = "ecr_serial"\nport = "/dev/y"\n',
     "devices[1].name", "'a' is already the name of devices[0]"),
    ('[[devices]]\nname = "s"\nkind = "scanner_serial"\nport = "/dev/x"\n', "devices[0].role", "is required"),
    ('[[devices]]\nname = "s"\nkind = "scanner_serial"\nport = "/dev/x"\nrole = "recieve"\n',
     "devices[0].role", "did you mean 'receive'?"),
    ('[[devices]]\nname = "s"\nkind = "scanner_serial"\nport = "/dev/x"\nrole = "lane"\n',
     "devices[0].lane", 'is required with role = "lane"'),
    ('[[devices]]\nname = "s"\nkind = "scanner_serial"\nport = "/dev/x"\nrole = "count"\nlane = "l1"\n',
     "devices[0].lane", 'only used with role = "lane"'),
    ('[[devices]]\nname = "s"\nkind = "scanner_serial"\nport = "/dev/x"\nrole = "lane"\nlane = "l1"\n'
     'terminator = "nul"\n', "devices[0].terminator", "must be one of any, cr, lf, crlf"),
    ('[[devices]]\nname = "c"\nkind = "csv_drop"\ncolumns = {code = "A", qty = "B"}\n', "devices[0].dir",
     "is required"),
    ('[[devices]]\nname = "c"\nkind = "csv_drop"\ndir = "."\n', "devices[0].columns", "is required"),
    ('[[devices]]\nname = "c"\nkind = "csv_drop"\ndir = "."\ncolumns = {code = "A"}\n',
     "devices[0].columns.qty", "is required"),
    ('[[devices]]\nname = "c"\nkind = "csv_drop"\ndir = "."\nsettle_s = -1\ncolumns = {code = "A", qty = "B"}\n',
     "devices[0].settle_s", "-1"),
    ("TOP:devices = 3\n", "devices", "must be an array of tables"),
    ("[metrics]\nlisten = \"localhost\"\n", "metrics.listen", "must be host:port"),
    ("[metrics]\nlisten = \"127.0.0.1:70000\"\n", "metrics.listen", "from 0 to 65535"),
    ("[metrics]\nlisten = \"127.0.0.1:\u00b2\"\n", "metrics.listen", "from 0 to 65535"),
    ("[metrics]\nlisten = \"bad host:9600\"\n", "metrics.listen", "not a host name"),
    ("[metrics]\nlisten = \"[::zz]:9600\"\n", "metrics.listen", "not an IPv6 address"),
    ("[metrics]\nlisten = 9600\n", "metrics.listen", "must be a string, got 9600"),
    ("[metrics]\nlisten = \"127.0.0.1:8600\"\n", "metrics.listen", "same address as pos_api.listen"),
    ("[metrics]\nlisen = \"127.0.0.1:9600\"\n", "metrics.lisen", "unknown key (did you mean 'listen'?)"),
    ("[metric]\nlisten = \"127.0.0.1:9600\"\n", "metric", "unknown section (did you mean 'metrics'?)"),
    ("TOP:metrics = 1\n", "metrics", "must be a table"),
    ("[upstream]\ntls_cert = \"cert.pem\"\n", "upstream.tls_key", "give both tls_cert and tls_key"),
    ("[upstream]\ntls_key = \"key.pem\"\n", "upstream.tls_cert", "give both tls_cert and tls_key"),
    ("[upstream]\nbatch_max_events = 0\n", "upstream.batch_max_events", "must be a positive integer, got 0"),
    ("[upstream]\nbatch_max_events = 1e3\n", "upstream.batch_max_events", "must be a positive integer"),
    ("[upstream]\nbatch_max_age_s = 0\n", "upstream.batch_max_age_s", "positive number of seconds"),
    ("[upstream]\nbatch_max_age_s = nan\n", "upstream.batch_max_age_s", "positive number of seconds"),
    ("[upstream]\nretention_acked_s = -5\n", "upstream.retention_acked_s", "non-negative"),
    ("[upstream]\npush_url = \"ftp://erp.example/in\"\n", "upstream.push_url", "http:// or https://"),
    ("[upstream]\ntoken = \"env:NOT_SET_ANYWHERE\"\n", "upstream.token",
     "environment variable NOT_SET_ANYWHERE is not set"),
    ("[upstream]\ntoken = \"env:\"\n", "upstream.token", "names no environment variable"),
    ("[pos_api.tokens]\nlane1 = \"env:LANE1_TOKEN\"\n", "pos_api.tokens.lane1",
     "environment variable LANE1_TOKEN is not set"),
    ("[pos_api.tokens]\nlane1 = \"\"\n", "pos_api.tokens.lane1", "must not be empty"),
    ("[pos_api.tokens]\nlane1 = \"same-token-0001\"\nlane2 = \"same-token-0001\"\n", "pos_api.tokens.lane2",
     "same token as pos_api.tokens.lane1"),
    ("[pos_api]\ntokens = [\"a\"]\n", "pos_api.tokens", "must be a table"),
    ("[store]\n", None, None),  # a duplicate table is a TOML error, named by the file
]


@pytest.mark.parametrize("addition, key, words", MISTAKES)
def test_each_mistake_is_named_by_its_key(tmp_path, addition, key, words):
    # "TOP:" keys go before any table (after [store] they would be keys of the store).
    text = addition[4:] + MINIMAL if addition.startswith("TOP:") else MINIMAL + addition
    path = write(tmp_path, text)
    problems = problems_of(path)
    if key is None:
        assert problems[0][0] == path and "line" in problems[0][1]
        return
    assert any(k == key and words in p for k, p in problems), problems


@pytest.mark.parametrize("store_section, key, words", [
    ("[store]\n", "store.id", "is required"),
    ("[store]\nid = \"S 1\"\n", "store.id", "got 'S 1'"),
    ("[store]\nid = \"S1\"\ntimezone = \"Mars/Olympus_Mons\"\n", "store.timezone", "unknown time zone"),
    ("[store]\nid = \"S1\"\ntimezone = \"../../etc/passwd\"\n", "store.timezone", "unknown time zone"),
    ("[store]\nid = \"S1\"\ndata_dir = 5\n", "store.data_dir", "must be a string"),
    ("[store]\nid = \"S1\"\nname = \"x\"\n", "store.name", "unknown key"),
])
def test_store_mistakes(tmp_path, store_section, key, words):
    problems = problems_of(write(tmp_path, store_section))
    assert any(k == key and words in p for k, p in problems), problems


def test_every_problem_is_reported_at_once(tmp_path):
    path = write(tmp_path, '''
        [store]
        timezone = "Nowhere/Special"
        [metrics]
        listen = "nope"
        [[devices]]
        name = "lane1"
        kind = "ecr_serial"
        baudrate = "fast"
        ''')
    problems = problems_of(path)
    assert [k for k, _ in problems] == ["store.id", "store.timezone", "metrics.listen", "devices[0].port",
                                        "devices[0].baudrate"]
    assert str(ConfigError(problems)).startswith("store.id: is required")


def test_env_secrets_are_read_from_the_environment(tmp_path, monkeypatch):
    path = write(tmp_path, MINIMAL + '[pos_api.tokens]\nlane1 = "env:LANE1_TOKEN"\n[upstream]\ntoken = "env:ERP_T"\n')
    config = load_config(path, environ={"LANE1_TOKEN": "lane-secret", "ERP_T": "erp-secret"})
    assert config.pos_api.tokens == {"lane1": "lane-secret"} and config.upstream.token == "erp-secret"
    monkeypatch.setenv("LANE1_TOKEN", "from-os")
    monkeypatch.setenv("ERP_T", "erp-os")
    assert load_config(path).pos_api.tokens == {"lane1": "from-os"}  # os.environ by default
    monkeypatch.setenv("LANE1_TOKEN", "")
    assert problems_of(path, environ=dict(os.environ)) == [("pos_api.tokens.lane1", "must not be empty")]


def test_file_level_problems(tmp_path):
    missing = str(tmp_path / "absent.toml")
    assert problems_of(missing) == [(missing, "file not found")]
    bad = write(tmp_path, '[store]\nid = "S1"\nthis is not toml\n')
    [(key, problem)] = problems_of(bad)
    assert key == bad and "not valid TOML" in problem and "line 3" in problem
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"[store]\nid = \"\xff\xfe\"\n")
    [(key, problem)] = problems_of(str(binary))
    assert "not UTF-8" in problem


def test_listen_addresses_that_are_fine(tmp_path):
    for listen in ("0.0.0.0:9600", "[::1]:9600", "[::]:0", "gateway.local:9600", "localhost:0"):
        config = load_config(write(tmp_path, MINIMAL + f'[metrics]\nlisten = "{listen}"\n'), environ={})
        assert config.metrics.listen == listen
    # Port 0 on every listener is allowed (each gets its own free port), as tests do.
    text = MINIMAL + '[pos_api]\nlisten = "127.0.0.1:0"\n[upstream]\nlisten = "127.0.0.1:0"\n[metrics]\nlisten = "127.0.0.1:0"\n'
    assert load_config(write(tmp_path, text), environ={}).metrics.listen == "127.0.0.1:0"


def test_tls_files_are_resolved_and_checked_on_disk(tmp_path):
    path = write(tmp_path, MINIMAL + '[upstream]\ntls_cert = "tls/c.pem"\ntls_key = "tls/k.pem"\n')
    config = load_config(path, environ={})
    assert config.upstream.tls_cert == str(tmp_path / "tls" / "c.pem")
    keys = [k for k, _ in check_files(config)]
    assert keys == ["keys.signing_key", "upstream.tls_cert", "upstream.tls_key"]
    (tmp_path / "tls").mkdir()
    issued = LocalCA(tmp_path / "tls").issue("gateway.test", server=True)
    os.replace(issued.cert, tmp_path / "tls" / "c.pem")
    os.replace(issued.key, tmp_path / "tls" / "k.pem")
    (tmp_path / "keys").mkdir()
    write_keypair(str(tmp_path / "keys" / "store.pem"), str(tmp_path / "keys" / "store.pub.pem"))
    assert check_files(config) == []
    (tmp_path / "data").write_text("a file where the data directory should be")
    assert [k for k, _ in check_files(config)] == ["store.data_dir"]


def test_public_key_path():
    assert public_key_path("/k/store.pem") == "/k/store.pub.pem"
    assert public_key_path("/k/store") == "/k/store.pub.pem"


@pytest.fixture
def plugin(monkeypatch):
    """A device package for csv_drop whose check_options the test decides (a real module object)."""
    module = types.ModuleType("device_plugins.csv_drop")
    monkeypatch.setitem(sys.modules, "device_plugins.csv_drop", module)
    return module


CSV = MINIMAL + '[[devices]]\nname = "c"\nkind = "csv_drop"\ndir = "drop"\nfancy = 3\ncolumns = {code = "A", qty = "B"}\n'


def test_a_plugins_check_options_is_asked(tmp_path, plugin):
    seen = []

    def check_options(device):
        seen.append(device)
        return ["fancy: must be at most 2, not 3", "columns.code: column 'A' is reserved", "something broad"]

    plugin.check_options = check_options
    problems = problems_of(write(tmp_path, CSV))
    assert problems == [("devices[0].fancy", "must be at most 2, not 3"),
                        ("devices[0].columns.code", "column 'A' is reserved"),
                        ("devices[0]", "something broad")]
    # It sees the entry as the gateway will: path absolute, defaults filled, its own options kept.
    assert seen == [{"name": "c", "kind": "csv_drop", "dir": str(tmp_path / "drop"), "fancy": 3,
                     "columns": {"code": "A", "qty": "B"}, "settle_s": 2.0}]

    plugin.check_options = lambda device: []
    assert load_config(write(tmp_path, CSV), environ={}).devices[0]["fancy"] == 3


def test_a_plugin_that_fails_is_reported_not_raised(tmp_path, plugin):
    def check_options(device):
        raise KeyError("columns")

    plugin.check_options = check_options
    [(key, problem)] = problems_of(write(tmp_path, CSV))
    assert key == "devices[0]" and "KeyError" in problem


def test_without_check_options_unknown_options_are_reported(tmp_path, plugin):
    problems = problems_of(write(tmp_path, CSV))
    assert problems == [("devices[0].fancy", "unknown option of csv_drop")]


def test_a_missing_plugin_package_is_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "device_plugins.csv_drop", None)  # import raises ModuleNotFoundError
    text = CSV.replace("fancy = 3\n", "")
    assert load_config(write(tmp_path, text), environ={}).devices[0]["kind"] == "csv_drop"


# Arbitrary documents, written as TOML: the loader answers with a Config or a ConfigError, nothing else.
def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # finite only (see SCALARS): Python's repr is valid TOML for those
    if isinstance(value, str):
        return '"' + "".join(c if c.isalnum() or c in " ./:-_" else f"\\U{ord(c):08x}" for c in value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + "}"


KEYS = st.sampled_from(["id", "data_dir", "timezone", "listen", "tokens", "token", "tls_cert", "tls_key",
                        "batch_max_events", "batch_max_age_s", "retention_acked_s", "push_url", "name", "kind",
                        "port", "baudrate", "role", "lane", "dir", "columns", "settle_s", "x"])
SCALARS = (st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(st.characters(exclude_categories=("Cs",)), max_size=12) | st.sampled_from(DEVICE_KINDS + ("receive", "lane", "127.0.0.1:1", "env:X")))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
                      max_leaves=8)
SECTIONS = st.sampled_from(["store", "keys", "pos_api", "upstream", "metrics", "devices", "extra"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.dictionaries(SECTIONS, st.dictionaries(KEYS, VALUES, max_size=5)
                           | st.lists(st.dictionaries(KEYS, VALUES, max_size=5), max_size=3) | SCALARS, max_size=6))
def test_arbitrary_documents_give_a_config_or_a_config_error(tmp_path, doc):
    doc.setdefault("store", {"id": "S1"})  # mostly valid at the top, so the checks below it run too
    text = "".join(f'"{k}" = {toml_value(v)}\n' for k, v in doc.items())
    path = write(tmp_path, text)
    try:
        config = load_config(path, environ={"X": "x"})
    except ConfigError as exc:
        assert not any("not valid TOML" in p for _, p in exc.problems), text  # the generator writes valid TOML
        assert exc.problems and all(isinstance(k, str) and isinstance(p, str) and p for k, p in exc.problems)
    else:
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", config.store.id)


def test_a_serial_port_url_that_can_never_open_is_refused_at_check_time(tmp_path):
    path = write(tmp_path, '''
        [[devices]]
        name = "lane1"
        kind = "ecr_serial"
        port = "foo://nowhere"

        [[devices]]
        name = "lane2"
        kind = "ecr_serial"
        port = "loop://"
        ''')
    found = dict(problems_of(path))
    assert "devices[0].port" in found and "foo" in found["devices[0].port"]
    assert "devices[1].port" not in found  # loop:// is a pyserial URL the gateway opens


def test_check_config_names_each_mistake_of_the_nats_table(tmp_path, capsys):
    from gateway._cli import main as cli
    path = tmp_path / "g.toml"
    path.write_text('[store]\nid = "S.1"\n[nats]\nservers = ["nats://hub:4222", "http://hub", "nats://hub"]\n'
                    'prefix = "gw.*"\ntoken = "t"\ncreds = "store.creds"\ntrust_stream = "yes"\ntimeout = 1\n')
    assert cli(["check-config", str(path)]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "nats.timeout: unknown key",
        "nats.servers[1]: must be a nats:// or tls:// URL with a host, got 'http://hub'",
        "nats.servers[2]: must name the port (4222 is NATS's usual one), got 'nats://hub'",
        "nats.prefix: must be one or more subject tokens of letters, digits, '_' or '-' joined by '.' "
        "(no wildcards), got 'gw.*'",
        "nats.creds: give nats.token or nats.creds, not both",
        "nats.trust_stream: must be true or false, got 'yes'",
        "store.id: must not contain '.' when [nats] is used, got 'S.1'",
    ]


def test_a_nats_table_without_servers_is_no_link_and_its_files_are_checked(tmp_path):
    from gateway._config import check_files, load_config
    path = tmp_path / "g.toml"
    path.write_text('[store]\nid = "S001"\n')
    assert not load_config(str(path)).nats.enabled
    path.write_text('[store]\nid = "S001"\n[nats]\nservers = ["tls://hub:4222"]\ncreds = "k/s.creds"\n')
    config = load_config(str(path))
    assert config.nats.enabled and config.nats.creds == str(tmp_path / "k" / "s.creds")
    assert ("nats.creds", f"{tmp_path / 'k' / 's.creds'} does not exist") in check_files(config)
