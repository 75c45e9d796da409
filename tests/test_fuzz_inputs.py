"""Master documents, CSV files and scans fuzzed: validation never raises and says what is wrong,
a document applies through UP/1 whole or not at all, a CSV file is applied or rejected whole, a scan
is parsed or refused with a code, and a refusal leaves the ledger as it was."""
from __future__ import annotations

import copy
import functools
import itertools

import trio
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from core_ext import Request, _master
from core_ext._barcodes import Scan, ScanError, parse_scan
from core_ext._verify import verify
from device_plugins.csv_drop import CsvDrop, Metrics as CsvMetrics
from device_plugins.csv_drop._mapper import CsvMapping, map_csv
from device_plugins.scanner_serial import _events as scan_events
from device_plugins.scanner_serial._protocol import ScannerConnection
from upstream import encode_envelope, sign_document

from . import _fuzz
from ._data import CATALOG, GTIN_STRIPS, GTIN_THERMO, NOW, with_check_digit
from ._fuzz import PROFILES, assert_refusal, ledger_state
from ._csv import device, drop_file

NOW_MS = int(NOW * 1000)
text = st.text(max_size=10)
scalars = st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False) | text
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(text, inner, max_size=3), max_leaves=8)

# Integers at the edges of what C and MessagePack hold, and of the policy's own bounds.
EDGE_INTS = st.sampled_from([-1, 0, 1, 36_500, 36_501, 10 ** 12 + 1, 2 ** 31, 2 ** 32, 2 ** 62, 2 ** 63 - 1, 2 ** 63,
                             2 ** 64 - 1])


# --- master documents ---------------------------------------------------------------------------

def mutated(base: dict, path_choices, new_value):
    """`base` with one field somewhere replaced: most of a document stays valid, so the
    validator's every branch is reached rather than only its first check."""
    doc = copy.deepcopy(base)
    items = doc["items"]
    item = items[path_choices[0] % len(items)]
    keys = sorted(item)
    key = keys[path_choices[1] % len(keys)]
    if path_choices[2] % 5 == 0:
        del item[key]
    else:
        item[key] = new_value
    return doc


@PROFILES
def test_master_validation_never_raises_and_names_each_problem(examples):
    def check(kind, body):
        problems = _master.validate(kind, body)
        assert isinstance(problems, list) and all(isinstance(p, str) and p for p in problems)

    kinds = st.sampled_from(["catalog", "members", "recalls", "policy", "promotions", "nonsense"])
    _fuzz.run("master documents: validation", examples, check, kinds, values | st.fixed_dictionaries(
        {"items": st.lists(st.dictionaries(text, values, max_size=6), max_size=3)}))


@PROFILES
async def test_a_catalog_through_up1_applies_whole_when_valid_and_changes_nothing_when_not(served, examples):
    token = trio.lowlevel.current_trio_token()
    versions = itertools.count(2)

    def check(choices, new_value):
        body = mutated(CATALOG, choices, new_value)
        valid = _master.validate("catalog", body) == []
        doc = sign_document("catalog", next(versions), body, served.up.erp_key, issued_ms=NOW_MS)
        before = ledger_state(served.up.store)
        status, _h, answer = trio.from_thread.run(functools.partial(
            served.call, "PUT", "/upstream/v1/master/catalog", body=encode_envelope(doc)), trio_token=token)
        if valid:
            assert status == 200 and answer == {"applied": doc["version"]}, answer
        else:
            assert status == 422 and answer["error"] and answer["message"], (status, answer)
            assert ledger_state(served.up.store) == before

    await trio.to_thread.run_sync(functools.partial(
        _fuzz.run, "master documents: catalogs through UP/1", examples, check,
        st.tuples(st.integers(0, 9), st.integers(0, 20), st.integers(0, 9)), values | EDGE_INTS))
    assert verify(served.up.store) == []


POLICY = {"negative_stock": "allow", "expiry_warn_days": 30, "points_offline_cap": 10_000, "points_value_cents": 1,
          "batch_max_events": 500, "batch_max_age_s": 5}


@PROFILES
async def test_a_policy_through_up1_applies_whole_when_valid_and_every_sale_runs_under_it(served, examples):
    """A policy the gateway accepts is one it can sell under, in either flavour: the compiled one
    once took an expiry warning of 2**63 days and then failed every sale of a lot-tracked item."""
    token = trio.lowlevel.current_trio_token()
    versions = itertools.count(2)
    core = served.up.core
    sales = itertools.count()
    lines = [{"sku": "SKU-1", "qty": 1, "lot": "B2"}, {"sku": "SKU-2", "qty": 1}]

    def check(key_choice, new_value):
        body = dict(POLICY)
        body[sorted(POLICY)[key_choice % len(POLICY)]] = new_value
        valid = _master.validate("policy", body) == []
        doc = sign_document("policy", next(versions), body, served.up.erp_key, issued_ms=NOW_MS)
        before = ledger_state(served.up.store)
        status, _h, answer = trio.from_thread.run(functools.partial(
            served.call, "PUT", "/upstream/v1/master/policy", body=encode_envelope(doc)), trio_token=token)
        if not valid:
            assert status == 422 and answer["error"] and answer["message"], (status, answer)
            assert ledger_state(served.up.store) == before
            return
        assert status == 200 and answer == {"applied": doc["version"]}, answer
        quote = trio.from_thread.run(functools.partial(
            core.request, "quote", {"id": "q", "lines": lines, "member": "M1"}), trio_token=token)
        assert quote.ok, quote.body
        sale = trio.from_thread.run(functools.partial(
            core.request, "sale", {"id": f"s{next(sales)}", "lines": lines, "member": "M1",
                                   "payments": [{"method": "cash", "cents": quote.body["total_cents"]}]}),
            trio_token=token)
        # Sold, or refused for the stock a policy of "refuse" asks for: never an internal error.
        assert sale.ok or sale.body["err"] == "INSUFFICIENT_STOCK", (body, sale.body)

    await trio.to_thread.run_sync(functools.partial(
        _fuzz.run, "master documents: policies through UP/1, then a sale", examples, check,
        st.integers(0, 5), values | st.integers(-2 ** 63, 2 ** 64 - 1) | EDGE_INTS))
    assert verify(served.up.store) == []


# --- CSV files -----------------------------------------------------------------------------------

MAPPING = CsvMapping(columns={"id": "TicketNo", "code": "ItemCode", "qty": "Qty", "lot": "Lot"})
cells = st.sampled_from(["T1", "T2", "SKU-4", "B-100", "4711", "SKU-1", "A1", "1", "2", "-1", "0", "x", "",
                         "1.5", '"q"', "99999999999999999999999"]) | st.text(max_size=6)
rows = st.lists(st.lists(cells, min_size=3, max_size=5).map(",".join), max_size=6)


@PROFILES
def test_the_csv_mapper_never_raises_on_any_bytes(examples):
    def check(data):
        result = map_csv(data, MAPPING)
        for error in result.errors:
            assert error.line()

    _fuzz.run("CSV files: mapper", examples, check,
              st.binary(max_size=300) | rows.map(lambda r: ("TicketNo,ItemCode,Qty,Lot\n" + "\n".join(r)).encode()))


@PROFILES
async def test_a_csv_file_is_applied_or_rejected_whole(core, drop_dir, examples):
    drop = CsvDrop(device(drop_dir), core.submit, CsvMetrics(CollectorRegistry()))
    drop.prepare()
    token = trio.lowlevel.current_trio_token()
    names = itertools.count()

    def check(body_rows):
        name = f"f{next(names)}.csv"
        before = ledger_state(core.store)
        drop_file(drop_dir, name, "TicketNo,ItemCode,Qty,Lot\n" + "\n".join(body_rows) + "\n")
        [(got, outcome)] = trio.from_thread.run(drop.poll, trio_token=token)
        assert got == name and outcome in ("applied", "rejected", "empty"), outcome
        if outcome != "applied":
            assert ledger_state(core.store) == before
        if outcome == "rejected":
            assert (drop_dir / "rejected" / f"{name}.errors.txt").read_text().strip()

    await trio.to_thread.run_sync(functools.partial(_fuzz.run, "CSV files: through the core", examples, check, rows))
    assert verify(core.store) == []


# --- scans ---------------------------------------------------------------------------------------

gs1_like = st.lists(st.sampled_from(["01" + GTIN_STRIPS, "01" + GTIN_THERMO, "10A1", "17270331", "171399",
                                     "21S1", "30", "7", "\x1d", "+H123ABC1230", "+$$3270331A1", "/"]),
                    max_size=5).map("".join)
scans = (st.sampled_from(["", "]d2", "]C1", "]e0", "]Q3", "https://id.gs1.org/01/"]).flatmap(
    lambda prefix: gs1_like.map(lambda body: prefix + body)) | st.text(max_size=40) | st.binary(max_size=40)
         | st.integers(0, 10**14).map(lambda n: with_check_digit(str(n))))


@PROFILES
def test_parse_scan_gives_a_scan_or_a_scan_error_only(examples):
    def check(data):
        try:
            scan = parse_scan(data)
        except ScanError as exc:
            assert exc.code and str(exc)
        else:
            assert isinstance(scan, Scan) and scan.kind in ("gs1", "hibc", "gtin")

    _fuzz.run("scans: parse_scan", examples, check, scans)


@PROFILES
def test_the_scanner_protocol_takes_any_bytes_in_any_chunks(examples):
    known = (scan_events.Scanned, scan_events.Rejected, scan_events.ConnectionClosed)

    def check(data, cuts, terminator):
        conn = ScannerConnection(terminator=terminator)
        points = sorted({c % (len(data) + 1) for c in cuts})
        now = 0.0
        for a, b in itertools.pairwise([0, *points, len(data)]):
            if b > a:
                conn.receive_data(data[a:b], now)
            now += 0.5
            conn.tick(now)
        conn.receive_data(b"", now)
        events = []
        while (event := conn.next_event()) is not scan_events.NEED_DATA:
            events.append(event)
        assert all(isinstance(e, known) for e in events) and isinstance(events[-1], scan_events.ConnectionClosed)

    lines = st.lists(scans.map(lambda s: s if isinstance(s, bytes) else s.encode("utf-8", "surrogatepass")),
                     max_size=4).map(lambda ls: b"\r\n".join(ls) + b"\r")
    _fuzz.run("scans: scanner protocol", examples, check, lines | st.binary(max_size=200),
              st.lists(st.integers(0, 300), max_size=5), st.sampled_from(["any", "cr", "lf", "crlf"]))


@PROFILES
async def test_a_scan_through_the_core_applies_or_is_refused_changing_nothing(core, examples):
    token = trio.lowlevel.current_trio_token()
    ids = itertools.count()

    def check(data, role):
        try:
            scan = parse_scan(data)
        except ScanError:
            return
        body = {"id": f"sc-{next(ids)}", "role": role, "lane": "1", "code": scan.raw, "gtin": scan.gtin,
                "hibc": scan.hibc, "lot": scan.lot, "expiry": scan.expiry, "serial": scan.serial,
                "quantity": scan.quantity}
        before = ledger_state(core.store)
        answer = trio.from_thread.run(core.submit, Request("scan", body, source="scan1", channel="scanner"),
                                      trio_token=token).body
        if not answer["ok"]:
            assert_refusal(answer)
            assert ledger_state(core.store) == before

    await trio.to_thread.run_sync(functools.partial(
        _fuzz.run, "scans: through the core", examples, check, scans,
        st.sampled_from(["receive", "count", "lane", "lookup", "nonsense"])))
    assert verify(core.store) == []
