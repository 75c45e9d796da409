"""The store's configuration file: one TOML file, validated whole before anything starts.

`load_config` collects every problem it finds (not only the first) so `gateway check-config` can list
them all, each as the dotted key and words for a person. Paths are made absolute against the file's
own folder; for the embedded default (no file) against the current directory, so `gateway run` from a
checkout keeps its data and keys beside it rather than inside the installed package.
"""
from __future__ import annotations

import difflib
import importlib
import ipaddress
import math
import os
import re
import tomllib
import zoneinfo
from dataclasses import dataclass, field
from importlib import resources
from urllib.parse import urlsplit

from core_ext import limits
from core_ext._tokens import SHA256_PREFIX, digest_of as token_digest, digest_problem as token_digest_problem

from . import _tls

DEVICE_KINDS = ("ecr_serial", "scanner_serial", "csv_drop")
SCANNER_ROLES = ("receive", "count", "lane")
SCANNER_TERMINATORS = ("any", "cr", "lf", "crlf")
PARITIES = ("N", "E", "O", "M", "S")
ENV_PREFIX = "env:"

# Names become id prefixes upstream ("<source>:<id>") and metric labels: keep them short and plain.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_SUBJECT = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
NATS_SCHEMES = ("nats", "tls")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


@dataclass(frozen=True, slots=True)
class StoreConfig:
    id: str
    data_dir: str
    timezone: str
    day_starts_at: str = "00:00"


@dataclass(frozen=True, slots=True)
class KeysConfig:
    signing_key: str
    erp_public_key: str

    @property
    def public_key(self) -> str:
        """Where the store's public key lives: beside the private one, `store.pem` -> `store.pub.pem`."""
        return public_key_path(self.signing_key)


@dataclass(frozen=True, slots=True)
class PosApiConfig:
    listen: str
    tokens: dict = field(default_factory=dict)  # terminal name -> bearer token or "sha256:<hex>" (env: resolved)
    tls_cert: str = ""       # both set: HTTPS
    tls_key: str = ""
    tls_client_ca: str = ""  # set: terminals need a certificate this CA signed, named as their terminal


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    listen: str
    token: str
    tls_cert: str
    tls_key: str
    batch_max_events: int
    batch_max_age_s: float
    retention_acked_s: float
    push_url: str
    push_token: str = ""   # bearer token sent with pushed batches (optional)
    tls_client_ca: str = ""  # set: the ERP needs a client certificate this CA signed
    tls_client_name: str = ""  # set: ... whose subject CN is this name


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: str
    page_token: str = ""   # the status page's token (env: resolved); empty: no status page
    tls_cert: str = ""     # both set: HTTPS
    tls_key: str = ""


@dataclass(frozen=True, slots=True)
class NatsConfig:
    """The chain's NATS JetStream hub (chain-nats.md); no servers: no link, UP/1 alone."""

    servers: tuple = ()
    prefix: str = "gw"
    token: str = ""
    creds: str = ""
    tls_ca: str = ""
    trust_stream: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.servers)


@dataclass(frozen=True, slots=True)
class Config:
    store: StoreConfig
    keys: KeysConfig
    pos_api: PosApiConfig
    upstream: UpstreamConfig
    metrics: MetricsConfig
    devices: tuple = ()       # plain dicts: "name", "kind" and the kind's options, paths absolute
    path: str | None = None   # the file it was read from; None for the embedded default
    nats: NatsConfig = NatsConfig()


class ConfigError(Exception):
    """The configuration cannot be used; `.problems` lists every (key, problem) found."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = list(problems)
        super().__init__("; ".join(f"{key}: {problem}" for key, problem in self.problems))


def public_key_path(private_path: str) -> str:
    root, ext = os.path.splitext(private_path)
    return f"{root}.pub{ext or '.pem'}"


def default_text() -> str:
    """The embedded default configuration, as shipped inside the package."""
    return resources.files("gateway").joinpath("default.toml").read_text(encoding="utf-8")


def load_config(path: str | None, *, environ: dict | None = None, resolve_secrets: bool = True) -> Config:
    """Read and validate the file at `path` (None: the embedded default); raise ConfigError.

    `resolve_secrets=False` leaves every `env:` secret empty instead of reading it: for commands
    such as verify-ledger that need the data directory, not the tokens.
    """
    environ = os.environ if environ is None else environ
    if path is None:
        text, where, base = default_text(), "default.toml", os.getcwd()
        config_path = None
    else:
        config_path = os.path.abspath(path)
        where, base = path, os.path.dirname(config_path)
        try:
            with open(config_path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raise ConfigError([(path, "file not found")]) from None
        except OSError as exc:
            raise ConfigError([(path, f"cannot read the file: {exc.strerror or exc}")]) from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError([(path, f"not UTF-8 text (byte {exc.start})")]) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([(where, f"not valid TOML: {exc}")]) from None
    return _Loader(base, environ, resolve_secrets=resolve_secrets).build(doc, config_path)


# Defaults of keys a file may leave out; `store.id` alone has none (it names the store upstream).
_DEFAULTS = {
    "store": {"id": None, "data_dir": "data", "timezone": "UTC", "day_starts_at": "00:00"},
    "keys": {"signing_key": "keys/store.pem", "erp_public_key": "keys/erp.pub.pem"},
    "pos_api": {"listen": "127.0.0.1:8600", "tokens": {}, "tls_cert": "", "tls_key": "", "tls_client_ca": ""},
    "upstream": {"listen": "127.0.0.1:8700", "token": "", "tls_cert": "", "tls_key": "", "tls_client_ca": "",
                 "tls_client_name": "",
                 "batch_max_events": 500, "batch_max_age_s": 5.0, "retention_acked_s": 604800,
                 "push_url": "", "push_token": ""},
    "metrics": {"listen": "127.0.0.1:9600", "page_token": "", "tls_cert": "", "tls_key": ""},
    "nats": {"servers": [], "prefix": "gw", "token": "", "creds": "", "tls_ca": "", "trust_stream": False},
}
_TOP_LEVEL = (*_DEFAULTS, "devices")

_SERIAL_OPTIONS = {"port": None, "baudrate": 115200, "bytesize": 8, "parity": "N", "stopbits": 1}
# Per kind: option -> default (None: required, or optional without a default here; see _check_*).
DEVICE_OPTIONS = {
    "ecr_serial": dict(_SERIAL_OPTIONS),
    "scanner_serial": {**_SERIAL_OPTIONS, "role": None, "lane": "", "terminator": "any"},
    "csv_drop": {"dir": None, "settle_s": 2.0, "columns": None, "poll_s": None, "qty_factor": None,
                 "date_format": None, "delimiter": None, "encoding": None, "price_format": None,
                 "payment_map": None, "max_bytes": None, "slice_baskets": None, "slice_lines": None},
}


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Loader:
    """One pass over the document, collecting problems instead of stopping at the first."""

    def __init__(self, base: str, environ, *, resolve_secrets: bool = True):
        self.base = base
        self.environ = environ
        self.resolve_secrets = resolve_secrets
        self.problems: list[tuple[str, str]] = []

    def problem(self, key: str, text: str) -> None:
        self.problems.append((key, text))

    def build(self, doc: dict, path: str | None) -> Config:
        for key in doc:
            if key not in _TOP_LEVEL:
                self.problem(key, f"unknown section{_did_you_mean(key, _TOP_LEVEL)}")
        sections = {name: self.section(doc, name) for name in _DEFAULTS}
        config = Config(
            store=self.store(sections["store"]),
            keys=self.keys(sections["keys"]),
            pos_api=self.pos_api(sections["pos_api"]),
            upstream=self.upstream(sections["upstream"]),
            metrics=self.metrics(sections["metrics"]),
            devices=self.devices(doc.get("devices", [])),
            path=path,
            nats=self.nats(sections["nats"]),
        )
        self.cross_checks(config)
        if self.problems:
            raise ConfigError(self.problems)
        return config

    def section(self, doc: dict, name: str) -> dict:
        """The section merged over its defaults, unknown keys reported and dropped."""
        given = doc.get(name, {})
        if not isinstance(given, dict):
            self.problem(name, f"must be a table ([{name}]), got {given!r}")
            given = {}
        merged = dict(_DEFAULTS[name])
        for key, value in given.items():
            if key in merged:
                merged[key] = value
            else:
                self.problem(f"{name}.{key}", f"unknown key{_did_you_mean(key, merged)}")
        return merged

    # Value checks: each returns a usable value (the default shape) even when it reports a problem.
    def string(self, key: str, value, *, empty_ok: bool = True) -> str:
        if not isinstance(value, str):
            self.problem(key, f"must be a string, got {value!r}")
            return ""
        if not empty_ok and not value.strip():
            self.problem(key, "must not be empty")
        return value

    def positive_int(self, key: str, value, *, maximum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            self.problem(key, f"must be a positive integer, got {value!r}")
            return 1
        if maximum is not None and value > maximum:
            self.problem(key, f"must be at most {maximum}, got {value!r}")
        return value

    def seconds(self, key: str, value, *, positive: bool) -> float:
        ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
              and (value > 0 if positive else value >= 0))
        if not ok:
            kind = "a positive" if positive else "a non-negative"
            self.problem(key, f"must be {kind} number of seconds, got {value!r}")
            return 1.0
        return float(value)

    def choice(self, key: str, value, choices) -> str:
        if value not in choices:
            hint = _did_you_mean(value, choices) if isinstance(value, str) else ""
            self.problem(key, f"must be one of {', '.join(choices)}, got {value!r}{hint}")
        return value

    def path(self, key: str, value, *, empty_ok: bool = False) -> str:
        value = self.string(key, value, empty_ok=empty_ok)
        if not value:
            return ""
        return os.path.normpath(os.path.join(self.base, os.path.expanduser(value)))

    def secret(self, key: str, value) -> str:
        """A secret, or `env:NAME` to read it from the environment."""
        value = self.string(key, value)
        if not value.startswith(ENV_PREFIX):
            return value
        name = value[len(ENV_PREFIX):]
        if not name:
            self.problem(key, "names no environment variable after 'env:'")
            return ""
        if not self.resolve_secrets:
            return ""
        if name not in self.environ:
            self.problem(key, f"environment variable {name} is not set")
            return ""
        return self.environ[name]

    def listen(self, key: str, value) -> str:
        if not isinstance(value, str):
            return self.string(key, value)
        host, sep, port = value.rpartition(":")
        if not sep or not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
            self.problem(key, f"must be host:port with a port from 0 to 65535, got {value!r}")
            return value
        if host.startswith("[") and host.endswith("]"):
            try:
                ipaddress.IPv6Address(host[1:-1])
            except ValueError:
                self.problem(key, f"{host!r} is not an IPv6 address")
        elif not _HOSTNAME.fullmatch(host):
            self.problem(key, f"{host!r} is not a host name or IPv4 address (IPv6 goes in brackets: [::1]:{port})")
        return value

    def name(self, key: str, value) -> str:
        if value is None:
            self.problem(key, "is required")
            return ""
        if not isinstance(value, str):
            return self.string(key, value)
        if not _NAME.fullmatch(value):
            self.problem(key, f"must be 1 to 32 letters, digits, '_', '.' or '-' (starting with a letter or digit), got {value!r}")
        return value

    # Sections.
    def store(self, s: dict) -> StoreConfig:
        if s["id"] is None:
            self.problem("store.id", "is required (the store id in every batch)")
            store_id = ""
        else:
            store_id = self.name("store.id", s["id"])
        timezone = self.string("store.timezone", s["timezone"])
        if timezone:
            try:
                zoneinfo.ZoneInfo(timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                self.problem("store.timezone", f"unknown time zone {timezone!r} (an IANA name such as 'Asia/Shanghai')")
        from core_ext._days import parse_day_start  # the one reading of "HH:MM", as the core turns days

        day_starts_at = self.string("store.day_starts_at", s["day_starts_at"])
        try:
            parse_day_start(day_starts_at)
        except ValueError as exc:
            self.problem("store.day_starts_at", f"{exc}, the local time at which the business day turns")
            day_starts_at = "00:00"
        return StoreConfig(id=store_id, data_dir=self.path("store.data_dir", s["data_dir"]), timezone=timezone,
                           day_starts_at=day_starts_at)

    def keys(self, s: dict) -> KeysConfig:
        return KeysConfig(signing_key=self.path("keys.signing_key", s["signing_key"]),
                          erp_public_key=self.path("keys.erp_public_key", s["erp_public_key"]))

    def pos_api(self, s: dict) -> PosApiConfig:
        tokens = {}
        given = s["tokens"]
        if not isinstance(given, dict):
            self.problem("pos_api.tokens", f"must be a table of terminal name = token, got {given!r}")
            given = {}
        seen = {}
        for terminal, value in given.items():
            key = f"pos_api.tokens.{terminal}"
            self.name(key, terminal)
            before = len(self.problems)
            token = self.bearer_token(key, value)
            digest = token_digest(token) if token else b""
            if not token and len(self.problems) == before:  # empty in the file or in the environment
                self.problem(key, "must not be empty")
            elif token and digest in seen:
                # A shared token would make the terminal (and so the id prefix) ambiguous; a token and
                # its own sha256: form are one token.
                self.problem(key, f"is the same token as pos_api.tokens.{seen[digest]}")
            if token:
                seen.setdefault(digest, terminal)
            tokens[terminal] = token
        tls_cert, tls_key = self.tls_pair("pos_api", s)
        client_ca = self.client_ca("pos_api", s, tls_cert)
        return PosApiConfig(listen=self.listen("pos_api.listen", s["listen"]), tokens=tokens,
                            tls_cert=tls_cert, tls_key=tls_key, tls_client_ca=client_ca)

    def bearer_token(self, key: str, value) -> str:
        """A token the gateway checks: the token itself, `sha256:<hex>` of it, or `env:NAME`."""
        token = self.secret(key, value)
        problem = token_digest_problem(token)
        if problem:
            self.problem(key, problem)
            return ""
        return token

    def tls_pair(self, section: str, s: dict) -> tuple[str, str]:
        tls_cert = self.path(f"{section}.tls_cert", s["tls_cert"], empty_ok=True)
        tls_key = self.path(f"{section}.tls_key", s["tls_key"], empty_ok=True)
        if bool(tls_cert) != bool(tls_key):
            missing = f"{section}.tls_key" if tls_cert else f"{section}.tls_cert"
            self.problem(missing, "must be set too: give both tls_cert and tls_key (HTTPS) or neither")
        return tls_cert, tls_key

    def client_ca(self, section: str, s: dict, tls_cert: str) -> str:
        client_ca = self.path(f"{section}.tls_client_ca", s["tls_client_ca"], empty_ok=True)
        if client_ca and not tls_cert:
            # Client certificates are part of a TLS handshake: without TLS there is none to ask for.
            self.problem(f"{section}.tls_client_ca", "needs tls_cert and tls_key: client certificates come with TLS")
        return client_ca

    def upstream(self, s: dict) -> UpstreamConfig:
        tls_cert, tls_key = self.tls_pair("upstream", s)
        client_ca = self.client_ca("upstream", s, tls_cert)
        push_url = self.string("upstream.push_url", s["push_url"])
        if push_url:
            parts = urlsplit(push_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                self.problem("upstream.push_url", f"must be an http:// or https:// URL, got {push_url!r}")
        client_name = self.string("upstream.tls_client_name", s["tls_client_name"])
        if client_name and not client_ca:
            # The name is read off the client certificate: without a CA to ask for one, there is none.
            self.problem("upstream.tls_client_name", "needs tls_client_ca: the name is checked on the ERP's "
                                                     "client certificate")
        elif client_name and (problem := limits.text_problem(client_name, limits.MAX_TEXT)):
            self.problem("upstream.tls_client_name", problem)
        return UpstreamConfig(
            listen=self.listen("upstream.listen", s["listen"]),
            token=self.bearer_token("upstream.token", s["token"]),
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_client_ca=client_ca,
            tls_client_name=client_name,
            batch_max_events=self.positive_int("upstream.batch_max_events", s["batch_max_events"],
                                               maximum=limits.MAX_BATCH_EVENTS),
            batch_max_age_s=self.seconds("upstream.batch_max_age_s", s["batch_max_age_s"], positive=True),
            retention_acked_s=self.seconds("upstream.retention_acked_s", s["retention_acked_s"], positive=False),
            push_url=push_url,
            push_token=self.secret("upstream.push_token", s["push_token"]),
        )

    def metrics(self, s: dict) -> MetricsConfig:
        token = self.bearer_token("metrics.page_token", s["page_token"])
        if token and len(token) < 16 and not token.startswith(SHA256_PREFIX):
            # The page shows stock and sales to whoever holds it: a guessable token is no lock.
            self.problem("metrics.page_token", "must be at least 16 characters (or empty: no status page)")
        tls_cert, tls_key = self.tls_pair("metrics", s)
        return MetricsConfig(listen=self.listen("metrics.listen", s["listen"]), page_token=token,
                             tls_cert=tls_cert, tls_key=tls_key)

    def nats(self, s: dict) -> NatsConfig:
        servers = s["servers"]
        if not isinstance(servers, list) or not all(isinstance(u, str) for u in servers):
            self.problem("nats.servers", f"must be an array of URLs such as \"nats://hub.example:4222\", got {servers!r}")
            servers = []
        for i, url in enumerate(servers):
            problem = nats_url_problem(url)
            if problem:
                self.problem(f"nats.servers[{i}]", problem)
        prefix = self.string("nats.prefix", s["prefix"])
        if not _SUBJECT.fullmatch(prefix):
            self.problem("nats.prefix", "must be one or more subject tokens of letters, digits, '_' or '-' joined "
                                        f"by '.' (no wildcards), got {prefix!r}")
        token = self.secret("nats.token", s["token"])
        creds = self.path("nats.creds", s["creds"], empty_ok=True)
        if token and creds:
            self.problem("nats.creds", "give nats.token or nats.creds, not both")
        trust = s["trust_stream"]
        if not isinstance(trust, bool):
            self.problem("nats.trust_stream", f"must be true or false, got {trust!r}")
            trust = False
        return NatsConfig(servers=tuple(servers), prefix=prefix, token=token, creds=creds,
                          tls_ca=self.path("nats.tls_ca", s["tls_ca"], empty_ok=True), trust_stream=trust)

    def devices(self, given) -> tuple:
        if not isinstance(given, list):
            self.problem("devices", f"must be an array of tables ([[devices]]), got {given!r}")
            return ()
        devices, names = [], {}
        for i, device in enumerate(given):
            key = f"devices[{i}]"
            if not isinstance(device, dict):
                self.problem(key, f"must be a table ([[devices]]), got {device!r}")
                continue
            device = self.device(key, device)
            name = device.get("name")
            if isinstance(name, str) and name:
                if name in names:
                    self.problem(f"{key}.name", f"{name!r} is already the name of devices[{names[name]}]")
                names.setdefault(name, i)
            devices.append(device)
        return tuple(devices)

    def device(self, key: str, given: dict) -> dict:
        name = self.name(f"{key}.name", given.get("name"))
        kind = given.get("kind")
        if kind is None:
            self.problem(f"{key}.kind", f"is required: one of {', '.join(DEVICE_KINDS)}")
            return dict(given)
        if kind not in DEVICE_KINDS:
            self.choice(f"{key}.kind", kind, DEVICE_KINDS)
            return dict(given)
        module = self.plugin(key, kind)
        check_options = getattr(module, "check_options", None)
        options = DEVICE_OPTIONS[kind]
        device = {"name": name, "kind": kind}
        for option, value in given.items():
            if option in ("name", "kind"):
                continue
            # A plugin with check_options knows its own options (it may have more than listed here).
            if option not in options and check_options is None:
                self.problem(f"{key}.{option}", f"unknown option of {kind}{_did_you_mean(option, options)}")
                continue
            device[option] = value
        for option, default in options.items():
            if default is not None:
                device.setdefault(option, default)
        before = len(self.problems)
        check = _check_serial if kind in ("ecr_serial", "scanner_serial") else _check_csv
        check(self, key, device)
        if check_options is not None:
            reported = {k for k, _ in self.problems[before:]}
            for option, text in self.plugin_checks(key, device, check_options):
                if option not in reported:  # the same key said twice in other words helps nobody
                    self.problem(option, text)
        return device

    def plugin(self, key: str, kind: str):
        """The kind's package, or None when it is not installed here (the run will say so)."""
        module_name = f"device_plugins.{kind}"
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name in ("device_plugins", module_name):
                return None
            self.problem(f"{key}.kind", f"the {module_name} package cannot be imported: {exc}")
        except Exception as exc:  # a broken plugin must not hide the file's other problems
            self.problem(f"{key}.kind", f"the {module_name} package cannot be imported: {exc!r}")
        return None

    @staticmethod
    def plugin_checks(key: str, device: dict, check_options) -> list[tuple[str, str]]:
        """The plugin's own verdict on a device entry, as (key, problem) pairs."""
        try:
            found = list(check_options(dict(device)))
        except Exception as exc:
            return [(key, f"the plugin's option check failed: {exc!r}")]
        problems = []
        for text in found:
            # "columns.qty: is required" names its option: report it under that key.
            option, sep, rest = str(text).partition(":")
            option = option.strip()
            if sep and rest.strip() and re.fullmatch(r"[A-Za-z_][\w.\[\]-]*", option):
                problems.append((f"{key}.{option}", rest.strip()))
            else:
                problems.append((key, str(text)))
        return problems

    def cross_checks(self, config: Config) -> None:
        if config.nats.enabled and "." in config.store.id:
            # The store id is one token of the NATS subjects: a '.' would split it in two.
            self.problem("store.id", f"must not contain '.' when [nats] is used, got {config.store.id!r}")
        seen = {}
        for key, listen in (("pos_api.listen", config.pos_api.listen), ("upstream.listen", config.upstream.listen),
                            ("metrics.listen", config.metrics.listen)):
            if listen.endswith(":0"):
                continue  # port 0: each listener gets its own free port
            if listen in seen:
                self.problem(key, f"is the same address as {seen[listen]} ({listen})")
            seen.setdefault(listen, key)


def _check_serial(loader: _Loader, key: str, device: dict) -> None:
    if "port" not in device:
        loader.problem(f"{key}.port", "is required: a device path such as /dev/ttyUSB0 or a pyserial URL")
    elif loader.string(f"{key}.port", device["port"], empty_ok=False):
        from device_plugins._serial_port import port_problem
        problem = port_problem(device["port"])
        if problem:
            loader.problem(f"{key}.port", problem)
    loader.positive_int(f"{key}.baudrate", device["baudrate"], maximum=4_000_000)
    if device["bytesize"] not in (5, 6, 7, 8) or isinstance(device["bytesize"], bool):
        loader.problem(f"{key}.bytesize", f"must be 5, 6, 7 or 8, got {device['bytesize']!r}")
    loader.choice(f"{key}.parity", device["parity"], PARITIES)
    if device["stopbits"] not in (1, 1.5, 2) or isinstance(device["stopbits"], bool):
        loader.problem(f"{key}.stopbits", f"must be 1, 1.5 or 2, got {device['stopbits']!r}")
    if device["kind"] != "scanner_serial":
        return
    if "role" not in device:
        loader.problem(f"{key}.role", f"is required: one of {', '.join(SCANNER_ROLES)}")
    else:
        loader.choice(f"{key}.role", device["role"], SCANNER_ROLES)
    lane = loader.string(f"{key}.lane", device["lane"])
    if device.get("role") == "lane" and not lane:
        loader.problem(f"{key}.lane", "is required with role = \"lane\": the lane whose basket the scans fill")
    elif lane and device.get("role") != "lane":
        loader.problem(f"{key}.lane", f"is only used with role = \"lane\" (role is {device.get('role')!r})")
    loader.choice(f"{key}.terminator", device["terminator"], SCANNER_TERMINATORS)


def _check_csv(loader: _Loader, key: str, device: dict) -> None:
    if "dir" not in device:
        loader.problem(f"{key}.dir", "is required: the directory the POS drops its files into")
    else:
        device["dir"] = loader.path(f"{key}.dir", device["dir"])
    device["settle_s"] = loader.seconds(f"{key}.settle_s", device["settle_s"], positive=False)
    columns = device.get("columns")
    if columns is None:
        loader.problem(f"{key}.columns", "is required: a table of gateway field = the file's column")
    elif not isinstance(columns, dict):
        loader.problem(f"{key}.columns", f"must be a table of gateway field = the file's column, got {columns!r}")
    else:
        for fld, column in columns.items():
            loader.string(f"{key}.columns.{fld}", column, empty_ok=False)
        for needed in ("code", "qty"):
            if needed not in columns:
                loader.problem(f"{key}.columns.{needed}", "is required (which column holds it)")
    # The other options (qty_factor, date_format, delimiter, encoding, ...) are the plugin's to judge.


def nats_url_problem(url: str) -> str:
    """Why `url` is not a NATS server URL ("" when it is one)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{url!r} is not a URL ({exc})"
    if parts.scheme not in NATS_SCHEMES or not parts.hostname:
        return f"must be a nats:// or tls:// URL with a host, got {url!r}"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"must be scheme://host:port only, got {url!r}"
    if port is None:
        return f"must name the port (4222 is NATS's usual one), got {url!r}"
    return ""


def check_files(config: Config) -> list[tuple[str, str]]:
    """Problems with the files the configuration names, as they are on this machine now.

    Kept apart from `load_config` because the embedded default is valid before its keys exist
    (`gateway run` makes them on first start). The ERP public key may be absent: see `notes`.
    """
    problems = []
    if not os.path.isfile(config.keys.signing_key):
        folder, stem = os.path.split(config.keys.signing_key)
        name = "" if stem == "store.pem" else f" --name {stem.removesuffix('.pem')}"
        problems.append(("keys.signing_key", f"{config.keys.signing_key} does not exist "
                         f"(`gateway keygen --out {folder}{name}` writes one)"))
    elif not os.access(config.keys.signing_key, os.R_OK):
        problems.append(("keys.signing_key", f"{config.keys.signing_key} cannot be read by this user"))
    elif _tls.key_mode_problem(config.keys.signing_key):
        problems.append(("keys.signing_key", _tls.key_mode_problem(config.keys.signing_key)))
    for section in ("pos_api", "upstream", "metrics"):
        part = getattr(config, section)
        if part.tls_cert and part.tls_key:
            problems += _tls.pair_problems(section, part.tls_cert, part.tls_key)
        client_ca = getattr(part, "tls_client_ca", "")
        if client_ca:
            problem = _tls.client_ca_problem(client_ca)
            if problem:
                problems.append((f"{section}.tls_client_ca", problem))
    for key, path in (("nats.creds", config.nats.creds), ("nats.tls_ca", config.nats.tls_ca)):
        if path and not os.path.isfile(path):
            problems.append((key, f"{path} does not exist"))
        elif path and not os.access(path, os.R_OK):
            problems.append((key, f"{path} cannot be read by this user"))
        elif key == "nats.creds" and path and _tls.key_mode_problem(path):
            problems.append((key, _tls.key_mode_problem(path)))
    data_dir = config.store.data_dir
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        problems.append(("store.data_dir", f"{data_dir} exists and is not a directory"))
    elif os.path.isdir(data_dir) and not os.access(data_dir, os.W_OK):
        problems.append(("store.data_dir", f"{data_dir} is not writable by this user"))
    return problems


def secret_file_problems(config: Config) -> list[tuple[str, str]]:
    """The signing key, TLS keys and NATS credentials that users other than the owner may read.

    Checked again by `gateway run` as it starts, so a key opened up since `check-config` ran is
    still refused.
    """
    found = []
    for key, path in (("keys.signing_key", config.keys.signing_key), ("pos_api.tls_key", config.pos_api.tls_key),
                      ("upstream.tls_key", config.upstream.tls_key), ("metrics.tls_key", config.metrics.tls_key),
                      ("nats.creds", config.nats.creds)):
        problem = _tls.key_mode_problem(path) if path else ""
        if problem:
            found.append((key, problem))
    return found


def notes(config: Config) -> list[tuple[str, str]]:
    """What is allowed but worth saying: parts that will refuse their callers as configured."""
    found = []
    if not os.path.isfile(config.keys.erp_public_key):
        found.append(("keys.erp_public_key", f"{config.keys.erp_public_key} does not exist: "
                      "master documents will be refused (403) until it is installed"))
    if not config.upstream.token:
        found.append(("upstream.token", "is empty: the upstream API will refuse every request (401)"))
    if not config.pos_api.tokens:
        found.append(("pos_api.tokens", "names no terminal: POS/1 will refuse every request (401)"))
    for i, device in enumerate(config.devices):
        if device.get("name") in config.pos_api.tokens:
            # Ids are known upstream as "<source>:<id>": one name for two sources mixes their ids.
            found.append((f"devices[{i}].name", f"{device['name']!r} is also a POS/1 terminal name: a sale id "
                          "used by both would be taken for a repeat; give them different names"))
    return found
