"""The ECR/1 link layer without I/O: framing, ACK/NAK, retransmission and timeouts."""
import binascii
import struct

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from device_plugins.ecr_serial import (
    NEED_DATA, Ack, AckTimeout, ConnectionClosed, Dropped, EcrConnection, EcrProtocolError, FrameRejected,
    GarbageSkipped, LinkError, Message, Nak, crc16, encode_frame,
)

STX, ETX, ACK, NAK = b"\x02", b"\x03", b"\x06", b"\x15"
PING = {"t": "ping", "id": "L1-1"}


def frame(body, *, crc_xor=0, etx=ETX, length=None) -> bytes:
    """A frame built here by hand, independently of the code under test."""
    packed = body if isinstance(body, bytes) else msgpack.packb(body)
    head = struct.pack(">H", len(packed) if length is None else length)
    crc = binascii.crc_hqx(head + packed, 0xFFFF) ^ crc_xor
    return STX + head + packed + struct.pack(">H", crc) + etx


def events(conn):
    out = []
    while (event := conn.next_event()) is not NEED_DATA:
        out.append(event)
    return out


def feed(conn, data, now=0.0, *, chunk=None):
    if chunk is None:
        conn.receive_data(data, now)
    else:
        for i in range(0, len(data), chunk):
            conn.receive_data(data[i:i + chunk], now)
    return events(conn)


def messages(evs):
    return [e.body for e in evs if isinstance(e, Message)]


def test_crc_check_value():
    assert crc16(b"123456789") == 0x29B1


@pytest.mark.parametrize("chunk", [None, 1, 2, 5])
def test_good_frame_whole_bytewise_and_with_trailing_garbage(chunk):
    conn = EcrConnection()
    evs = feed(conn, frame(PING) + b"zz\x00\xff", chunk=chunk)
    assert messages(evs) == [PING]
    assert sum(e.count for e in evs if isinstance(e, GarbageSkipped)) == 4
    assert conn.data_to_send() == ACK


def test_noise_before_and_between_frames():
    conn = EcrConnection()
    second = {"t": "quote", "id": "L1-2", "lines": [{"code": "SKU-1", "qty": 2}]}
    evs = feed(conn, b"BOOT v1.0\r\n" + frame(PING) + b"\xff\xfe" + frame(second))
    assert messages(evs) == [PING, second]
    assert [e.count for e in evs if isinstance(e, GarbageSkipped)] == [11, 2]
    assert conn.data_to_send() == ACK + ACK


@pytest.mark.parametrize(("bad", "reason"), [
    (frame(PING, crc_xor=0x0001), "crc"),
    (frame(PING, crc_xor=0x8000), "crc"),
    (frame(PING, etx=b"\x04"), "etx"),
    (frame(msgpack.packb([1, 2, 3])), "body"),           # not a map
    (frame(b"\xc1"), "body"),                            # not MessagePack at all
    (frame(msgpack.packb({1: "x"})), "body"),           # keys must be strings
    (frame(msgpack.packb(PING) + b"\x00"), "body"),      # extra data after the map
])
def test_bad_frames_are_naked_and_the_next_one_taken(bad, reason):
    for chunk in (None, 1):
        conn = EcrConnection()
        evs = feed(conn, bad + frame(PING), chunk=chunk)
        assert FrameRejected(reason) in evs
        assert messages(evs) == [PING]
        assert conn.data_to_send() == NAK + ACK


@pytest.mark.parametrize("length", [0, 16385, 65535])
def test_bad_length_is_naked_and_hunting_resumes(length):
    conn = EcrConnection()
    evs = feed(conn, STX + struct.pack(">H", length) + frame(PING))
    assert FrameRejected("length") in evs
    assert messages(evs) == [PING]
    assert conn.data_to_send() == NAK + ACK


def test_largest_frame_is_accepted():
    body = {"t": "ping", "id": "x", "pad": "a" * 16364}
    packed = msgpack.packb(body)
    assert len(packed) == 16384
    conn = EcrConnection()
    assert messages(feed(conn, frame(body), chunk=1000)) == [body]


def test_partial_frame_is_discarded_after_two_seconds():
    conn = EcrConnection()
    whole = frame(PING)
    assert feed(conn, whole[:5], now=10.0) == []
    assert conn.next_deadline() == pytest.approx(12.0)
    conn.tick(11.99)
    assert events(conn) == []
    conn.tick(12.0)
    assert FrameRejected("timeout") in events(conn)
    assert conn.data_to_send() == b""  # no NAK for a timeout
    assert messages(feed(conn, whole, now=12.5)) == [PING]
    assert conn.data_to_send() == ACK


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_a_good_frame_inside_a_partial_one_is_taken_at_once(chunk):
    conn = EcrConnection()
    # Each "02 3F FF" announces a 16,383-byte frame; the real frame follows inside all five.
    evs = feed(conn, b"\x02\x3f\xff" * 5 + frame(PING), now=0.0, chunk=chunk)
    assert messages(evs) == [PING]
    assert sum(e.count for e in evs if isinstance(e, GarbageSkipped)) == 15
    assert not [e for e in evs if isinstance(e, FrameRejected)]
    assert conn.data_to_send() == ACK
    assert conn.next_deadline() is None  # nothing partial left waiting


def test_a_good_frame_inside_a_partial_one_after_the_partial_waited_a_while():
    conn = EcrConnection()
    assert feed(conn, b"\x02\x10\x00junk", now=0.0) == []
    evs = feed(conn, frame(PING)[:4], now=1.0) + feed(conn, frame(PING)[4:], now=1.5)
    assert messages(evs) == [PING]
    assert conn.data_to_send() == ACK
    # The next frame starts clean: no 2 s timer is still running from the noise.
    assert conn.next_deadline() is None
    assert messages(feed(conn, frame(PING), now=1.6)) == [PING]


def test_a_frame_with_a_bad_crc_inside_a_partial_one_is_not_taken():
    conn = EcrConnection()
    evs = feed(conn, b"\x02\x10\x00" + frame(PING, crc_xor=1) + frame(PING, etx=b"\x04"), now=0.0)
    assert messages(evs) == [] and conn.data_to_send() == b""
    conn.tick(2.0)
    assert FrameRejected("timeout") in events(conn)


def test_a_16_kib_partial_frame_of_garbage_is_scanned_once_not_per_byte(monkeypatch):
    from device_plugins.ecr_serial import _protocol

    checked = []
    monkeypatch.setattr(_protocol, "crc16", lambda data: checked.append(len(data)) or crc16(data))
    rng = __import__("random").Random(7)
    # STXs everywhere, each announcing a short frame that ends (with an ETX) inside the garbage.
    garbage = bytearray(rng.randbytes(16370))
    for at in range(0, len(garbage) - 64, 5):
        garbage[at:at + 3] = b"\x02\x00\x01"
        garbage[at + 6] = 0x03
    conn = EcrConnection()
    for i in range(0, len(garbage), 1):
        conn.receive_data(bytes(garbage[i:i + 1]), 0.0)
    conn.receive_data(frame(PING), 0.0)
    evs = events(conn)
    assert messages(evs) == [PING]
    # Every inner candidate was checked once: about one CRC of 3 bytes per STX, not one per byte
    # received for each of them.
    assert len(checked) <= len(garbage) // 5 + 2
    assert sum(checked) <= 4 * len(garbage)


def test_late_data_expires_the_old_partial_first():
    conn = EcrConnection()
    feed(conn, frame(PING)[:4], now=0.0)
    evs = feed(conn, frame(PING), now=5.0)
    assert FrameRejected("timeout") in evs
    assert messages(evs) == [PING]


def decode_sent(data: bytes) -> dict:
    assert data[:1] == STX and data[-1:] == ETX
    length = struct.unpack(">H", data[1:3])[0]
    assert len(data) == length + 6
    assert struct.unpack(">H", data[-3:-1])[0] == binascii.crc_hqx(data[1:3 + length], 0xFFFF)
    return msgpack.unpackb(data[3:3 + length])


def test_send_then_ack():
    conn = EcrConnection()
    answer = {"t": "res", "re": "L1-1", "ok": True, "time_ms": 5}
    out = conn.send(Message(answer), now=1.0)
    assert decode_sent(out) == answer
    assert conn.awaiting_ack and conn.next_deadline() == pytest.approx(2.0)
    assert feed(conn, ACK, now=1.1) == [Ack()]
    assert not conn.awaiting_ack and conn.next_deadline() is None


def test_nak_resends_and_gives_up_after_three_retries():
    conn = EcrConnection()
    answer = {"t": "res", "re": "L1-1", "ok": True}
    out = conn.send(Message(answer), now=0.0)
    for _ in range(3):
        assert feed(conn, NAK, now=0.1) == [Nak(resent=True)]
        assert conn.data_to_send() == out
    evs = feed(conn, NAK, now=0.2)
    assert evs == [Nak(resent=False), LinkError(answer, 4, "nak")]
    assert conn.data_to_send() == b""
    assert not conn.awaiting_ack


def test_silence_resends_each_second_then_link_error():
    conn = EcrConnection()
    answer = {"t": "res", "re": "L1-9", "ok": False, "err": "UNKNOWN_ITEM", "msg": "no such code"}
    out = conn.send(Message(answer), now=0.0)
    sends = [0.0]
    while (deadline := conn.next_deadline()) is not None:
        conn.tick(deadline - 0.001)
        assert events(conn) == []
        conn.tick(deadline)
        evs = events(conn)
        if conn.data_to_send() == out:
            assert evs == [AckTimeout(resent=True)]
            sends.append(deadline)
        else:
            assert evs == [AckTimeout(resent=False), LinkError(answer, 4, "timeout")]
    assert sends == pytest.approx([0.0, 1.0, 2.0, 3.0])


def test_frames_wait_their_turn():
    conn = EcrConnection()
    first, second = {"t": "res", "re": "a", "ok": True}, {"t": "res", "re": "b", "ok": True}
    assert decode_sent(conn.send(Message(first), now=0.0)) == first
    assert conn.send(Message(second), now=0.1) == b""
    assert feed(conn, ACK, now=0.2) == [Ack()]
    assert decode_sent(conn.data_to_send()) == second


def test_ack_inside_noise_and_stray_acks():
    conn = EcrConnection()
    assert feed(conn, ACK + NAK) == [GarbageSkipped(2)]  # nothing in flight: just noise
    conn.send(Message({"t": "res", "re": "a", "ok": True}), now=0.0)
    evs = feed(conn, b"\xff" + ACK + frame(PING))
    assert evs[0] == GarbageSkipped(1) and Ack() in evs and messages(evs) == [PING]


def test_end_of_stream():
    conn = EcrConnection()
    answer = {"t": "res", "re": "a", "ok": True}
    conn.send(Message(answer), now=0.0)
    evs = feed(conn, frame(PING)[:6], now=0.1) + feed(conn, b"", now=0.2)
    assert evs == [FrameRejected("eof"), LinkError(answer, 1, "closed"), ConnectionClosed()]
    conn.receive_data(b"more", 0.3)
    assert events(conn) == []
    with pytest.raises(EcrProtocolError):
        conn.send(Message(answer), now=0.4)


def test_send_refuses_what_cannot_be_framed():
    conn = EcrConnection()
    with pytest.raises(EcrProtocolError, match="16384"):
        conn.send(Message({"pad": "a" * 20000}), now=0.0)
    with pytest.raises(EcrProtocolError, match="MessagePack"):
        conn.send(Message({"x": object()}), now=0.0)
    with pytest.raises(EcrProtocolError):
        conn.send(Ack(), now=0.0)
    assert encode_frame(PING) == frame(PING)


@settings(max_examples=300)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=64))
def test_arbitrary_bytes_never_raise(data, chunk):
    for step in (None, chunk):
        conn = EcrConnection()
        evs = feed(conn, data, chunk=step)
        conn.tick(100.0)
        evs += events(conn)
        out = conn.data_to_send()
        assert set(out) <= {ACK[0], NAK[0]}
        assert out.count(ACK) == len(messages(evs))
        for body in messages(evs):
            assert isinstance(body, dict)


bodies = st.dictionaries(st.text(max_size=8), st.one_of(st.integers(min_value=-2**63, max_value=2**64 - 1), st.text(max_size=20),
                                                       st.booleans(), st.none()), max_size=6)
noise = st.binary(max_size=40).map(lambda b: b.replace(STX, b""))


@settings(max_examples=200)
@given(bodies, noise, noise, st.integers(min_value=1, max_value=17))
def test_good_frames_survive_noise_and_any_chunking(body, before, after, chunk):
    conn = EcrConnection()
    evs = feed(conn, before + frame(body) + after, chunk=chunk)
    assert messages(evs) == [body]


@settings(max_examples=200)
@given(bodies, st.integers(min_value=1, max_value=0xFFFF), noise)
def test_a_wrong_crc_is_never_accepted(body, xor, before):
    conn = EcrConnection()
    evs = feed(conn, before + frame(body, crc_xor=xor) + frame(PING))
    assert messages(evs) == [PING]
    assert FrameRejected("crc") in evs
    assert conn.data_to_send() == NAK + ACK


@settings(max_examples=300)
@given(bodies, st.data())
def test_any_single_bit_flip_is_never_accepted(body, data):
    good = frame(body)
    bit = data.draw(st.integers(min_value=0, max_value=len(good) * 8 - 1))
    bad = bytearray(good)
    bad[bit // 8] ^= 1 << (bit % 8)
    conn = EcrConnection()
    evs = feed(conn, bytes(bad))
    conn.tick(10.0)
    evs += events(conn)
    assert body not in messages(evs)
    if 3 <= bit // 8 < len(good) - 1:  # body or CRC: the frame is complete and refused
        assert FrameRejected("crc") in evs


anything = st.binary(max_size=60)


@settings(max_examples=400)
@given(bodies, anything, st.integers(min_value=1, max_value=17))
def test_arbitrary_noise_then_a_good_frame_yields_that_frame_without_waiting(body, before, chunk):
    # A terminal sends the frame again on a NAK (at most 3 times); no clock ever moves.
    conn = EcrConnection()
    evs = feed(conn, before + frame(body), chunk=chunk)
    sends = 1
    while body not in messages(evs) and NAK in conn.data_to_send() and sends < 4:
        evs += feed(conn, frame(body), chunk=chunk)
        sends += 1
    assert body in messages(evs)


def test_an_answer_that_waited_longer_than_its_sends_would_take_is_dropped_unsent():
    conn = EcrConnection()
    first, second, third = ({"t": "res", "re": r, "ok": True} for r in "abc")
    conn.send(Message(first), now=0.0)
    conn.send(Message(second), now=0.0)
    conn.send(Message(third), now=0.5)
    # The peer never ACKs: `first` goes four times, then is given up at 4.0 s.
    for t in (1.0, 2.0, 3.0, 4.0):
        conn.tick(t)
    evs = events(conn)
    assert evs[-2:] == [LinkError(first, 4, "timeout"), Dropped(second, "stale")]
    # `second` waited 4.0 s, all its four sends' worth: never sent. `third` (3.5 s) goes now.
    assert decode_sent(conn.data_to_send()[-len(encode_frame(third)):]) == third
    assert conn.awaiting_ack


def test_at_most_max_queued_answers_wait_and_the_oldest_goes_first():
    conn = EcrConnection(max_queued=3)
    bodies_ = [{"t": "res", "re": str(i), "ok": True} for i in range(6)]
    for body in bodies_:
        conn.send(Message(body), now=0.0)
    # One in flight, three waiting: the two oldest waiting were dropped.
    assert events(conn) == [Dropped(bodies_[1], "full"), Dropped(bodies_[2], "full")]
    feed(conn, ACK, now=0.1)
    assert decode_sent(conn.data_to_send()[-len(encode_frame(bodies_[3])):]) == bodies_[3]


def test_answers_still_waiting_when_the_stream_ends_are_reported_dropped():
    conn = EcrConnection()
    first, second = {"t": "res", "re": "a", "ok": True}, {"t": "res", "re": "b", "ok": True}
    conn.send(Message(first), now=0.0)
    conn.send(Message(second), now=0.0)
    assert feed(conn, b"", now=0.1) == [LinkError(first, 1, "closed"), Dropped(second, "closed"),
                                        ConnectionClosed()]


def _raw_str(raw: bytes) -> bytes:
    return bytes([0xD9, len(raw)]) + raw  # str 8, whatever its bytes


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=6), st.binary(max_size=6)), min_size=1, max_size=5,
                unique_by=lambda pair: pair[0]))
def test_a_map_is_flagged_escaped_exactly_when_a_string_held_bytes_that_are_not_utf8(pairs):
    # The link walks a request's strings for bad bytes only when the strict decode failed: that
    # must be exactly when the walk would find some, and the map must be the same either way.
    from device_plugins.ecr_serial._protocol import decode_body, decode_request, invalid_utf8

    packed = bytes([0x80 | len(pairs)]) + b"".join(_raw_str(k) + _raw_str(v) for k, v in pairs)
    body, escaped = decode_request(packed)
    assert body == decode_body(packed)
    assert body == {k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape") for k, v in pairs}
    assert escaped == (invalid_utf8(body) is not None)
