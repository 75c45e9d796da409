"""Second-round attacks on the device plugins: CSV drops and ECR/1 on real pseudo-terminals."""
from __future__ import annotations

import json
import os
import signal
import time

import trio
from prometheus_client import CollectorRegistry

from device_plugins.csv_drop import CsvDrop, Metrics
from device_plugins.ecr_serial import _protocol as ecr

from ._csv import device, drop_file, listing, stock, csv_worker
from ._ecr_rig import WAIT_S
from ._http import post_raw
from .ecr_terminal import ACK, NAK, STX, build_frame

HEADER = "TicketNo,ItemCode,Qty,Lot\n"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))






def sale_ids(store) -> list[str]:
    with store.read() as tx:
        return [e["id"] for e in tx.events() if e["type"] == "sale"]



# --- CSV drops --------------------------------------------------------------------------------

async def test_a_file_replaced_while_its_first_content_commits_is_not_moved_away_unapplied(core, drop_dir):
    # The POS writes `day.csv` again (tmp + rename) while the gateway is committing the first one;
    # moving "day.csv" then would carry the second content to done/ without ever applying it.
    async def submit(request):
        drop_file(drop_dir, "day.csv", HEADER + "T9,B-100,7,\n")
        return await core.submit(request)

    drop = CsvDrop(device(drop_dir), submit, Metrics(CollectorRegistry()))
    drop.prepare()
    before = stock(core.store)
    drop_file(drop_dir, "day.csv", HEADER + "T1,4711,2,\n")
    assert await drop.poll() == [("day.csv", "applied")]
    drop.submit = core.submit
    with trio.fail_after(5):
        while os.path.exists(drop_dir / "day.csv"):
            await drop.poll()
            await trio.sleep(0.01)
    after = stock(core.store)
    assert (before["SKU-2"] - after["SKU-2"], before["SKU-4"] - after["SKU-4"]) == (2, 7)
    # The first content was replaced by the POS itself; what reached done/ is the second, applied.
    assert listing(drop_dir) == {"done/day.csv"}
    assert (drop_dir / "done" / "day.csv").read_text() == HEADER + "T9,B-100,7,\n"


async def test_a_file_renamed_away_while_it_settles_is_never_taken(core, drop_dir):
    drop = CsvDrop(device(drop_dir, settle_s=1.0), core.submit, Metrics(CollectorRegistry()))
    drop.prepare()
    before = stock(core.store)
    drop_file(drop_dir, "a.csv", HEADER + "T1,4711,1,\n")
    assert await drop.poll() == []
    os.replace(drop_dir / "a.csv", drop_dir / "a.txt")  # the POS took it back before it settled
    await trio.sleep(1.0)
    assert await drop.poll() == []
    assert stock(core.store) == before


async def test_a_file_grown_or_truncated_while_it_settles_starts_its_clock_again(core, drop_dir, autojump_clock):
    drop = CsvDrop(device(drop_dir, settle_s=2.0), core.submit, Metrics(CollectorRegistry()))
    drop.prepare()
    path = drop_dir / "g.csv"
    path.write_text(HEADER + "T1,4711,1,\n")
    assert await drop.poll() == []
    await trio.sleep(1.5)
    with open(path, "a") as f:
        f.write("T2,4711,1,\n")
    assert await drop.poll() == []
    await trio.sleep(1.5)
    path.write_text(HEADER + "T1,4711,1,\n")  # truncated back to its first content
    os.utime(path, ns=(1, 1))
    assert await drop.poll() == []
    await trio.sleep(2.0)
    before = stock(core.store)
    assert await drop.poll() == [("g.csv", "applied")]
    assert before["SKU-2"] - stock(core.store)["SKU-2"] == 1


async def test_a_file_from_done_dropped_again_is_replayed_and_applied_once(core, drop_dir):
    drop = CsvDrop(device(drop_dir), core.submit, Metrics(CollectorRegistry()))
    drop.prepare()
    drop_file(drop_dir, "d.csv", HEADER + "T1,4711,1,\nT2,SKU-1,1,\n")
    assert await drop.poll() == [("d.csv", "applied")]
    once, ids = stock(core.store), sale_ids(core.store)
    for n in range(2):
        os.link(drop_dir / "done" / "d.csv", drop_dir / "d.csv")
        assert await drop.poll() == [("d.csv", "replayed")]
    assert (stock(core.store), sale_ids(core.store)) == (once, ids)
    assert listing(drop_dir) == {"done/d.csv", "done/d.1.csv", "done/d.2.csv"}


async def test_basket_ids_reused_by_a_later_file_are_new_sales(core, drop_dir):
    # POS ticket numbers restart each day: the same TicketNo in another file is another basket.
    drop = CsvDrop(device(drop_dir), core.submit, Metrics(CollectorRegistry()))
    drop.prepare()
    before = stock(core.store)
    drop_file(drop_dir, "mon.csv", HEADER + "T1,4711,1,\nT2,B-100,1,\n")
    assert await drop.poll() == [("mon.csv", "applied")]
    drop_file(drop_dir, "tue.csv", HEADER + "T1,4711,2,\nT2,B-100,3,\n")
    assert await drop.poll() == [("tue.csv", "applied")]
    after = stock(core.store)
    assert (before["SKU-2"] - after["SKU-2"], before["SKU-4"] - after["SKU-4"]) == (3, 4)
    assert len(set(sale_ids(core.store))) == 4


async def test_a_file_just_under_max_bytes_is_applied_and_one_byte_over_is_rejected(core, drop_dir):
    rows = "".join(f"T{i},B-100,1,\n" for i in range(20))
    body = HEADER + rows
    limit = len(body.encode())
    drop = CsvDrop(device(drop_dir, max_bytes=limit), core.submit, Metrics(CollectorRegistry()))
    drop.prepare()
    before = stock(core.store)
    drop_file(drop_dir, "fits.csv", body)
    drop_file(drop_dir, "over.csv", body + "\n")
    outcomes = dict(await drop.poll())
    assert outcomes == {"fits.csv": "applied", "over.csv": "rejected"}
    assert before["SKU-4"] - stock(core.store)["SKU-4"] == 20
    reason = (drop_dir / "rejected" / "over.csv.errors.txt").read_text()
    assert f"{limit + 1} bytes, over max_bytes {limit}" in reason


async def test_a_large_file_near_the_default_max_bytes_is_applied_in_one_commit(core, drop_dir):
    rows = "".join(f"T{i},B-100,1,\n" for i in range(100))
    pad = "\n" * ((4 << 20) - len(HEADER) - len(rows))  # blank lines, as some exports end
    drop = CsvDrop(device(drop_dir, max_bytes=4 << 20), core.submit, Metrics(CollectorRegistry()))
    drop.prepare()
    before = stock(core.store)
    with core.store.read() as tx:
        seq0 = tx.last_seq()
    drop_file(drop_dir, "big.csv", HEADER + rows + pad)
    with trio.fail_after(20):
        assert await drop.poll() == [("big.csv", "applied")]
    assert before["SKU-4"] - stock(core.store)["SKU-4"] == 100
    with core.store.read() as tx:
        assert tx.last_seq() - seq0 == 100


def test_sigkill_between_commit_and_move_applies_the_file_once_and_ends_in_done(tmp_path, drop_dir):
    from core_ext import Store

    data = tmp_path / "data"
    drop_file(drop_dir, "k.csv", HEADER + "T1,4711,2,\nT2,SKU-1,1,\n")
    stalled = csv_worker(data, drop_dir, "stall")
    try:
        line = stalled.stdout.readline()
        assert json.loads(line) == {"committed": True, "slices": [2]}
        assert (drop_dir / "k.csv").exists()
        stalled.send_signal(signal.SIGKILL)
        assert stalled.wait(10) == -signal.SIGKILL
    finally:
        stalled.kill()
        stalled.stdout.close()
    store = Store(str(data))
    committed, ids = stock(store), sale_ids(store)
    store.close()
    assert len(ids) == 2
    again = csv_worker(data, drop_dir, "run")
    try:
        out, _ = again.communicate(timeout=20)
    finally:
        again.kill()
    assert json.loads(out.splitlines()[-1]) == {"outcomes": [["k.csv", "replayed"]]}
    store = Store(str(data))
    try:
        assert (stock(store), sale_ids(store)) == (committed, ids)
    finally:
        store.close()
    assert listing(drop_dir) == {"done/k.csv"}


async def test_a_refused_file_replaced_while_it_commits_leaves_the_new_one_to_be_applied(core, drop_dir):
    async def submit(request):
        drop_file(drop_dir, "r.csv", HEADER + "T1,B-100,2,\n")
        return await core.submit(request)

    drop = CsvDrop(device(drop_dir), submit, Metrics(CollectorRegistry()))
    drop.prepare()
    before = stock(core.store)
    drop_file(drop_dir, "r.csv", HEADER + "T1,NO-SUCH,1,\n")
    assert await drop.poll() == [("r.csv", "rejected")]
    drop.submit = core.submit
    assert await drop.poll() == [("r.csv", "applied")]
    assert before["SKU-4"] - stock(core.store)["SKU-4"] == 2
    assert listing(drop_dir) == {"done/r.csv"}


# --- ECR/1 on a real pseudo-terminal -----------------------------------------------------------

def sale(rid, qty=1):
    return {"t": "sale", "id": rid, "lane": "1", "lines": [{"sku": "SKU-4", "qty": qty}],
            "payments": [{"method": "cash", "cents": 350 * qty}]}


def padded_ping(rid: str, size: int) -> dict:
    """A ping whose MessagePack body is exactly `size` bytes."""
    import msgpack

    body = {"t": "ping", "id": rid, "pad": ""}
    over = len(msgpack.packb(body, use_bin_type=True))
    for pad in range(max(0, size - over - 3), size):
        body["pad"] = "x" * pad
        if len(msgpack.packb(body, use_bin_type=True)) == size:
            return body
    raise AssertionError(f"no padding packs to {size}")


def read_bytes(terminal, n: int, timeout: float = WAIT_S) -> bytes:
    out = bytearray()
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        out += terminal.ser.read(n - len(out))
    return bytes(out)


async def test_a_frame_of_exactly_16384_bytes_is_answered_and_one_byte_more_is_naked(rig, mock_clock):
    frame = build_frame(padded_ping("big", 16384))
    assert len(frame) == 16384 + 6
    [answer] = await rig.run(rig.terminal.request, padded_ping("big", 16384))
    assert answer["re"] == "big" and answer["ok"] is True
    await rig.run(rig.terminal.ser.write, build_frame(padded_ping("huge", 16385)))
    assert await rig.run(read_bytes, rig.terminal, 1) == bytes([NAK])
    [after] = await rig.run(rig.terminal.request, {"t": "ping", "id": "after"})
    assert after["ok"] is True


async def test_two_frames_in_one_write_are_both_acked_and_answered(rig, mock_clock):
    await rig.run(rig.terminal.ser.write, build_frame(sale("bb-1")) + build_frame(sale("bb-2", 2)))
    assert await rig.run(read_bytes, rig.terminal, 2) == bytes([ACK, ACK])
    deadline = time.monotonic() + WAIT_S
    got = [await rig.run(rig.terminal._read_frame, deadline) for _ in range(2)]
    assert sorted((m["re"], m["ok"]) for m in got) == [("bb-1", True), ("bb-2", True)]
    assert len(rig.events_with_id("lane1:bb-1")) == 1 and len(rig.events_with_id("lane1:bb-2")) == 1


def _frame_unacked(terminal, deadline) -> dict:
    """Read one response frame and do not ACK it (a terminal that skips ahead)."""
    import msgpack
    import struct

    while True:
        byte = terminal._byte(deadline)
        assert byte is not None, "no response frame in time"
        if byte == STX:
            length = struct.unpack(">H", terminal._exact(2, deadline))[0]
            rest = terminal._exact(length + 3, deadline)
            return msgpack.unpackb(rest[:length], raw=False)


async def test_a_new_request_before_the_previous_response_is_acked_is_still_answered(rig, mock_clock):
    t = rig.terminal
    await rig.run(t.ser.write, build_frame(sale("skip-1")))
    assert await rig.run(read_bytes, t, 1) == bytes([ACK])
    first = await rig.run(_frame_unacked, t, time.monotonic() + WAIT_S)
    assert first["re"] == "skip-1"
    # No ACK for it: the terminal sends its next request at once.
    await rig.run(t.ser.write, build_frame(sale("skip-2")))
    mock_clock.jump(1.0)  # the gateway's wait for the first ACK runs out: it sends skip-1 again
    answers = []
    deadline = time.monotonic() + WAIT_S
    while "skip-2" not in [a["re"] for a in answers]:
        answers.append(await rig.run(t._read_frame, deadline))  # these are ACKed
    assert {a["re"] for a in answers} <= {"skip-1", "skip-2"}
    assert all(a["ok"] for a in answers)
    assert len(rig.events_with_id("lane1:skip-1")) == 1 and len(rig.events_with_id("lane1:skip-2")) == 1


async def test_a_frame_trickled_in_with_one_long_pause_is_taken_and_with_two_is_dropped(rig, mock_clock):
    # The gateway's clock moves only here, each time after it has read what was written.
    t = rig.terminal
    frame = build_frame(sale("slow-1"))
    await rig.run(t.ser.write, frame[:5])
    await rig.wait_read()
    mock_clock.jump(1.9)  # complete within the 2.0 s a partial frame may stay
    await rig.run(t.ser.write, frame[5:])
    assert await rig.run(read_bytes, t, 1) == bytes([ACK])
    [answer] = [await rig.run(t._read_frame, time.monotonic() + WAIT_S)]
    assert answer["re"] == "slow-1" and answer["ok"] is True
    frame = build_frame(sale("slow-2"))
    for part in (frame[:1], frame[1:8]):
        await rig.run(t.ser.write, part)
        await rig.wait_read()
        mock_clock.jump(1.9)
    # Incomplete for 3.8 s: discarded, never applied; the terminal's next frame is not swallowed.
    await rig.wait_metric("gateway_ecr_rejects_total", 1, reason="timeout")
    await rig.run(t.ser.write, frame[8:])
    [again] = await rig.run(t.request, sale("slow-3"))
    assert again["ok"] is True and len(rig.events_with_id("lane1:slow-3")) == 1
    assert rig.events_with_id("lane1:slow-2") == []


def test_a_frame_in_one_byte_writes_with_1_9_s_pauses_never_raises_and_the_next_frame_is_taken():
    conn = ecr.EcrConnection()
    frame = build_frame(sale("drip", 1))
    now = 0.0
    events = []
    for byte in frame:
        conn.receive_data(bytes([byte]), now)
        now += 1.9
        conn.tick(now)
        while (event := conn.next_event()) is not ecr.NEED_DATA:
            events.append(event)
    assert not [e for e in events if isinstance(e, ecr.Message)]
    conn.receive_data(build_frame({"t": "ping", "id": "next"}), now)
    while conn.next_deadline() is not None and not any(isinstance(e, ecr.Message) for e in events):
        now = conn.next_deadline()
        conn.tick(now)
        while (event := conn.next_event()) is not ecr.NEED_DATA:
            events.append(event)
    while (event := conn.next_event()) is not ecr.NEED_DATA:
        events.append(event)
    assert [e.body["id"] for e in events if isinstance(e, ecr.Message)] == ["next"]


# --- POS/1 over real HTTP ----------------------------------------------------------------------

POS_TOKENS = {"lane1": "tok-lane1-secret", "lane2": "tok-lane2-secret"}


async def _pos(core, nursery, registry=None):
    from device_plugins.pos_api import Metrics as PosMetrics, make_app
    from gateway._http import serve_asgi

    app = make_app(core.submit, POS_TOKENS, PosMetrics(registry or CollectorRegistry()))
    [url] = await nursery.start(serve_asgi, app, "127.0.0.1:0")
    return int(url.rsplit(":", 1)[1].rstrip("/"))


async def _post(port, body: bytes, token="tok-lane2-secret", ctype="application/json") -> tuple[int, bytes]:
    return await post_raw(port, "/pos/v1/sales", body, token, ctype)


async def test_slow_bodies_from_several_clients_do_not_starve_a_seller(core, nursery):
    port = await _pos(core, nursery)
    slow_streams = []

    async def slowloris(i):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        slow_streams.append(stream)
        await stream.send_all(b"POST /pos/v1/sales HTTP/1.1\r\nHost: x\r\n"
                              b"Authorization: Bearer tok-lane1-secret\r\nContent-Type: application/json\r\n"
                              b"Content-Length: 100000\r\n\r\n{")
        while True:
            await stream.send_all(b" ")
            await trio.sleep(0.2)

    async with trio.open_nursery() as attackers:
        for i in range(20):
            attackers.start_soon(slowloris, i)
        await trio.sleep(0.3)
        started = time.monotonic()
        for i in range(10):
            body = json.dumps(sale(f"fast-{i}")).encode()
            status, _raw = await _post(port, body)
            assert status == 201
        elapsed = time.monotonic() - started
        attackers.cancel_scope.cancel()
    for stream in slow_streams:
        await stream.aclose()
    assert elapsed < 3.0
    with core.store.read() as tx:
        ids = [e["id"] for e in tx.events() if e["type"] == "sale"]
    assert sorted(ids) == sorted(f"lane2:fast-{i}" for i in range(10))


_json_junk = [b"", b"{", b"[]", b"null", b"1e999999", b'{"id": 1}', b'{"id": "x", "lines": 5}',
              b'{"id": "x", "lines": [{"code": null, "qty": "1"}]}', b"\xff\xfe", b'"' + b"\\u0000" * 10 + b'"',
              b"[" * 5000 + b"]" * 5000, b'{"id": "x", "lines": [{"sku": "SKU-4", "qty": 1e300}]}',
              b'{"id": "' + b"x" * 70 + b'", "lines": [], "payments": []}',
              b'{"id": "x", "lines": [{"sku": "SKU-4", "qty": 99999999999999999999999}], "payments": []}',
              b'{"id": "x", "lines": [{"sku": "SKU-4", "qty": 1}], "payments": [{"method": "cash", "cents": -1}]}']


async def test_malformed_bodies_over_real_http_are_never_a_500(core, nursery):
    import msgpack
    from hypothesis import HealthCheck, given, settings as hsettings
    from hypothesis import strategies as st

    port = await _pos(core, nursery)
    token = trio.lowlevel.current_trio_token()
    statuses = []

    def post_sync(body, ctype):
        return trio.from_thread.run(_post, port, body, "tok-lane2-secret", ctype, trio_token=token)

    leaf = st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=8) | st.binary(max_size=8)
    values = st.recursive(leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["id", "t", "lines", "payments", "sku", "code", "qty", "cents", "method", "lot"]) | st.text(max_size=4),
        inner, max_size=5), max_leaves=20)

    @hsettings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(values.map(lambda v: (msgpack.packb(v, use_bin_type=True), "application/msgpack")),
                     values.map(lambda v: (json.dumps(v, default=repr).encode(), "application/json")),
                     st.binary(max_size=64).map(lambda b: (b, "application/msgpack")),
                     st.binary(max_size=64).map(lambda b: (b, "application/json")),
                     st.sampled_from(_json_junk).map(lambda b: (b, "application/json"))))
    def check(case):
        status, raw = post_sync(*case)
        statuses.append(status)
        assert status < 500, raw[:400]

    await trio.to_thread.run_sync(check)
    assert len(statuses) >= 60


async def test_a_csv_quantity_beyond_64_bits_is_a_rejected_row_not_a_retry_forever(core, drop_dir):
    drop = CsvDrop(device(drop_dir), core.submit, Metrics(CollectorRegistry()))
    drop.prepare()
    before = stock(core.store)
    drop_file(drop_dir, "huge.csv", HEADER + "T1,B-100,99999999999999999999999,\n")
    assert await drop.poll() == [("huge.csv", "rejected")]
    assert stock(core.store) == before
    assert "row 2" in (drop_dir / "rejected" / "huge.csv.errors.txt").read_text()
