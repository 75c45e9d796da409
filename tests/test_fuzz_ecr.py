"""ECR/1 fuzzed: byte streams with noise fed to the sans-io framer, and to the plugin and the real
core over a pty. No crash, every frame taken whole, every refusal a stable code with words, and a
refused request leaves the ledger as it was."""
from __future__ import annotations

import itertools
import time

import msgpack
from hypothesis import strategies as st

from core_ext._verify import verify
from device_plugins import ecr_serial as ecr

from . import _fuzz
from ._fuzz import PROFILES, assert_refusal, ledger_state
from .ecr_terminal import TerminalError, build_frame

STX, ETX, ACK, NAK = 0x02, 0x03, 0x06, 0x15
EVENTS = (ecr.Message, ecr.Ack, ecr.Nak, ecr.AckTimeout, ecr.LinkError, ecr.GarbageSkipped, ecr.FrameRejected,
          ecr.ConnectionClosed)

scalars = st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.text(max_size=12)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
bodies = st.dictionaries(st.sampled_from(["t", "id", "lines", "code", "qty", "member"]) | st.text(max_size=6),
                         values, min_size=1, max_size=5)
# Line noise that cannot open a frame (no STX): what a terminal booting or a bad cable sends.
quiet_noise = st.binary(max_size=48).map(lambda b: b.replace(bytes([STX]), b""))


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` split at the given offsets, as reads from a serial port would hand it over (never an
    empty read: that is the end of the stream)."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in itertools.pairwise([0, *points, len(data)]) if b > a]


def feed(conn: ecr.EcrConnection, chunks: list[bytes], now: float = 0.0, step: float = 0.001) -> list:
    events = []
    for chunk in chunks:
        conn.receive_data(chunk, now)
        conn.tick(now)
        while (event := conn.next_event()) is not ecr.NEED_DATA:
            events.append(event)
        now += step
    return events


# --- the sans-io framer ------------------------------------------------------------------------

@PROFILES
def test_any_bytes_in_any_chunks_never_raise_and_give_only_link_events(examples):
    def check(data, cuts, end):
        conn = ecr.EcrConnection()
        events = feed(conn, chunked(data, cuts) + ([b""] if end else []))
        assert all(isinstance(e, EVENTS) for e in events)
        assert set(conn.data_to_send()) <= {ACK, NAK}  # nothing was sent, so only ACK/NAK go out
        assert not end or isinstance(events[-1], ecr.ConnectionClosed)

    _fuzz.run("ECR/1 framer: raw bytes", examples, check, st.binary(max_size=512),
              st.lists(st.integers(0, 600), max_size=8), st.booleans())


@PROFILES
def test_frames_between_quiet_noise_are_each_taken_whole_and_acked_in_order(examples):
    def check(parts, cuts):
        stream = b"".join(noise + ecr.encode_frame(body) for noise, body in parts)
        conn = ecr.EcrConnection()
        events = feed(conn, chunked(stream, cuts))
        assert [e.body for e in events if isinstance(e, ecr.Message)] == [body for _n, body in parts]
        assert conn.data_to_send().count(bytes([ACK])) == len(parts)

    _fuzz.run("ECR/1 framer: frames in noise", examples, check,
              st.lists(st.tuples(quiet_noise, bodies), min_size=1, max_size=4),
              st.lists(st.integers(0, 2000), max_size=6))


@PROFILES
def test_a_corrupted_frame_is_naked_and_the_next_good_one_taken(examples):
    def check(body, flip):
        frame = bytearray(ecr.encode_frame(body))
        index = 3 + flip % (len(frame) - 4)  # a byte of the body or the CRC
        frame[index] ^= 0x5A
        conn = ecr.EcrConnection()
        events = feed(conn, [bytes(frame)])
        # The corruption changed the body or its CRC: rejected unless it made another valid frame.
        if not any(isinstance(e, ecr.Message) for e in events):
            assert conn.data_to_send() == bytes([NAK])
            # The terminal resends after a NAK; a partial frame still open expires first.
            if conn.next_deadline() is not None:
                conn.tick(conn.next_deadline())
            events = feed(conn, [ecr.encode_frame(body)], now=100.0)
            assert [e.body for e in events if isinstance(e, ecr.Message)] == [body]

    _fuzz.run("ECR/1 framer: corrupted frames", examples, check, bodies, st.integers(0, 1 << 16))


def terminal_sends(conn: ecr.EcrConnection, frame: bytes, now: float, sends: int = 4) -> tuple[list, float]:
    """A terminal sending `frame` as the spec says: again at once on NAK, again after its ACK wait
    of 1 s without an answer, at most `sends` times."""
    events = []
    for _ in range(sends):
        events += feed(conn, [frame], now)
        answer = conn.data_to_send()
        if answer.endswith(bytes([ACK])):
            break
        if not answer.endswith(bytes([NAK])):
            now += 1.0
            conn.tick(now)
            while (event := conn.next_event()) is not ecr.NEED_DATA:
                events.append(event)
            conn.data_to_send()
    return events, now


def first_send_taken(noise: bytes, body: dict) -> bool:
    """The spec: stray bytes before a frame never blind the line for longer than the frame takes to
    arrive, so the terminal's first send of `body` after `noise` is ACKed and taken, once."""
    conn = ecr.EcrConnection()
    feed(conn, [noise] if noise else [])
    conn.data_to_send()
    events = feed(conn, [ecr.encode_frame(body)], 0.01)
    return (conn.data_to_send().endswith(bytes([ACK]))
            and [e.body for e in events if isinstance(e, ecr.Message)] == [body])


@PROFILES
def test_noise_without_stx_never_delays_the_next_frame(examples):
    def check(noise, body):
        assert first_send_taken(noise, body)

    _fuzz.run("ECR/1 framer: quiet noise then a frame", examples, check, quiet_noise, bodies)


@PROFILES
def test_noise_with_stray_stx_bytes_never_delays_the_next_frame(examples):
    # Tried first, whatever hypothesis draws: STX and a length of 16384, then the terminal's frame.
    assert first_send_taken(bytes([STX]) + (16384).to_bytes(2, "big"), {"t": "ping", "id": "p1"})
    # A stray STX whose "frame" ends inside the real one (a short LEN): that bad frame is NAKed, and
    # the real frame that began inside it is still taken at once (found by the soak's fuzzing).
    assert first_send_taken(bytes([STX, 0]), {"t": None})
    assert first_send_taken(bytes([STX, 0]), {"t": "ping", "id": "p2"})
    stx_noise = st.binary(max_size=24).map(lambda b: bytes([STX]) + b)

    def check(noise, body):
        assert first_send_taken(noise, body)

    _fuzz.run("ECR/1 framer: noise with STX then a frame", examples, check, stx_noise, bodies)


# --- the plugin and the real core over a pty ---------------------------------------------------

def sale(sale_id: str) -> dict:
    return {"t": "sale", "id": sale_id, "lines": [{"code": "SKU-4", "qty": 1}],
            "payments": [{"method": "cash", "cents": 350}]}


@PROFILES
async def test_noise_then_a_sale_over_the_pty_is_answered_and_applied_once(rig, examples):
    ids = iter(range(10**9))
    answered = []

    def check(noise):
        sid = f"fz-{next(ids)}"
        [answer] = rig.terminal.request(sale(sid), noise=noise)
        assert answer["ok"] is True, answer
        answered.append(sid)

    await rig.run(_fuzz.run, "ECR/1 over a pty: noise then a sale", max(3, examples // 10), check, quiet_noise)
    assert answered
    for sid in set(answered):
        assert len(rig.events_with_id(f"lane1:{sid}")) == 1
    assert verify(rig.core.store) == []


request_bodies = st.fixed_dictionaries(
    {"t": st.sampled_from(list(ecr.REQUEST_TYPES)), "id": st.text(min_size=1, max_size=10)},
    optional={"lines": st.lists(st.fixed_dictionaries({}, optional={
        "code": st.sampled_from(["SKU-1", "SKU-4", "4711", "B-100", "NOPE"]) | st.text(max_size=6),
        "qty": st.integers(-3, 5) | values, "lot": st.sampled_from(["A1", "B2", "ZZ"]) | values}), max_size=3),
        "payments": st.lists(st.fixed_dictionaries({"method": st.sampled_from(["cash", "card", "points"]) | values,
                                                    "cents": st.integers(-1, 100_000) | values}), max_size=2),
        "member": st.sampled_from(["M1", "M2", "M9"]) | values, "orig": st.text(max_size=6) | values,
        "code": st.sampled_from(["SKU-1", "4711"]) | values})


@PROFILES
async def test_fuzzed_requests_over_the_pty_are_answered_and_a_refusal_changes_nothing(rig, examples):
    def check(body):
        body = {**body, "id": f"r{check.n}-{body['id']}"[:64]}
        check.n += 1
        before = ledger_state(rig.core.store)
        [answer] = rig.terminal.request(body)
        assert answer.get("re") == body["id"]
        if answer.get("ok") is not True:
            assert_refusal(answer)
            assert ledger_state(rig.core.store) == before
        else:
            assert isinstance(msgpack.packb(answer), bytes)
    check.n = 0

    await rig.run(_fuzz.run, "ECR/1 over a pty: request bodies", max(5, examples // 5), check, request_bodies)
    assert verify(rig.core.store) == []


# --- bursts and floods on the pty --------------------------------------------------------------

async def test_every_acked_request_of_a_burst_gets_exactly_one_response(rig):
    burst = 40
    frames = b"".join(build_frame({"t": "ping", "id": f"b{i}"}) for i in range(burst))

    def send_and_collect():
        rig.terminal.noise(frames)  # all at once, faster than one at a time
        got = []
        while len(got) < burst:
            try:
                got.append(rig.terminal._read_frame(time.monotonic() + 3.0))
            except TerminalError:  # no more responses: the rest were dropped
                break
        # Then one more request: whatever comes before its answer is a response too many.
        rig.terminal.noise(build_frame({"t": "ping", "id": "after"}))
        extra = []
        while not extra or extra[-1].get("re") != "after":
            extra.append(rig.terminal._read_frame(time.monotonic() + 3.0))
        return got, extra[:-1]

    got, extra = await rig.run(send_and_collect)
    assert sorted(r["re"] for r in got) == sorted(f"b{i}" for i in range(burst))
    assert extra == [], "a request of the burst was answered twice"


async def test_a_flood_of_bad_frames_is_counted_not_logged_line_by_line(rig, caplog):
    caplog.set_level("INFO", logger="gateway.ecr")
    bad = build_frame({"t": "ping", "id": "x"}, corrupt_crc=True) * 200
    await rig.run(rig.terminal.noise, bad)
    await rig.wait_metric("gateway_ecr_rejects_total", 200.0, reason="crc")
    lines = [r for r in caplog.records if r.name == "gateway.ecr"]
    assert len(lines) <= 10, f"{len(lines)} log lines for 200 bad frames"
