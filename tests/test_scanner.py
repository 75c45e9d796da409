"""Serial barcode scanners: the line protocol without I/O, then real pseudo-terminals and the core."""
from __future__ import annotations

import logging
import pytest
import serial
import trio
from hypothesis import given, settings, strategies as st
from prometheus_client import CollectorRegistry

from core_ext._store import lot_key
from device_plugins import scanner_serial
from device_plugins.scanner_serial import (
    NEED_DATA, ConnectionClosed, Rejected, Scanned, ScannerConnection,
)

from ._data import GTIN_STRIPS, GTIN_THERMO
from .ecr_terminal import Cable

GS = b"\x1d"
TABLE = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-. $/+%"


def hibc(data: str) -> bytes:
    return (data + TABLE[sum(TABLE.index(c) for c in data) % 43]).encode()


GS1_SCAN = b"]d201" + GTIN_STRIPS.encode() + b"17271231" + b"10NEWLOT" + GS + b"21SN1"
PRIMARY = hibc("+H123ABC1230")
SECONDARY = hibc("+$$3300101L9/S77" + PRIMARY.decode()[-1])


def drain(conn):
    out = []
    while (event := conn.next_event()) is not NEED_DATA:
        out.append(event)
    return out


def feed(conn, data, now=0.0, chunk=None):
    if chunk is None:
        conn.receive_data(data, now)
    else:
        for i in range(0, len(data), chunk):
            conn.receive_data(data[i:i + chunk], now)
    return drain(conn)


def raws(events):
    return [e.scan.raw for e in events if isinstance(e, Scanned)]


@pytest.mark.parametrize("chunk", [None, 1, 3])
@pytest.mark.parametrize(("terminator", "sep"), [
    ("any", b"\r"), ("any", b"\n"), ("any", b"\r\n"), ("cr", b"\r"), ("lf", b"\n"),
    ("crlf", b"\r\n"),
])
def test_lines_whole_bytewise_and_with_a_trailing_partial(terminator, sep, chunk):
    conn = ScannerConnection(terminator=terminator)
    data = GS1_SCAN + sep + b"4006381333931" + sep + sep + b"96385074"
    events = feed(conn, data, chunk=chunk)
    assert raws(events) == [GS1_SCAN.decode(), "4006381333931"]
    scan = events[0].scan
    assert (scan.gtin, scan.lot, scan.expiry, scan.serial) == (GTIN_STRIPS, "NEWLOT", "2027-12-31",
                                                               "SN1")
    assert feed(conn, b"", now=1.0) == [ConnectionClosed(partial=8)]


def test_a_foreign_terminator_is_data():
    conn = ScannerConnection(terminator="crlf")
    events = feed(conn, b"4006381333931\n96385074\r\n")
    assert [type(e) for e in events] == [Rejected]
    conn = ScannerConnection(terminator="lf")
    assert raws(feed(conn, b"4006381333931\r\n")) == ["4006381333931"]  # stray CR is stripped


def test_bad_terminator_setting():
    with pytest.raises(ValueError, match="terminator"):
        ScannerConnection(terminator="tab")


def test_rejects_name_the_reason():
    conn = ScannerConnection()
    events = feed(conn, b"0109506000134353\r4006381333932\r\xff\xfe\r" + SECONDARY + b"\r")
    assert [(e.code, e.raw) for e in events] == [
        ("gtin_check", b"0109506000134353"), ("gtin", b"4006381333932"), ("encoding", b"\xff\xfe"),
        ("hibc_secondary_alone", SECONDARY)]
    assert all(e.reason for e in events)


def test_overlong_line_is_rejected_once_and_reading_resumes():
    conn = ScannerConnection(max_line=32)
    events = feed(conn, b"9" * 100 + b"9" * 100 + b"\r96385074\r", chunk=16)
    assert [type(e) for e in events] == [Rejected, Scanned]
    assert events[0].code == "too_long"


def test_hibc_primary_and_secondary_make_one_scan():
    conn = ScannerConnection(link_window=3.0)
    assert feed(conn, PRIMARY + b"\r", now=10.0) == []
    assert conn.next_deadline() == pytest.approx(13.0)
    [event] = feed(conn, SECONDARY + b"\r", now=11.0)
    scan = event.scan
    assert (scan.hibc, scan.lot, scan.expiry, scan.serial) == ("H123ABC1230", "L9", "2030-01-01",
                                                               "77")
    assert conn.next_deadline() is None


def test_hibc_primary_alone_goes_on_after_the_window_or_another_scan():
    conn = ScannerConnection(link_window=3.0)
    feed(conn, PRIMARY + b"\r", now=0.0)
    conn.tick(2.9)
    assert drain(conn) == []
    conn.tick(3.0)
    [event] = drain(conn)
    assert event.scan.hibc == "H123ABC1230" and event.scan.lot is None
    feed(conn, PRIMARY + b"\r", now=5.0)
    assert raws(feed(conn, b"96385074\r", now=5.5)) == [PRIMARY.decode(), "96385074"]


def test_hibc_secondary_of_another_primary_is_rejected():
    conn = ScannerConnection()
    other = hibc("+$$3300101L9" + ("A" if PRIMARY.decode()[-1] != "A" else "B"))
    events = feed(conn, PRIMARY + b"\r" + other + b"\r")
    assert isinstance(events[0], Scanned) and events[0].scan.lot is None
    assert isinstance(events[1], Rejected) and events[1].code == "hibc_link"


@settings(max_examples=300)
@given(st.binary(max_size=200), st.integers(min_value=1, max_value=50),
       st.sampled_from(["any", "cr", "lf", "crlf"]))
def test_arbitrary_bytes_never_raise(data, chunk, terminator):
    conn = ScannerConnection(terminator=terminator, max_line=64)
    events = feed(conn, data, chunk=chunk)
    conn.tick(100.0)
    events += drain(conn) + feed(conn, b"")
    assert isinstance(events[-1], ConnectionClosed)
    for event in events[:-1]:
        assert isinstance(event, (Scanned, Rejected))
        if isinstance(event, Rejected):
            assert event.code and event.reason


# --- on a real serial line, with the core ------------------------------------------------------

class ScannerRig:
    def __init__(self, core, cable, registry, name):
        self.core = core
        self.cable = cable
        self.registry = registry
        self.name = name
        self.ser = serial.Serial(cable.terminal_path, baudrate=9600, timeout=0.1)

    def scan(self, data: bytes, end: bytes = b"\r\n") -> None:
        self.ser.write(data + end)
        self.ser.flush()

    def metric(self, name, **labels):
        return self.registry.get_sample_value(name, {"device": self.name, **labels}) or 0.0

    async def until(self, predicate):
        with trio.fail_after(10):
            while not predicate():
                await trio.sleep(0.01)

    def read(self, fn):
        with self.core.store.read() as tx:
            return fn(tx)


@pytest.fixture
def scanner(core, tmp_path, nursery):
    rigs = []

    async def start(name, role, lane=""):
        cable = Cable(str(tmp_path / f"tty-{name}"))
        await cable.plug(nursery)
        registry = CollectorRegistry()
        device = {"name": name, "kind": "scanner_serial", "port": cable.path, "baudrate": 9600,
                  "role": role, "lane": lane, "terminator": "any"}
        await nursery.start(scanner_serial.serve, device, core.submit,
                            scanner_serial.Metrics(registry))
        rig = ScannerRig(core, cable, registry, name)
        await rig.until(lambda: rig.metric("gateway_scanner_connected") == 1)
        rigs.append(rig)
        return rig

    yield start
    for rig in rigs:
        rig.ser.close()


def lot_qty(tx, sku, lot):
    row = tx.get("lots", lot_key(sku, lot))
    return row["qty"] if row else 0


async def test_receiving_desk(scanner):
    rig = await scanner("backroom", "receive")
    last = rig.read(lambda tx: tx.last_seq())
    rig.scan(GS1_SCAN)
    await rig.until(lambda: rig.read(lambda tx: lot_qty(tx, "SKU-1", "NEWLOT")) == 1)
    event = rig.read(lambda tx: tx.event(last + 1))
    assert event["type"] == "receipt"
    assert [m[:4] for m in event["moves"]] == [["SKU-1", "NEWLOT", 1, "2027-12-31"]]

    # Garbage is rejected by reason and nothing is submitted.
    rig.scan(b"0109506000134353")
    rig.scan(b"\x00\x01noise")
    await rig.until(lambda: rig.metric("gateway_scanner_rejects_total", reason="control") == 1)
    assert rig.metric("gateway_scanner_rejects_total", reason="gtin_check") == 1
    assert rig.metric("gateway_scanner_scans_total") == 1

    # An HIBC implant: primary and secondary scanned one after the other make one receipt.
    rig.scan(PRIMARY)
    rig.scan(SECONDARY, end=b"\r")
    await rig.until(lambda: rig.read(lambda tx: lot_qty(tx, "SKU-3", "L9")) == 1)
    receipt = rig.read(lambda tx: tx.event(tx.last_seq()))
    assert receipt["moves"][0][:3] == ["SKU-3", "L9", 1]
    assert receipt["moves"][0][4] == ["77"]
    assert rig.metric("gateway_scanner_scans_total") == 2


async def test_unknown_item_is_refused_and_counted(scanner):
    rig = await scanner("backroom", "receive")
    last = rig.read(lambda tx: tx.last_seq())
    rig.scan(b"96385074")  # a real EAN-8, not in this catalog
    await rig.until(lambda: rig.metric("gateway_scanner_refused_total", err="UNKNOWN_ITEM") == 1)
    assert rig.read(lambda tx: tx.last_seq()) == last


async def test_lane_and_count_roles(scanner):
    lane = await scanner("lane-scanner", "lane", lane="2")
    lane.scan(b"]E0" + GTIN_THERMO[1:].encode())
    lane.scan(GS1_SCAN.replace(b"NEWLOT", b"A1"))
    await lane.until(lambda: len(lane.read(lambda tx: tx.get("baskets", "2") or [])) == 2)
    basket = lane.read(lambda tx: tx.get("baskets", "2"))
    assert [line["sku"] for line in basket] == ["SKU-2", "SKU-1"]
    assert basket[1]["lot"] == "A1"

    counter = await scanner("count-desk", "count")
    for _ in range(3):
        counter.scan(GS1_SCAN.replace(b"NEWLOT", b"A1"))
    key = "count-desk\x00SKU-1\x00A1"
    await counter.until(lambda: (counter.read(lambda tx: tx.get("counts", key)) or {}).get("qty") == 3)


async def test_a_scanner_stuck_on_a_bad_code_logs_once_and_counts_the_rest(scanner, caplog):
    caplog.set_level(logging.INFO, logger="gateway.scanner")
    rig = await scanner("backroom", "receive")
    rig.ser.write(b"0109506000134353\r\n" * 500)  # a wrong check digit, 500 times
    await rig.until(lambda: rig.metric("gateway_scanner_rejects_total", reason="gtin_check") == 500)
    lines = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(lines) == 1 and "scanner backroom: scan" in lines[0]
    assert rig.metric("gateway_scanner_log_lines_suppressed_total") == 499
