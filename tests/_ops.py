"""Helpers of the ops kit's tests: a gateway with every part registered, its families, PromQL names."""
from __future__ import annotations

import http.client
import re
import textwrap
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

from upstream import write_keypair


def full_config(root) -> str:
    """A store's configuration with every part that has metrics: each device kind, POS/1, UP/1 and a
    NATS hub (on a loopback port nothing listens on: the link starts and reports the hub unreachable)."""
    keys = root / "keys"
    keys.mkdir()
    write_keypair(str(keys / "store.pem"), str(keys / "store.pub.pem"))
    write_keypair(str(keys / "erp.pem"), str(keys / "erp.pub.pem"))
    (root / "drop").mkdir()
    path = root / "gateway.toml"
    path.write_text(textwrap.dedent(f"""\
        [store]
        id = "S-OPS"
        data_dir = "data"
        timezone = "UTC"

        [keys]
        signing_key = "keys/store.pem"
        erp_public_key = "keys/erp.pub.pem"

        [pos_api]
        listen = "127.0.0.1:0"
        [pos_api.tokens]
        till1 = "till-token-0123456789"

        [upstream]
        listen = "127.0.0.1:0"
        token = "erp-token-0123456789"

        [metrics]
        listen = "127.0.0.1:0"

        [nats]
        servers = ["nats://127.0.0.1:9"]

        [[devices]]
        name = "lane1"
        kind = "ecr_serial"
        port = "{root / 'tty' / 'lane1'}"

        [[devices]]
        name = "receiving"
        kind = "scanner_serial"
        port = "{root / 'tty' / 'receiving'}"
        role = "receive"

        [[devices]]
        name = "legacy"
        kind = "csv_drop"
        dir = "drop"
        [devices.columns]
        id = "TicketNo"
        code = "ItemCode"
        qty = "Qty"
        """), encoding="utf-8")
    return str(path)


def scrape(url: str) -> str:
    """GET `url` (a /metrics address) in the Prometheus text format; blocking."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("GET", parts.path or "/metrics")
        response = conn.getresponse()
        body = response.read().decode("utf-8")
        assert response.status == 200, body
        return body
    finally:
        conn.close()


def exported_names(text: str) -> set[str]:
    """Every name a query may use over this exposition: each family (as `# TYPE` names it) and each
    sample's name (`_total`, `_bucket`, `_sum`, `_count`, `_created`), samples or not."""
    names = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


# PromQL words that look like names but are not metrics.
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset",
             "bool", "inf", "nan", "atan2"}


def promql_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (Grafana's `$variables` allowed in matchers and ranges).

    Strings, label matchers `{...}`, ranges `[...]` and the label lists of `by`, `without`, `on`,
    `ignoring` and `group_*` go first; what is left that is a name and not a function call or a
    keyword is a metric."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+\S+", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([a-zA-Z_:][\w:]*)\s*(\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS or re.fullmatch(r"\d+[smhdwy]", name):
            continue
        names.add(name)
    return names
