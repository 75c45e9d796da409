"""Closing a scanner's cycle count from the back office: over UP/1 and with `gateway erp close-count`."""
from __future__ import annotations

import functools
import io
from contextlib import redirect_stdout

import trio

from core_ext import Request
from upstream._erp_cli import add_arguments, run

from ._upstream import TOKEN


async def count(up, lot, n):
    for i in range(n):
        res = await up.submit(Request("scan", {"id": f"{lot}-{i}", "role": "count", "gtin": "06901234567892",
                                               "lot": lot, "expiry": "2027-03-31", "code": "raw"}, source="desk",
                                      channel="scanner"))
        assert res.ok, res.body


async def test_close_over_http_sets_the_counted_figures(served):
    up = served.up
    await count(up, "A1", 4)
    status, _h, body = await served.call("POST", "/upstream/v1/counts/desk/close", body={"id": "c-1"})
    assert status == 200, body
    rows = {(r[0], r[1]): (r[2], r[3]) for r in body["counted"]}
    assert rows[("SKU-1", "A1")][0] == 4
    with up.store.read() as tx:
        assert tx.get("lots", b"SKU-1\x00A1")["qty"] == 4
    status, _h, again = await served.call("POST", "/upstream/v1/counts/desk/close", body={"id": "c-1"})
    assert status == 200 and again == body  # a retried close is the first answer again
    status, _h, none_open = await served.call("POST", "/upstream/v1/counts/desk/close", body={"id": "c-2"})
    assert status == 400 and "no open count" in none_open["message"]
    status, _h, _b = await served.call("POST", "/upstream/v1/counts/desk/close", body={"id": "c-3"}, token="wrong")
    assert status == 401


async def test_close_count_command(served):
    import argparse
    await count(served.up, "C3", 2)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["close-count", "desk", "--url", served.url, "--token", TOKEN, "--id", "cli-1"])
    out = io.StringIO()
    with redirect_stdout(out):
        code = await trio.to_thread.run_sync(functools.partial(run, args))
    assert code == 0
    assert "count of desk closed" in out.getvalue() and "C3" in out.getvalue()
