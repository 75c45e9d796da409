"""A terminal on a real serial line (pseudo-terminals, pyserial at both ends) against the real core.

The gateway runs on trio's mock clock, which stands still: it resends or times out only when a test
moves the clock, so a loaded machine cannot change what these tests see (see tests/_ecr_rig.py)."""
from __future__ import annotations

import functools
import time

import trio
from prometheus_client import CollectorRegistry

from device_plugins import ecr_serial
from device_plugins._serial_port import BACKOFF_MAX_S

from ._ecr_rig import WAIT_S, jump_until, wait_until
from .ecr_terminal import Cable, Terminal, build_frame


def sale(rid, lines, cents, **extra):
    return {"t": "sale", "id": rid, "lane": "1", "lines": lines,
            "payments": [{"method": "cash", "cents": cents}], **extra}


async def test_terminal_sells_returns_and_queries(rig, mock_clock):
    [pong] = await rig.request({"t": "ping", "id": "P-1"}, noise=b"BOOT ECR v2.1\r\n\xff\x00")
    assert pong["ok"] is True and isinstance(pong["time_ms"], int)
    assert rig.metric("gateway_ecr_garbage_bytes_total") == 17

    lines = [{"code": "SKU-1", "qty": 2}]
    [quote] = await rig.request({"t": "quote", "id": "Q-1", "lines": lines})
    assert quote["ok"] is True
    total = quote["total_cents"]
    assert total == sum(line["net_cents"] for line in quote["lines"])

    b2_before = rig.lot_qty("SKU-1", "B2")
    [sold] = await rig.request(sale("S-1", lines, total), noise=b"\x00\x01line noise")
    assert sold["ok"] is True and sold["re"] == "S-1"
    [event] = rig.events_with_id("lane1:S-1")
    assert event["seq"] == sold["seq"]
    allocations = sold["lines"][0]["allocations"]
    assert sum(a["qty"] for a in allocations) == 2
    # The lots the answer names are the lots the ledger moved.
    moved = {(m[0], m[1]): m[2] for m in event["moves"]}
    assert moved == {("SKU-1", a["lot"]): -a["qty"] for a in allocations}
    assert rig.lot_qty("SKU-1", "B2") == b2_before - 2  # FEFO: B2 expires first

    [stock] = await rig.request({"t": "stock", "id": "K-1", "code": "SKU-1"})
    with rig.core.store.read() as tx:
        ledger_lots = {lot: row["qty"] for lot, row in
                       ((k.decode().split("\x00")[1], v) for k, v in tx.items("lots", b"SKU-1\x00"))}
    assert {row["lot"]: row["qty"] for row in stock["lots"]} == {
        lot: qty for lot, qty in ledger_lots.items() if qty}
    assert stock["on_hand"] == sum(ledger_lots.values())

    [member] = await rig.request({"t": "member", "id": "M-1", "member": "M1"})
    assert member["ok"] is True and member["tier"] == "gold"

    [returned] = await rig.request({"t": "return", "id": "R-1", "orig": "S-1",
                                    "lines": [{"sku": "SKU-1", "qty": 1, "lot": "B2"}],
                                    "reason": "defect"})
    assert returned["ok"] is True and returned["refund_cents"] > 0
    [revent] = rig.events_with_id("lane1:R-1")
    assert revent["seq"] == returned["seq"]
    assert rig.lot_qty("SKU-1", "B2") == b2_before - 1

    [refused] = await rig.request({"t": "return", "id": "R-2", "orig": "S-1",
                                   "lines": [{"sku": "SKU-1", "qty": 5, "lot": "B2"}]})
    assert refused["ok"] is False and refused["err"] == "RETURN_EXCEEDS_SALE" and refused["msg"]
    assert rig.events_with_id("lane1:R-2") == []
    assert rig.lot_qty("SKU-1", "B2") == b2_before - 1

    assert rig.metric("gateway_ecr_frames_total", direction="in") == 7
    assert rig.metric("gateway_ecr_frames_total", direction="out") == 7
    assert rig.metric("gateway_ecr_responses_total", result="ok") == 6
    assert rig.metric("gateway_ecr_responses_total", result="RETURN_EXCEEDS_SALE") == 1


async def test_corrupted_crc_is_naked_then_resent(rig, mock_clock):
    before = rig.lot_qty("SKU-2", None)
    [quote] = await rig.request({"t": "quote", "id": "Q-9", "lines": [{"code": "SKU-2", "qty": 1}]})
    [sold] = await rig.request(sale("S-9", [{"code": "SKU-2", "qty": 1}], quote["total_cents"]),
                               corrupt_crc=True)
    assert sold["ok"] is True
    assert rig.terminal.naks == 1
    assert rig.metric("gateway_ecr_rejects_total", reason="crc") == 1
    assert len(rig.events_with_id("lane1:S-9")) == 1
    assert rig.lot_qty("SKU-2", None) == before - 1


async def test_lost_ack_sends_twice_and_the_sale_applies_once(rig, mock_clock):
    before = rig.lot_qty("SKU-2", None)
    [quote] = await rig.request({"t": "quote", "id": "Q-5", "lines": [{"code": "SKU-2", "qty": 3}]})
    body = sale("S-5", [{"code": "SKU-2", "qty": 3}], quote["total_cents"])
    # The terminal misses the first ACK, sends the frame again, and gets two answers.
    first, second = await rig.request(body, lose_ack=True, responses=2)
    assert first["ok"] is True
    assert first == second
    assert len(rig.events_with_id("lane1:S-5")) == 1
    assert rig.lot_qty("SKU-2", None) == before - 3
    assert rig.metric("gateway_ecr_frames_total", direction="in") == 3


async def test_unknown_or_missing_type_is_answered_by_the_plugin(rig, mock_clock):
    [unknown] = await rig.request({"t": "refund-all", "id": "X-1"})
    assert unknown == {"t": "res", "re": "X-1", "ok": False, "err": "BAD_REQUEST",
                       "msg": unknown["msg"]}
    assert "refund-all" in unknown["msg"]
    [missing] = await rig.request({"id": "X-2"})
    assert missing["err"] == "BAD_REQUEST" and "no type" in missing["msg"]
    assert rig.metric("gateway_ecr_rejects_total", reason="bad_request") == 2
    # A routable request with a bad field goes to the core, which names the field.
    [bad] = await rig.request({"t": "sale", "id": "X-3", "lines": "nope", "payments": []})
    assert bad["ok"] is False and bad["err"] == "BAD_REQUEST"


async def test_unplug_mid_stream_and_replug(rig, nursery, mock_clock):
    [quote] = await rig.request({"t": "quote", "id": "Q-7", "lines": [{"code": "SKU-4", "qty": 1}]})
    price = quote["total_cents"]
    before = rig.lot_qty("SKU-4", None)
    # Half a frame is on the wire, and read, when the cable is pulled.
    rig.terminal.noise(build_frame(sale("S-lost", [{"code": "SKU-4", "qty": 1}], price))[:9])
    await rig.wait_read()
    rig.cable.unplug()
    await rig.wait_metric("gateway_ecr_connected", 0)
    for _ in range(3):  # the gateway keeps trying a port that is not there
        mock_clock.jump(BACKOFF_MAX_S)
        await rig.run(time.sleep, 0.01)
        assert rig.metric("gateway_ecr_connected") == 0
    await rig.cable.plug(nursery)
    await jump_until(mock_clock, lambda: rig.metric("gateway_ecr_connected") == 1, "the replug")
    [sold] = await rig.request(sale("S-7", [{"code": "SKU-4", "qty": 1}], price))
    assert sold["ok"] is True
    assert rig.events_with_id("lane1:S-lost") == []
    assert len(rig.events_with_id("lane1:S-7")) == 1
    assert rig.lot_qty("SKU-4", None) == before - 1


async def test_missing_device_does_not_hold_up_start(core, tmp_path, nursery, mock_clock):
    registry = CollectorRegistry()
    cable = Cable(str(tmp_path / "ttyLATE"))
    device = {"name": "lane1", "kind": "ecr_serial", "port": cable.path}
    started = []

    async def start():
        await nursery.start(ecr_serial.serve, device, core.submit, ecr_serial.Metrics(registry))
        started.append(True)

    # The clock stands still: start returns after the first attempt, without waiting to retry.
    nursery.start_soon(start)
    await wait_until(lambda: started, "serve() to start without its port")
    assert registry.get_sample_value("gateway_ecr_connected", {"device": "lane1"}) == 0
    await cable.plug(nursery)
    await jump_until(mock_clock, lambda: registry.get_sample_value(
        "gateway_ecr_connected", {"device": "lane1"}) == 1, "the port to appear")
    terminal = await trio.to_thread.run_sync(
        functools.partial(Terminal, cable.terminal_path, ack_timeout=WAIT_S, response_timeout=WAIT_S))
    try:
        [pong] = await trio.to_thread.run_sync(terminal.request, {"t": "ping", "id": "late"})
        assert pong["ok"] is True
    finally:
        terminal.close()
        await cable.aclose()


async def test_gateway_resends_an_unacknowledged_response(rig, mock_clock):
    t = rig.terminal
    await rig.run(t.ser.write, build_frame({"t": "ping", "id": "P-R"}))
    assert await rig.run(t._read_ack) == 0x06
    first = await rig.run(read_raw_frame, t)  # not ACKed
    assert rig.metric("gateway_ecr_retransmits_total") == 0
    mock_clock.jump(1.0)  # the gateway's wait for the ACK runs out
    second = await rig.run(read_raw_frame, t)
    await rig.run(t.ser.write, b"\x06")
    assert first == second and first[-1:] == b"\x03"
    await rig.wait_metric("gateway_ecr_retransmits_total", 1)
    assert rig.metric("gateway_ecr_frames_total", direction="out") == 2
    assert rig.metric("gateway_ecr_link_errors_total") == 0


def read_raw_frame(terminal) -> bytes:
    """One frame's bytes as they came, not ACKed."""
    deadline = time.monotonic() + WAIT_S
    while (byte := terminal._byte(deadline)) != 0x02:
        assert byte is not None, "no frame came"
    head = terminal._exact(2, deadline)
    return b"\x02" + head + terminal._exact(int.from_bytes(head, "big") + 3, deadline)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _iso_or_none(value) -> bool:
    import datetime as dt
    return value is None or (isinstance(value, str) and dt.date.fromisoformat(value).isoformat() == value)


PRICED_LINE = {"sku", "qty", "unit_cents", "gross_cents", "discount_cents", "net_cents", "promos",
               "lot", "serial"}


def check_priced(answer: dict, *, member: bool) -> None:
    """The `quote` response of ecr-serial.md, field by field."""
    assert answer["ok"] is True and answer["t"] == "res"
    assert _is_int(answer["ruleset"])
    for key in ("gross_cents", "discount_cents", "total_cents"):
        assert _is_int(answer[key]), key
    assert isinstance(answer["warnings"], list) and all(isinstance(w, str) for w in answer["warnings"])
    assert answer["total_cents"] == sum(line["net_cents"] for line in answer["lines"])
    for line in answer["lines"]:
        assert PRICED_LINE <= set(line), line
        assert isinstance(line["sku"], str)
        for key in ("qty", "unit_cents", "gross_cents", "discount_cents", "net_cents"):
            assert _is_int(line[key]), key
        assert all(set(p) == {"id", "cents"} and _is_int(p["cents"]) for p in line["promos"])
        assert line["lot"] is None or isinstance(line["lot"], str)
        assert line["serial"] is None or isinstance(line["serial"], str)
    if member:
        assert _is_int(answer["points_earned"]) and _is_int(answer["points_balance"])
    else:
        assert "points_earned" not in answer and "points_balance" not in answer


async def test_every_response_has_the_shape_the_spec_shows(rig, mock_clock):
    lines = [{"code": "SKU-1", "qty": 2}, {"code": "4711", "qty": 1}]
    [quote] = await rig.request({"t": "quote", "id": "SH-Q", "lane": "1", "member": "M1",
                                 "lines": lines})
    check_priced(quote, member=True)
    [plain] = await rig.request({"t": "quote", "id": "SH-Q2", "lines": lines})
    check_priced(plain, member=False)

    [sold] = await rig.request(sale("SH-S", lines, quote["total_cents"], member="M1"))
    check_priced(sold, member=True)
    assert _is_int(sold["seq"])
    for line in sold["lines"]:
        assert sum(a["qty"] for a in line["allocations"]) == line["qty"]
        for alloc in line["allocations"]:
            assert set(alloc) == {"lot", "expiry", "qty"} and _is_int(alloc["qty"])
            assert _iso_or_none(alloc["expiry"])
    assert {a["lot"] for a in sold["lines"][1]["allocations"]} == {None}  # not tracked by lot

    [returned] = await rig.request({"t": "return", "id": "SH-R", "orig": "SH-S",
                                    "lines": [{"sku": "SKU-2", "qty": 1}], "reason": "defect"})
    assert returned["ok"] is True
    assert _is_int(returned["seq"]) and _is_int(returned["refund_cents"])
    assert returned["lines"] == [{"sku": "SKU-2", "lot": None, "qty": 1,
                                  "refund_cents": returned["lines"][0]["refund_cents"]}]
    assert _is_int(returned["lines"][0]["refund_cents"])
    assert _is_int(returned["points_reversed"]) and _is_int(returned["points_balance"])

    [member] = await rig.request({"t": "member", "id": "SH-M", "member": "M1"})
    assert (member["tier"], member["name"]) == ("gold", "Li Wei")
    assert member["points_balance"] == returned["points_balance"]

    [stock] = await rig.request({"t": "stock", "id": "SH-K", "code": "SKU-1"})
    assert _is_int(stock["on_hand"]) and stock["lots"]
    for lot in stock["lots"]:
        assert set(lot) == {"lot", "expiry", "qty", "recalled"}
        assert _is_int(lot["qty"]) and isinstance(lot["recalled"], bool) and _iso_or_none(lot["expiry"])

    [pong] = await rig.request({"t": "ping", "id": "SH-P"})
    assert _is_int(pong["time_ms"]) and pong["re"] == "SH-P"


async def test_a_drawer_count_over_the_line_is_answered_with_what_the_ledger_expects(rig, mock_clock):
    lines = [{"code": "SKU-2", "qty": 1}]
    [quote] = await rig.request({"t": "quote", "id": "Q-D", "lines": lines})
    [sold] = await rig.request(sale("S-D", lines, quote["total_cents"]))
    assert sold["ok"] is True
    count = {"t": "drawer_count", "id": "D-1", "counted": {"cash": quote["total_cents"] + 100}}
    [counted] = await rig.request(count)
    assert counted["ok"] is True and counted["re"] == "D-1"
    assert counted["expected"] == {"cash": quote["total_cents"]} and isinstance(counted["day"], str)
    [event] = rig.events_with_id("lane1:D-1")
    assert event["type"] == "drawer_count" and event["seq"] == counted["seq"]
    assert event["counted"] == {"cash": quote["total_cents"] + 100}
    # A repeat gets the first answer; another count under the same id is a conflict.
    [again] = await rig.request(count)
    assert again == counted
    [conflict] = await rig.request({**count, "counted": {"cash": 1}})
    assert conflict["ok"] is False and conflict["err"] == "DUPLICATE_ID_CONFLICT"
    assert len(rig.events_with_id("lane1:D-1")) == 1
