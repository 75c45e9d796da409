"""Stored events cut into documents, moves summed, stock rows packed and bodies counted from their
bytes: the compiled walker gives the reference's results, byte for byte, whatever the bytes."""
from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from ._twins import twins

FLAVOURS = twins("docbytes")
_py = FLAVOURS[0].values[0]

_packb = msgpack.Packer(use_bin_type=True).pack
LONG = "x" * 40


@pytest.fixture(params=FLAVOURS)
def cut(request):
    return request.param


def _event(seq: int, **fields) -> bytes:
    return _packb({**fields, "seq": seq})


EVENTS = [
    _event(1, type="sale", id="lane1:1", ts_ms=5, source="lane1", lines=[{"sku": "A", "qty": 2}],
           moves=[["A", None, -2, None, []], ["B", "L1", -1, "2027-01-01", ["S1"]]]),
    _event(2, id="no-type", ts_ms=1, moves=[]),                                   # no type
    _packb({"type": "late", "id": "ts-after-seq", "moves": None, "seq": 3, "ts_ms": 9}),  # seq not last
    _event(4, _private=1, type="t", store="S001", id="i", ts_ms=2, note=LONG, moves=[["A", None, 3, None, []]]),
    _event(5, **{f"k{i}": i for i in range(20)}, type="wide", id="w", ts_ms=3),  # a map16
    _event(6, type="t", id="inner", ts_ms=4, x={"seq": 1, "_y": 2}, moves=[]),
    _event(7, type="big", id="b", ts_ms=-(2 ** 40), n=2 ** 63, f=1.5, b=b"\x00\x01", moves=[["Ä", "é", -(2 ** 40), 1, 2]]),
    msgpack.packb({"note": LONG, "type": "old", "id": "o", "ts_ms": 5, "seq": 8}, use_bin_type=False),  # raw16 text first
    msgpack.packb({"type": "old", "id": "o2", "ts_ms": 6, "note": LONG, "seq": 9}, use_bin_type=False),  # ... copied as stored
    _event(10, type="odd", id="m1", ts_ms=1, moves=0),                                        # a falsy `moves`
    _event(11, type="odd", id="m2", ts_ms=1, moves=[["A", None, 1.5, None, []]]),            # a float delta
    _event(12, type="odd", id="m3", ts_ms=1, moves=[[1, None, 1, None, []]]),                # an int sku
    b"\x82\xa4type\xa1a\xa3seq\xcc\x0d",                                                      # seq 13 not in its smallest form
    b"\x83\xa4type\xa1a\xa4type\xa1b\xa3seq\x0e",                                             # a duplicated key
    _event(16, type="ext", id="e", ts_ms=1, x=msgpack.ExtType(5, b"abc"), moves=[]),
]


def test_documents_and_moves_are_the_references(cut):
    net, expected_net = {}, {}
    assert cut.documents(EVENTS[:12], net) == _py.documents(EVENTS[:12], expected_net)
    assert net == expected_net and list(net) == list(expected_net)
    for raw in EVENTS[12:]:
        net, expected_net = {}, {}
        assert cut.documents([raw], net) == _py.documents([raw], expected_net) and net == expected_net
    sums, expected = {}, {}
    cut.add_moves(EVENTS[:12], sums)
    _py.add_moves(EVENTS[:12], expected)
    assert sums == expected


def test_each_document_is_the_packed_document_of_its_event(cut):
    for raw in EVENTS[:8] + EVENTS[9:]:
        event = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        assert cut.documents([raw], {}) == [_packb(cut.to_doc(event))], event
    # Another packer's bytes in the entries copied as stored go out as stored: the same values.
    [doc] = cut.documents([EVENTS[8]], {})
    assert msgpack.unpackb(doc, raw=False) == cut.to_doc(msgpack.unpackb(EVENTS[8], raw=False))


@pytest.mark.parametrize("raw", [
    _event(1, type="t", moves=[])[:-1],                       # cut short
    _event(1, type="t", moves=[]) + b"\x00",                  # trailing bytes
    b"\x82\xa4type\xa2\xed\xa0\xa3seq\x01",                   # a surrogate is not UTF-8 text
    b"\x82\xa4type\xc1\xa3seq\x01",                           # the reserved byte
    b"\x82\x91\x01\xa1a\xa3seq\x01",                          # a list as a key
    b"\x92\x01\x02",                                          # not a map
    _packb({1: "int key", "type": "k", "seq": 1, "moves": 1}),
    _event(1, type="t", moves=[["A", None, -1, None]]),       # a move of four fields
    _event(1, type="t", moves="ab"),
])
def test_bad_bytes_fail_as_the_reference_fails(cut, raw):
    with pytest.raises(Exception) as expected:
        _py.documents([raw], {})
    with pytest.raises(type(expected.value)):
        cut.documents([raw], {})
    with pytest.raises(Exception) as expected:
        _py.add_moves([raw], {})
    with pytest.raises(type(expected.value)):
        cut.add_moves([raw], {})


def test_stock_rows_take_the_moves_into_the_balances(cut):
    net = {("A", None): -2, ("B", "L1"): 5, ("Ç", None): 0, ("D", None): -(2 ** 40)}
    balances = cut.StockSums({("A", None): 10, ("D", None): 7})
    expected = {("A", None): 10, ("D", None): 7}
    assert cut.stock_rows(cut.StockSums(net), balances) == _py.stock_rows(net, expected)
    assert balances == expected == {("A", None): 8, ("B", "L1"): 5, ("Ç", None): 0, ("D", None): 7 - 2 ** 40}
    assert msgpack.unpackb(cut.stock_rows(cut.StockSums({("A", None): 1}), balances)) == [["A", None, 1, 9]]
    odd = {(1, None): 1.5}   # what only odd events give: packed as the reference packs it
    assert cut.stock_rows(cut.StockSums(odd), cut.StockSums()) == _py.stock_rows(odd, {})
    assert cut.stock_rows(dict(net), {}) == _py.stock_rows(net, {})   # plain dicts: the reference's way


def _body(docs, stock=(), alerts=(), **extra) -> bytes:
    return _packb({"docs": list(docs), "stock": list(stock), "alerts": list(alerts), **extra})


BODIES = [
    _body([{"type": "sale", "seq": 1}, {"type": "sale"}, {"type": ["odd"]}, {}, "not a map", {"type": None},
           {"type": 7}, {"type": True}, {"type": 1.5}, {"type": b"x"}, {"type": "a", "type2": 1}],
          stock=[["A", None, -1, 3]], alerts=[{"kind": "low_stock", "sku": "A", "lot": None}]),
    _body([]),
    _body([{"type": "sale"}], note={"nested": [1, 2, {"x": None}]}),
    b"\x83\xa4docs\x91\x82\xa4type\xa1a\xa4type\xa1b\xa5stock\x90\xa6alerts\x90",   # duplicated key: the last
]
BAD_BODIES = [
    _packb({"docs": [], "stock": []}),                 # no alerts
    _packb({"docs": {}, "stock": [], "alerts": []}),   # docs not a list
    _packb([]),
    _body([{"type": "x"}])[:-1],
    _body([{"type": "x"}]) + b"\xc0",
    b"\x83\xa4docs\x91\x81\xa4type\xa2\xed\xa0\xa5stock\x90\xa6alerts\x90",   # not UTF-8
]


def test_bodies_are_counted_as_the_reference_counts_them(cut):
    for raw in BODIES:
        counts = cut.body_counts(raw)
        assert counts == _py.body_counts(raw)
        body = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        assert (counts.docs, counts.stock_rows, counts.alerts) == (len(body["docs"]), len(body["stock"]),
                                                                    len(body["alerts"]))
    assert cut.body_counts(BODIES[0]).by_type == {"sale": 2, "['odd']": 1, "None": 3, "7": 1, "True": 1,
                                                  "1.5": 1, "b'x'": 1, "a": 1}
    assert cut.body_counts(BODIES[3]).by_type == {"b": 1}
    for raw in BAD_BODIES:
        assert cut.body_counts(raw) is None and _py.body_counts(raw) is None


values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 64 - 1) | st.floats(allow_nan=False) | st.text()
    | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(fields=st.dictionaries(st.sampled_from(["type", "id", "ts_ms", "store", "_x", "moves", "lines", "z"]),
                              values, max_size=6),
       moves=st.lists(st.tuples(st.text(min_size=1, max_size=4), st.none() | st.text(max_size=3),
                                st.integers(-1000, 1000)), max_size=4),
       cut_at=st.integers(0, 400))
def test_any_event_or_its_damage_is_cut_as_the_reference_cuts_it(fields, moves, cut_at):
    if "moves" in fields:
        fields["moves"] = [[s, lot, d, None, []] for s, lot, d in moves]
    raw = _event(1, **fields)
    for bytes_ in (raw, raw[:cut_at]):
        for flavour in FLAVOURS[1:]:
            module = flavour.values[0]
            try:
                expected = (_py.documents([bytes_], net := {}), net)
            except Exception as exc:
                with pytest.raises(type(exc)):
                    module.documents([bytes_], {})
                continue
            assert (module.documents([bytes_], got := {}), got) == expected
            body = _body([fields], alerts=[bytes_])
            assert module.body_counts(body[:cut_at]) == _py.body_counts(body[:cut_at])
            assert module.body_counts(body) == _py.body_counts(body)


# --- the sealer's sums -----------------------------------------------------------------------

def test_stock_sums_answer_as_the_dict_of_their_keys(cut):
    sums = cut.StockSums()
    sums["A", None] = 3
    sums["A", ""] = 1        # an empty lot is not no lot
    sums["é", "ü"] = -2
    assert len(sums) == 3 and list(sums) == [("A", None), ("A", ""), ("é", "ü")]
    assert sums.get(("A", None)) == 3 and sums.get(("B", None), 0) == 0 and sums[("é", "ü")] == -2
    assert ("A", "") in sums and ("A", "x") not in sums and "A" not in sums and sums.get(1) is None
    with pytest.raises(KeyError):
        sums["B", None]
    sums["A", None] = 7      # set again: its place is kept
    assert list(sums.items()) == [(("A", None), 7), (("A", ""), 1), (("é", "ü"), -2)]
    assert sums == {("A", None): 7, ("A", ""): 1, ("é", "ü"): -2}
    assert cut.StockSums({("X", None): 1}) == {("X", None): 1}


@pytest.mark.parametrize("key, value", [
    (("B", None), 2 ** 62),           # beyond what two sums add up to in 64 bits
    (("B", None), 1.5),
    ((1, None), 1),
    (("B", 2), 1),
    (("\udc80", None), 1),            # text with no UTF-8 bytes
    ("B", 1),
])
def test_stock_sums_take_any_key_and_value_as_a_dict_would(cut, key, value):
    sums = cut.StockSums({("A", None): 1, ("A", "L"): 2})
    sums[key] = value
    sums["C", None] = 3
    assert sums == {("A", None): 1, ("A", "L"): 2, key: value, ("C", None): 3}
    assert list(sums) == [("A", None), ("A", "L"), key, ("C", None)] and sums[key] == value
    assert len(sums) == 4 and key in sums


_move = st.tuples(st.sampled_from(["A", "B", "é", "SKU-" + "x" * 40]), st.sampled_from([None, "", "L1", "ü" * 30]),
                  st.integers(-1000, 1000) | st.sampled_from([2 ** 61, -(2 ** 61), 2 ** 62, -(2 ** 63)]))


@settings(max_examples=150, deadline=None)
@given(batches=st.lists(st.lists(st.lists(_move, max_size=4), max_size=6), min_size=1, max_size=4),
       opening=st.dictionaries(st.tuples(st.sampled_from(["A", "B", "é"]), st.sampled_from([None, "L1"])),
                               st.integers(-(2 ** 62), 2 ** 62), max_size=4))
def test_batches_summed_in_stock_sums_give_the_references_bytes(batches, opening):
    for flavour in FLAVOURS:
        cut = flavour.values[0]
        balances, expected = cut.StockSums(opening), dict(opening)
        for seq, batch in enumerate(batches):
            raws = [_event(seq * 10 + i + 1, type="sale", id=f"s{i}", ts_ms=1,
                           moves=[[sku, lot, delta, None, []] for sku, lot, delta in moves])
                    for i, moves in enumerate(batch)]
            net, expected_net = cut.StockSums(), {}
            assert cut.documents(raws, net) == _py.documents(raws, expected_net)
            assert list(net.items()) == list(expected_net.items())
            try:
                rows = _py.stock_rows(expected_net, expected)
            except OverflowError:   # a balance beyond 64 bits cannot be packed, in either twin
                with pytest.raises(OverflowError):
                    cut.stock_rows(net, balances)
                break
            assert cut.stock_rows(net, balances) == rows
            assert list(balances.items()) == list(expected.items())
            tail = cut.StockSums()
            cut.add_moves(raws, tail)
            assert tail == expected_net


def test_odd_moves_go_into_stock_sums_as_the_reference_sums_them(cut):
    net, expected = cut.StockSums(), {}
    assert cut.documents(EVENTS[:12], net) == _py.documents(EVENTS[:12], expected)
    assert list(net.items()) == list(expected.items())      # a float delta, an int SKU among them
    balances, expected_balances = cut.StockSums(), {}
    assert cut.stock_rows(net, balances) == _py.stock_rows(expected, expected_balances)
    assert balances == expected_balances
