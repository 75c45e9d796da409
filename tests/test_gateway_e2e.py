"""The whole gateway in one trio run: a real configuration file, real listeners on loopback, real keys.

An ERP sends signed master data and receipts over UP/1, a POS app sells over POS/1, a legacy POS drops
a CSV file, a terminal sells over a serial line; the ERP then pulls what happened and checks every
signature and the hash chain with a client written from the spec alone.
"""
from __future__ import annotations

import functools
import os
import socket
import textwrap
import time

import msgpack
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from core_ext import Store
from core_ext._store import lot_key
from core_ext._verify import verify
from gateway._app import Gateway, StartError
from gateway._config import load_config
from gateway._metrics import LedgerCollector
from upstream import load_public_key, write_keypair

from ._data import CATALOG, GTIN_STRIPS, MEMBERS
from .ecr_terminal import Cable, Terminal
from .erp_test_client import ChainChecker, load_public, request
from .test_upstream_api import self_signed

STORE_ID = "S042"
ERP_TOKEN = "erp-token-7f3a"
TILL = "till1"
TILL_TOKEN = "till1-token-c41d"
LEGACY = "legacy-pos"
POLICY = {"negative_stock": "allow", "expiry_warn_days": 30, "points_offline_cap": 500,
          "points_value_cents": 1}
RECEIPTS = [
    {"id": "GRN-1/1", "type": "receipt", "sku": "SKU-1", "lot": "A1", "expiry": "2028-03-31", "qty": 10},
    {"id": "GRN-1/2", "type": "receipt", "sku": "SKU-2", "lot": None, "expiry": None, "qty": 50},
    {"id": "GRN-1/3", "type": "receipt", "sku": "SKU-4", "lot": None, "expiry": None, "qty": 100},
]


# --- the store's files -----------------------------------------------------------------------

def make_keys(root) -> tuple[Ed25519PrivateKey, Ed25519PrivateKey]:
    """The store's key pair and the ERP's, written where the configuration names them."""
    keys = root / "keys"
    keys.mkdir()
    store_key = write_keypair(str(keys / "store.pem"), str(keys / "store.pub.pem"))
    erp_key = write_keypair(str(keys / "erp.pem"), str(keys / "erp.pub.pem"))
    return store_key, erp_key


def config_text(*, pos="127.0.0.1:0", upstream="127.0.0.1:0", metrics="127.0.0.1:0", devices="",
                tls=("", "")) -> str:
    """A store's configuration; paths are relative to the file, as an installer would write them."""
    return textwrap.dedent(f"""\
        [store]
        id = "{STORE_ID}"
        data_dir = "data"
        timezone = "Asia/Shanghai"

        [keys]
        signing_key = "keys/store.pem"
        erp_public_key = "keys/erp.pub.pem"

        [pos_api]
        listen = "{pos}"
        [pos_api.tokens]
        {TILL} = "{TILL_TOKEN}"

        [upstream]
        listen = "{upstream}"
        token = "{ERP_TOKEN}"
        tls_cert = "{tls[0]}"
        tls_key = "{tls[1]}"
        batch_max_events = 4
        batch_max_age_s = 0.2

        [metrics]
        listen = "{metrics}"
        """) + textwrap.dedent(devices)


CSV_DEVICE = f"""
    [[devices]]
    name = "{LEGACY}"
    kind = "csv_drop"
    dir = "drop/legacy"
    settle_s = 0
    poll_s = 0.05
    [devices.columns]
    id = "TicketNo"
    code = "ItemCode"
    qty = "Qty"
    """


def ecr_device(name: str, port: str) -> str:
    return f"""
    [[devices]]
    name = "{name}"
    kind = "ecr_serial"
    port = "{port}"
    baudrate = 115200
    """


def write_config(root, **kwargs) -> str:
    path = root / "gateway.toml"
    path.write_text(config_text(**kwargs), encoding="utf-8")
    return str(path)


# --- the ERP's side ------------------------------------------------------------------------------

def signed(kind: str, version: int, body, key: Ed25519PrivateKey) -> dict:
    """A document signed as the UP/1 spec says, written here apart from the gateway's own code."""
    doc = {"v": 1, "kind": kind, "version": version, "issued_ms": int(time.time() * 1000),
           "body": msgpack.packb(body, use_bin_type=True)}
    doc["sig"] = key.sign(msgpack.packb([doc["v"], kind, version, doc["issued_ms"], 0, doc["body"]],
                                        use_bin_type=True))
    return doc


class Client:
    """One listener of the gateway, called over real HTTP from a worker thread."""

    def __init__(self, url: str, token: str | None):
        self.url = url
        self.token = token

    async def call(self, method: str, path: str, body=None, *, headers=None):
        raw = None if body is None else msgpack.packb(body, use_bin_type=True)
        return await trio.to_thread.run_sync(functools.partial(
            request, self.url, method, path, token=self.token, body=raw, headers=headers, timeout=15))


class Erp(Client):
    def __init__(self, url: str, public_key):
        super().__init__(url, ERP_TOKEN)
        self.checker = ChainChecker(public_key, store=STORE_ID)
        self.bodies: list[dict] = []

    async def pull_through(self, last_event: int) -> None:
        """Pull and check batches until every event up to `last_event` is sealed and received."""
        with trio.fail_after(15):
            while self.checker.last_event < last_event:
                status, _h, page = await self.call("GET", f"/upstream/v1/batches?after={self.checker.seq}&wait=5")
                assert status == 200, page
                self.bodies += self.checker.accept_all(page["batches"])

    @property
    def docs(self) -> list[dict]:
        return [doc for body in self.bodies for doc in body["docs"]]


async def wait_for(predicate, what: str, timeout: float = 10.0):
    """Poll a fact of the file system or a listener that no event of ours announces."""
    with trio.move_on_after(timeout):
        while not (found := await predicate()):
            await trio.sleep(0.02)
        return found
    raise AssertionError(f"{what}: not within {timeout} s")


# --- the tests -------------------------------------------------------------------------------------

async def test_a_day_at_the_store_from_config_file_to_verified_batches(tmp_path):
    store_key, erp_key = make_keys(tmp_path)
    config = load_config(write_config(tmp_path, devices=CSV_DEVICE))
    drop = tmp_path / "drop" / "legacy"

    async with trio.open_nursery() as nursery:
        gateway = await nursery.start(Gateway(config).run)
        assert set(gateway.urls) == {"metrics", "upstream", "pos_api"}
        assert gateway.device_tasks == {LEGACY: "csv_drop"}
        # The store's public key the ERP was given is the one the gateway signs with.
        erp = Erp(gateway.urls["upstream"][0], load_public(str(tmp_path / "keys" / "store.pub.pem")))
        till = Client(gateway.urls["pos_api"][0], TILL_TOKEN)
        probes = Client(gateway.urls["metrics"][0], None)

        # Down: master data, then the goods received, each signed by the ERP.
        for kind, body in (("catalog", CATALOG), ("members", MEMBERS), ("policy", POLICY)):
            status, _h, answer = await erp.call("PUT", f"/upstream/v1/master/{kind}", signed(kind, 1, body, erp_key))
            assert (status, answer) == (200, {"applied": 1}), (kind, answer)
        catalog = signed("catalog", 1, CATALOG, erp_key)
        status, _h, answer = await erp.call("PUT", "/upstream/v1/master/catalog", catalog)
        assert status == 409 and answer["error"] == "VERSION_NOT_NEWER"
        forged = signed("members", 2, MEMBERS, Ed25519PrivateKey.generate())
        status, _h, answer = await erp.call("PUT", "/upstream/v1/master/members", forged)
        assert status == 403 and answer["error"] == "BAD_SIGNATURE"
        movements = signed("movements", 7, {"movements": RECEIPTS}, erp_key)
        status, _h, answer = await erp.call("POST", "/upstream/v1/movements", movements)
        assert (status, answer) == (200, {"applied": 3, "duplicates": 0})
        status, _h, answer = await erp.call("POST", "/upstream/v1/movements", movements)
        assert (status, answer) == (200, {"applied": 0, "duplicates": 3})

        # A POS app sells: priced as quoted, committed once however often it is sent.
        lines = [{"code": GTIN_STRIPS, "qty": 2}, {"code": "SKU-2", "qty": 1}]
        status, _h, quote = await till.call("POST", "/pos/v1/quote", {"id": "Q-1", "lines": lines})
        assert status == 200 and quote["ok"] is True, quote
        total = quote["total_cents"]
        assert total == 2 * 1990 + 4990
        sale = {"id": "S-1", "lines": lines, "member": "M1", "payments": [{"method": "card", "cents": total}]}
        status, _h, first = await till.call("POST", "/pos/v1/sales", sale)
        assert status == 201 and first["ok"] is True and first["re"] == "S-1", first
        status, _h, again = await till.call("POST", "/pos/v1/sales", sale)
        assert (status, again) == (200, first)
        status, _h, answer = await Client(till.url, "not-a-token").call("POST", "/pos/v1/sales", sale)
        assert status == 401

        # A legacy POS drops a file: two baskets, one by its own product code.
        (drop / "day.csv.tmp").write_text("TicketNo,ItemCode,Qty\nT1,4711,2\nT1,B-100,3\nT2,B-100,1\n")
        os.replace(drop / "day.csv.tmp", drop / "day.csv")

        async def taken():
            return (drop / "done" / "day.csv").exists() and not (drop / "day.csv").exists()
        await wait_for(taken, "the CSV file moved to done/")
        assert list((drop / "rejected").iterdir()) == []

        status, _h, stock = await till.call("GET", "/pos/v1/stock/SKU-2")
        assert status == 200 and stock["ok"] is True
        assert stock["on_hand"] == 50 - 1 - 2, stock

        # Up: everything sealed, signed and chained, as the ERP checks it.
        status, _h, head = await erp.call("GET", "/upstream/v1/status")
        assert status == 200 and head["store"] == STORE_ID
        assert head["versions"]["catalog"] == 1 and head["versions"]["policy"] == 1
        await erp.pull_through(head["last_event"])
        docs = erp.docs
        assert [d["seq"] for d in docs] == list(range(1, erp.checker.last_event + 1))
        applied = [(d["kind"], d["version"]) for d in docs if d["type"] == "master_applied"]
        assert applied == [("catalog", 1), ("members", 1), ("policy", 1)]
        receipts = [d for d in docs if d["type"] == "receipt"]
        assert sorted(d["id"] for d in receipts) == sorted(f"erp:{m['id']}" for m in RECEIPTS)
        [pos_sale] = [d for d in docs if d["type"] == "sale" and d["id"] == f"{TILL}:S-1"]
        assert sorted((line["sku"], line["qty"]) for line in pos_sale["lines"]) == [("SKU-1", 2), ("SKU-2", 1)]
        assert pos_sale["member"] == "M1"
        csv_sales = [d for d in docs if d["type"] == "sale" and d["id"].startswith(f"{LEGACY}:")]
        assert len(csv_sales) == 2
        assert sorted(line["sku"] for d in csv_sales for line in d["lines"]) == ["SKU-2", "SKU-4", "SKU-4"]
        assert not [d for d in docs if d["type"] == "refusal"]

        # The compaction of each batch is the net of its documents' moves; the last word per lot is
        # what the ledger holds now.
        on_hand_after = {}
        for body in erp.bodies:
            net = {}
            for doc in body["docs"]:
                for sku, lot, delta, _expiry, _serials in doc["moves"]:
                    net[(sku, lot)] = net.get((sku, lot), 0) + delta
            assert {(sku, lot): delta for sku, lot, delta, _after in body["stock"]} == net
            on_hand_after.update({(sku, lot): after for sku, lot, _delta, after in body["stock"]})
        assert on_hand_after[("SKU-1", "A1")] == 10 - 2
        assert on_hand_after[("SKU-2", None)] == 50 - 1 - 2
        assert on_hand_after[("SKU-4", None)] == 100 - 3 - 1

        status, _h, answer = await erp.call("POST", "/upstream/v1/ack", {"through": erp.checker.seq})
        assert status == 200 and answer["acked"] == erp.checker.seq
        status, _h, head = await erp.call("GET", "/upstream/v1/status")
        assert head["acked_seq"] == erp.checker.seq and head["public_key"] == store_key.public_key().public_bytes_raw()

        status, headers, text = await probes.call("GET", "/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain")
        core = {(sample.labels["kind"], sample.labels["outcome"]): sample.value
                for family in text_string_to_metric_families(text.decode())
                for sample in family.samples if sample.name == "gateway_core_requests_total"}
        assert core[("sale", "ok")] == 1 and core[("sale", "replayed")] == 1
        assert core[("master", "ok")] == 3 and core[("master", "refused")] == 2
        assert core[("csv_check", "ok")] == 1 and core[("csv_slice", "ok")] == 1
        sold = gateway.registry.get_sample_value("gateway_pos_requests_total",
                                                 {"terminal": TILL, "route": "sales", "status": "201"})
        assert sold == 1
        status, _h, _body = await probes.call("GET", "/readyz")
        assert status == 200
        status, _h, _body = await probes.call("GET", "/healthz")
        assert status == 200

        nursery.cancel_scope.cancel()

    # Stopped: the environment is closed (reopening it in this process would fail otherwise) and
    # the ledger replays to exactly the balances it holds.
    assert gateway.store is None
    store = Store(config.store.data_dir)
    try:
        assert verify(store) == []
        with store.read() as tx:
            assert tx.get("lots", lot_key("SKU-2", None))["qty"] == 47
            assert [e["id"] for e in tx.events() if e["type"] == "sale"].count(f"{TILL}:S-1") == 1
    finally:
        store.close()


async def test_a_terminal_on_a_serial_line_sells_through_the_whole_gateway(tmp_path, nursery):
    _store_key, erp_key = make_keys(tmp_path)
    cable = Cable(str(tmp_path / "ttyECR0"))
    await cable.plug(nursery)
    config = load_config(write_config(tmp_path, devices=ecr_device("lane2", cable.path)))

    async with trio.open_nursery() as gw_nursery:
        gateway = await gw_nursery.start(Gateway(config).run)
        assert gateway.device_tasks == {"lane2": "ecr_serial"}
        erp = Erp(gateway.urls["upstream"][0], load_public_key(config.keys.public_key))
        status, _h, _a = await erp.call("PUT", "/upstream/v1/master/catalog", signed("catalog", 1, CATALOG, erp_key))
        assert status == 200
        status, _h, _a = await erp.call("POST", "/upstream/v1/movements",
                                        signed("movements", 1, {"movements": RECEIPTS}, erp_key))
        assert status == 200

        terminal = await trio.to_thread.run_sync(Terminal, cable.terminal_path)
        try:
            async def connected():
                return gateway.registry.get_sample_value("gateway_ecr_connected", {"device": "lane2"}) == 1
            await wait_for(connected, "the gateway opened the serial port")
            sale = {"t": "sale", "id": "E-1", "lane": "2", "lines": [{"code": "SKU-4", "qty": 4}],
                    "payments": [{"method": "cash", "cents": 4 * 350}]}
            [answer] = await trio.to_thread.run_sync(terminal.request, sale)
            assert answer["ok"] is True and answer["re"] == "E-1", answer
            # The terminal never got the answer (say): it sends the same sale again and is answered alike.
            [again] = await trio.to_thread.run_sync(terminal.request, sale)
            assert again == answer
        finally:
            terminal.close()

        status, _h, head = await erp.call("GET", "/upstream/v1/status")
        await erp.pull_through(head["last_event"])
        [doc] = [d for d in erp.docs if d["type"] == "sale"]
        assert doc["id"] == "lane2:E-1" and doc["moves"][0][:3] == ["SKU-4", None, -4]
        gw_nursery.cancel_scope.cancel()

    await cable.aclose()
    store = Store(config.store.data_dir)
    try:
        assert verify(store) == []
        with store.read() as tx:
            assert tx.get("lots", lot_key("SKU-4", None))["qty"] == 96
    finally:
        store.close()


@pytest.mark.parametrize("key", ["pos_api.listen", "upstream.listen", "metrics.listen"])
async def test_a_port_already_taken_stops_the_start_naming_the_key(tmp_path, key):
    make_keys(tmp_path)
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        config = load_config(write_config(tmp_path, **{key.split(".")[0].replace("pos_api", "pos"): listen}))
        gateway = Gateway(config)
        with pytest.raises(StartError) as caught:
            await gateway.run()
    error = caught.value
    assert error.key == key and listen in error.problem and "in use" in error.problem
    assert isinstance(error.__cause__, OSError)
    # Stopped before it started: nothing is left open, the store reopens at once.
    assert gateway.store is None and not gateway.started
    Store(config.store.data_dir).close()


@pytest.mark.parametrize("key", ["keys.signing_key", "keys.erp_public_key"])
async def test_a_key_file_that_is_not_a_key_stops_the_start_before_the_store_is_touched(tmp_path, key):
    make_keys(tmp_path)
    config = load_config(write_config(tmp_path))
    path = config.keys.signing_key if key == "keys.signing_key" else config.keys.erp_public_key
    with open(path, "wb") as f:
        f.write(b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    with pytest.raises(StartError) as caught:
        await Gateway(config).run()
    assert caught.value.key == key and path in caught.value.problem
    assert not os.path.exists(config.store.data_dir)


async def test_a_device_that_cannot_start_stops_the_start_naming_it(tmp_path):
    make_keys(tmp_path)
    (tmp_path / "drop").write_bytes(b"a file where the drop directory should be")
    config = load_config(write_config(tmp_path, devices=CSV_DEVICE))
    gateway = Gateway(config)
    with pytest.raises(StartError) as caught:
        await gateway.run()
    assert caught.value.key == "devices[0]" and repr(LEGACY) in caught.value.problem
    assert isinstance(caught.value.__cause__, OSError)
    assert gateway.store is None and gateway.device_tasks == {}


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


async def test_listeners_over_tls_and_ipv6_as_configured(tmp_path):
    make_keys(tmp_path)
    certfile, keyfile = self_signed(tmp_path)
    metrics = "[::1]:0" if ipv6_loopback() else "127.0.0.1:0"
    config = load_config(write_config(tmp_path, tls=(certfile, keyfile), metrics=metrics))
    async with trio.open_nursery() as nursery:
        gateway = await nursery.start(Gateway(config).run)
        [up_url] = gateway.urls["upstream"]
        assert up_url.startswith("https://127.0.0.1:")
        status, _h, head = await trio.to_thread.run_sync(functools.partial(
            request, up_url, "GET", "/upstream/v1/status", token=ERP_TOKEN, cafile=certfile))
        assert status == 200 and head["store"] == STORE_ID
        [metrics_url] = gateway.urls["metrics"]
        if metrics.startswith("["):
            assert metrics_url.startswith("http://[::1]:")
        status, _h, _body = await Client(metrics_url, None).call("GET", "/readyz")
        assert status == 200
        nursery.cancel_scope.cancel()


async def test_a_data_dir_that_cannot_be_opened_stops_the_start_naming_the_key(tmp_path):
    make_keys(tmp_path)
    config = load_config(write_config(tmp_path))
    (tmp_path / "data").write_bytes(b"not a directory")
    with pytest.raises(StartError) as caught:
        await Gateway(config).run()
    assert caught.value.key == "store.data_dir" and "data" in caught.value.problem


async def test_without_the_erp_key_documents_are_refused_and_the_store_still_sells(tmp_path):
    _store_key, erp_key = make_keys(tmp_path)
    os.unlink(tmp_path / "keys" / "erp.pub.pem")
    config = load_config(write_config(tmp_path))

    async with trio.open_nursery() as nursery:
        gateway = await nursery.start(Gateway(config).run)
        erp = Erp(gateway.urls["upstream"][0], load_public_key(config.keys.public_key))
        till = Client(gateway.urls["pos_api"][0], TILL_TOKEN)
        catalog = signed("catalog", 1, CATALOG, erp_key)
        status, _h, answer = await erp.call("PUT", "/upstream/v1/master/catalog", catalog)
        assert status == 403 and answer["error"] == "BAD_SIGNATURE" and "keys.erp_public_key" in answer["message"]
        status, _h, answer = await erp.call("POST", "/upstream/v1/movements",
                                            signed("movements", 1, {"movements": RECEIPTS}, erp_key))
        assert status == 403 and answer["error"] == "BAD_SIGNATURE"
        # No catalog: the till is told the item is unknown, which is a business answer, not an outage.
        quote = {"id": "Q-1", "lines": [{"code": "SKU-1", "qty": 1}]}
        status, _h, answer = await till.call("POST", "/pos/v1/quote", quote)
        assert status == 404 and answer["err"] == "UNKNOWN_ITEM", answer
        status, _h, ready = await Client(gateway.urls["metrics"][0], None).call("GET", "/readyz")
        assert status == 200 and ready["details"]["erp_public_key"].startswith("absent")
        nursery.cancel_scope.cancel()
    with Store(config.store.data_dir).read() as tx:
        assert [e for e in tx.events() if e["type"] == "master_applied"] == []


async def test_ready_only_once_every_listener_is_up_and_not_after_the_stop(tmp_path):
    make_keys(tmp_path)
    config = load_config(write_config(tmp_path, devices=CSV_DEVICE))
    gateway = Gateway(config)
    ready_with = []

    async def watch():
        while True:
            if gateway.ready()[0]:
                ready_with.append((set(gateway.urls), dict(gateway.device_tasks)))
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await nursery.start(gateway.run)
        await trio.sleep(0)
        nursery.cancel_scope.cancel()
    # Each time it said ready, POS/1, UP/1 and the devices were already there.
    assert ready_with and all(seen == ({"metrics", "upstream", "pos_api"}, {LEGACY: "csv_drop"})
                              for seen in ready_with)
    assert gateway.ready()[0] is False
    # The ledger's gauges are read from the store at scrape time: after the stop it says closed.
    registry = CollectorRegistry()
    registry.register(LedgerCollector(gateway._read))
    assert registry.get_sample_value("gateway_store_open") == 0
