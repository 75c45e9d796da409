"""The status page on the metrics listener: its token, its figures as JSON and as HTML, and the page
as a browser shows it (headless Chromium at phone and desktop widths)."""
from __future__ import annotations

import os
import shutil
import struct

import pytest
import trio

from core_ext import tokens
from gateway._app import Gateway
from gateway._config import load_config

from ._data import CATALOG, MEMBERS
from .test_gateway_e2e import ERP_TOKEN, POLICY, RECEIPTS, TILL, TILL_TOKEN, Client, config_text, make_keys, signed

PAGE_TOKEN = "page-token-5be1c0de9a"
RECALLS = {"recalls": [{"recall_id": "RC-9", "sku": "SKU-1", "lot": "A1", "reason": "mislabelled"}]}
LOW = {"id": "GRN-2/1", "type": "receipt", "sku": "SKU-3", "lot": "L7", "expiry": "2030-01-01", "qty": 1,
       "serials": ["X1"]}


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


async def open_store(tmp_path, nursery, page_token: str = PAGE_TOKEN):
    _store_key, erp_key = make_keys(tmp_path)
    text = config_text() + f'page_token = "{page_token}"\n'
    (tmp_path / "gateway.toml").write_text(text, encoding="utf-8")
    gateway = await nursery.start(Gateway(load_config(str(tmp_path / "gateway.toml"))).run)
    erp = Client(gateway.urls["upstream"][0], ERP_TOKEN)
    for kind, body in (("catalog", CATALOG), ("members", MEMBERS), ("policy", POLICY)):
        status, _h, answer = await erp.call("PUT", f"/upstream/v1/master/{kind}", signed(kind, 1, body, erp_key))
        assert status == 200, answer
    status, _h, _a = await erp.call("POST", "/upstream/v1/movements",
                                    signed("movements", 1, {"movements": RECEIPTS + [LOW]}, erp_key))
    assert status == 200
    till = Client(gateway.urls["pos_api"][0], TILL_TOKEN)
    sale = {"id": "S-1", "lines": [{"code": "SKU-2", "qty": 2}], "member": "M1",
            "payments": [{"method": "card", "cents": 2 * 4990}]}
    status, _h, answer = await till.call("POST", "/pos/v1/sales", sale)
    assert status == 201, answer
    status, _h, _a = await erp.call("PUT", "/upstream/v1/master/recalls", signed("recalls", 1, RECALLS, erp_key))
    assert status == 200
    refused = {"id": "S-2", "lines": [{"code": "SKU-1", "qty": 1, "lot": "A1"}],
               "payments": [{"method": "cash", "cents": 1990}]}
    status, _h, answer = await till.call("POST", "/pos/v1/sales", refused)
    assert answer["err"] == "RECALLED_LOT", answer
    # The ERP pulls and acknowledges, so the page has a pull and an acknowledgement to show.
    with trio.fail_after(10):
        while True:
            status, _h, page = await erp.call("GET", "/upstream/v1/batches?after=0&wait=2")
            if page["batches"]:
                break
    status, _h, _a = await erp.call("POST", "/upstream/v1/ack", {"through": page["batches"][-1]["seq"]})
    assert status == 200
    return gateway


async def test_the_page_answers_only_with_its_token_and_shows_each_section(tmp_path):
    async with trio.open_nursery() as nursery:
        gateway = await open_store(tmp_path, nursery)
        base = gateway.urls["metrics"][0]
        anonymous = Client(base, None)
        for path in ("/status", "/status.json", "/status?token=wrong-token-xxxxxxx"):
            status, _h, _b = await anonymous.call("GET", path)
            assert status == 401, path
        status, headers, _b = await anonymous.call("GET", f"/status?token={PAGE_TOKEN}")
        assert status == 303 and headers["location"] == "/status"
        cookie = headers["set-cookie"].split(";")[0]
        assert PAGE_TOKEN not in cookie and "HttpOnly" in headers["set-cookie"]
        status, headers, html = await anonymous.call("GET", "/status", headers={"Cookie": cookie})
        assert status == 200 and headers["content-type"].startswith("text/html")
        page = html.decode()
        status, _h, snap = await Client(base, PAGE_TOKEN).call("GET", "/status.json")
        assert status == 200
        nursery.cancel_scope.cancel()

    assert snap["sales"]["lanes"][TILL] == {"sales": 1, "sales_cents": 9980, "returns": 0, "refund_cents": 0,
                                            "refusals": 1}
    assert snap["sales"]["payments"] == {"card": 9980}
    assert [(a["sku"], a["lot"], a["recall_id"]) for a in snap["alerts"]["recalled"]] == [("SKU-1", "A1", "RC-9")]
    assert [(a["sku"], a["suggested_qty"]) for a in snap["alerts"]["low_stock"]] == [("SKU-3", 2)]
    assert snap["batches"]["acked"] >= 1 and snap["batches"]["last_pull_ms"] and snap["batches"]["last_ack_ms"]
    assert snap["master"]["recalls"]["version"] == 1 and "effective_ms" in snap["master"]["catalog"]
    assert [(r["err"], r["sku"], r["lot"]) for r in snap["refusals"]] == [("RECALLED_LOT", "SKU-1", "A1")]
    for section in ("store", "devices", "sales", "alerts", "batches", "master", "refusals"):
        assert f'id="{section}"' in page
    assert "99.80" in page and "RC-9" in page and 'http-equiv="refresh"' in page
    # Never a token, a key or a member's personal data.
    for secret in (PAGE_TOKEN, TILL_TOKEN, ERP_TOKEN, "Li Wei", "M1<"):
        assert secret not in page and secret not in str(snap)


async def test_a_page_token_configured_as_its_sha256_opens_the_page_with_the_token(tmp_path):
    async with trio.open_nursery() as nursery:
        gateway = await open_store(tmp_path, nursery, page_token=tokens.hashed_form(PAGE_TOKEN))
        anonymous = Client(gateway.urls["metrics"][0], None)
        status, headers, _b = await anonymous.call("GET", f"/status?token={PAGE_TOKEN}")
        assert status == 303
        cookie = headers["set-cookie"].split(";")[0]
        status, _h, _b = await anonymous.call("GET", "/status", headers={"Cookie": cookie})
        assert status == 200
        status, _h, _b = await Client(gateway.urls["metrics"][0], PAGE_TOKEN).call("GET", "/status.json")
        assert status == 200
        # The digest itself is not the token.
        for path in (f"/status?token={tokens.hashed_form(PAGE_TOKEN)}", "/status?token=page-token-5be1c0de9b"):
            status, _h, _b = await anonymous.call("GET", path)
            assert status == 401, path
        status, _h, _b = await Client(gateway.urls["metrics"][0], tokens.hashed_form(PAGE_TOKEN)).call("GET", "/status.json")
        assert status == 401
        nursery.cancel_scope.cancel()


async def test_a_gateway_without_a_page_token_has_no_page(tmp_path):
    make_keys(tmp_path)
    (tmp_path / "gateway.toml").write_text(config_text(), encoding="utf-8")
    async with trio.open_nursery() as nursery:
        gateway = await nursery.start(Gateway(load_config(str(tmp_path / "gateway.toml"))).run)
        status, _h, _b = await Client(gateway.urls["metrics"][0], None).call("GET", "/status?token=anything-at-all")
        nursery.cancel_scope.cancel()
    assert status == 404


def png_size(path) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


async def browse(*args: str) -> str:
    done = await trio.run_process([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                   "--disable-dev-shm-usage", *args], capture_stdout=True, capture_stderr=True,
                                  check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout.decode()


@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed and could not be (make test installs "
                                               "Debian's chromium when run as root)")
async def test_the_page_in_a_browser_at_phone_and_desktop_widths(tmp_path):
    shots = tmp_path / "shots"
    shots.mkdir()
    async with trio.open_nursery() as nursery:
        (tmp_path / "store").mkdir()
        gateway = await open_store(tmp_path / "store", nursery)
        url = f"{gateway.urls['metrics'][0]}/status?token={PAGE_TOKEN}"
        # The browser follows the redirect with the cookie it was given, as a phone does.
        dom = await browse("--dump-dom", url)
        for width, name in ((390, "phone"), (1280, "desktop")):
            await browse(f"--window-size={width},1800", f"--screenshot={shots / name}.png", url)
        nursery.cancel_scope.cancel()
    assert "Store S042" in dom and PAGE_TOKEN not in dom
    for needle in ('id="sales"', "99.80", 'id="alerts"', "RC-9", 'id="refusals"', "RECALLED_LOT", 'id="batches"',
                   'id="master"', 'id="devices"', TILL):
        assert needle in dom, needle
    assert png_size(shots / "phone.png") == (390, 1800)
    assert png_size(shots / "desktop.png") == (1280, 1800)
    assert os.path.getsize(shots / "phone.png") > 10_000  # a page was drawn, not a blank screen


def test_a_short_page_token_is_named_by_check_config(tmp_path):
    from gateway._config import ConfigError
    (tmp_path / "gateway.toml").write_text(config_text() + 'page_token = "short"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path / "gateway.toml"))
    assert caught.value.problems == [("metrics.page_token", "must be at least 16 characters (or empty: no status page)")]


def test_a_malformed_sha256_page_token_is_named_by_check_config(tmp_path):
    from gateway._config import ConfigError
    (tmp_path / "gateway.toml").write_text(config_text() + 'page_token = "sha256:abc"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path / "gateway.toml"))
    [(key, problem)] = caught.value.problems
    assert key == "metrics.page_token" and "64 lower-case hex digits" in problem
