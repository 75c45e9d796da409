"""Members' data kept small: a store day, then every place a name or a token could leak is searched.

The names reach the till that asked for them (the member lookup) and nowhere else: not a log line,
a batch (decompressed), a metric, the status page; batches carry member ids. No token shows either.
"""
from __future__ import annotations

import logging
import textwrap

import trio

from gateway._app import Gateway
from gateway._config import load_config

from ._data import CATALOG, GTIN_STRIPS, MEMBERS
from .erp_test_client import load_public
from .test_gateway_e2e import ERP_TOKEN, POLICY, RECEIPTS, STORE_ID, TILL, TILL_TOKEN, Client, Erp, make_keys, signed

PAGE_TOKEN = "page-token-3b9e61d07c"
NAMES = [m["name"] for m in MEMBERS["members"]]
SECRETS = [TILL_TOKEN, ERP_TOKEN, PAGE_TOKEN]


def write_config(root) -> str:
    path = root / "gateway.toml"
    path.write_text(textwrap.dedent(f"""\
        [store]
        id = "{STORE_ID}"
        timezone = "Asia/Shanghai"
        [pos_api]
        listen = "127.0.0.1:0"
        [pos_api.tokens]
        {TILL} = "{TILL_TOKEN}"
        [upstream]
        listen = "127.0.0.1:0"
        token = "{ERP_TOKEN}"
        batch_max_events = 4
        batch_max_age_s = 0.2
        [metrics]
        listen = "127.0.0.1:0"
        page_token = "{PAGE_TOKEN}"
        """), encoding="utf-8")
    return str(path)


class Everything(logging.Handler):
    """Every log record of every logger, formatted with its arguments, as an operator would read it."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(self.format(record))


async def test_a_store_day_shows_member_names_to_the_till_alone(tmp_path):
    make_keys(tmp_path)
    handler = Everything()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        seen = await store_day(tmp_path)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)

    till_answers, batches, pages = seen
    # The till that asked got the name: the data is there, and it is kept from everything else.
    assert any(name in till_answers for name in NAMES)
    assert "M1" in batches  # batches carry the member id
    places = {"logs": "\n".join(handler.lines), "batches": batches, **pages}
    assert handler.lines and all(places.values())
    for place, text in places.items():
        for secret in NAMES + SECRETS:
            assert secret not in text, f"{secret!r} is in the {place}"


async def store_day(tmp_path):
    config = load_config(write_config(tmp_path))
    async with trio.open_nursery() as nursery:
        gateway = await nursery.start(Gateway(config).run)
        erp = Erp(gateway.urls["upstream"][0], load_public(str(tmp_path / "keys" / "store.pub.pem")))
        till = Client(gateway.urls["pos_api"][0], TILL_TOKEN)
        erp_key = _erp_key(tmp_path)
        for kind, body in (("catalog", CATALOG), ("members", MEMBERS), ("policy", POLICY)):
            status, _h, _a = await erp.call("PUT", f"/upstream/v1/master/{kind}", signed(kind, 1, body, erp_key))
            assert status == 200
        status, _h, _a = await erp.call("POST", "/upstream/v1/movements",
                                        signed("movements", 1, {"movements": RECEIPTS}, erp_key))
        assert status == 200

        answers = []
        for member in ("M1", "M2", "M9"):
            status, _h, answer = await till.call("GET", f"/pos/v1/members/{member}")
            answers.append(repr(answer))
        lines = [{"code": GTIN_STRIPS, "qty": 1}, {"code": "SKU-2", "qty": 1}]
        status, _h, quote = await till.call("POST", "/pos/v1/quote", {"id": "Q-1", "lines": lines, "member": "M1"})
        answers.append(repr(quote))
        for i, member in enumerate(("M1", "M2")):
            sale = {"id": f"S-{i}", "lines": lines, "member": member,
                    "payments": [{"method": "card", "cents": quote["total_cents"]}]}
            status, _h, answer = await till.call("POST", "/pos/v1/sales", sale)
            assert status == 201, answer
            answers.append(repr(answer))
        status, _h, _a = await Client(till.url, "wrong").call("GET", "/pos/v1/members/M1")
        assert status == 401
        # A sale the core refuses (and records): its refusal reaches the log and the batch too.
        status, _h, _a = await till.call("POST", "/pos/v1/sales", {"id": "S-9", "lines": [{"code": "NOPE", "qty": 1}],
                                                                   "member": "M1", "payments": []})
        assert status >= 400

        status, _h, head = await erp.call("GET", "/upstream/v1/status")
        await erp.pull_through(head["last_event"])
        probes = Client(gateway.urls["metrics"][0], PAGE_TOKEN)
        pages = {}
        for path in ("/metrics", "/status", "/status.json", "/readyz"):
            status, _h, body = await probes.call("GET", path)
            assert status == 200, path
            pages[path] = body.decode() if isinstance(body, bytes) else repr(body)
        nursery.cancel_scope.cancel()
    return "\n".join(answers), repr(erp.bodies), pages


def _erp_key(root):
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key((root / "keys" / "erp.pem").read_bytes(), password=None)
