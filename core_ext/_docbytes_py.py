"""Stored events to upstream documents and sealed bodies to summaries, pure Python: the readable
reference of `_docbytes_c.pyx`.

The sealer turns each stored event (MessagePack of its dict, `seq` last, as `Tx.append_event`
packs it) into its UP/1 document and adds its stock moves to the batch's sums; the ERP's client
counts a body's documents by type. Here every event and body is decoded; the compiled twin walks
the bytes instead, builds only what it hands back, and takes this module's way for any bytes it
does not handle itself, so both give the same results, byte for byte.
"""
from __future__ import annotations

import collections
import functools
import gc
from dataclasses import dataclass

import msgpack

FLAVOUR = "python"

# A document's leading keys, in this order; event keys only the gateway itself needs (the
# envelope names the store already), which a document leaves out, as it does keys starting "_".
HEAD_KEYS = ("seq", "type", "id", "ts_ms")
INTERNAL_KEYS = frozenset({"store"})

# The store's own packing and unpacking of events (core_ext._store), so bytes match bytes.
_packer = msgpack.Packer(use_bin_type=True)
_packb = _packer.pack
_map_header = _packer.pack_map_header
_unpack = functools.partial(msgpack.unpackb, raw=False, strict_map_key=False)


def to_doc(event: dict) -> dict:
    """The upstream document of a ledger event: seq, type, id, ts_ms first, then its fields."""
    doc = {"seq": event["seq"], "type": event.get("type"), "id": event.get("id"), "ts_ms": event.get("ts_ms")}
    for key, value in event.items():
        if key not in doc and key not in INTERNAL_KEYS and not key.startswith("_"):
            doc[key] = value
    return doc


# ---------------------------------------------------------------------------------------------
# Documents straight from the stored bytes
#
# Its document moves `seq`, `type`, `id`, `ts_ms` to the front and drops internal keys: only the
# first few entries change, so the rest (lines, payments, moves: most of the bytes) is copied as
# stored instead of rebuilt and packed again. Any event whose leading entries or trailing seq are
# not exactly where packing them says falls back to packing `to_doc(event)`. For what the store
# wrote both give the same bytes; bytes another packer wrote in the copied part go out as stored
# (the same values).

_SEQ_KEY = _packb("seq")
_MAX_SHAPES = 1024


def _special(key) -> bool:
    return key in HEAD_KEYS or key in INTERNAL_KEYS or key.startswith("_")


@dataclass(frozen=True, slots=True)
class _Shape:
    """How to cut the stored bytes of events with these keys (in this order)."""

    keys: tuple          # (packed key, key) of the leading entries to pack one by one: up to the last special key
    order: tuple         # the document's entries after seq: an index into those, or the bytes of an absent one
    header: bytes        # the stored map's header
    doc_header: bytes    # the document's map header


def _shape_of(keys: tuple) -> _Shape | None:
    if not keys or keys[-1] != "seq" or not all(type(k) is str for k in keys):
        return None
    body = keys[:-1]
    cut = max((i + 1 for i, k in enumerate(body) if _special(k)), default=0)
    lead = body[:cut]
    # type, id, ts_ms (None when the event has none), then the leading entries kept, in order.
    order = tuple(lead.index(k) if k in lead else _packb(k) + _packb(None) for k in HEAD_KEYS[1:])
    order += tuple(i for i, k in enumerate(lead) if not _special(k))
    size = len(HEAD_KEYS) + len(order) - 3 + len(body) - cut
    return _Shape(tuple((_packb(k), k) for k in lead), order, _map_header(len(keys)), _map_header(size))


class DocPacker:
    """Packs the upstream document of a stored event, reusing the stored bytes where it can."""

    def __init__(self) -> None:
        self._shapes: dict = {}

    def shape(self, keys: tuple) -> _Shape | None:
        try:
            return self._shapes[keys]
        except KeyError:
            if len(self._shapes) >= _MAX_SHAPES:
                self._shapes.clear()
            shape = self._shapes[keys] = _shape_of(keys)
            return shape

    def pack(self, raw: bytes, event: dict) -> bytes:
        """The MessagePack of `to_doc(event)`, `raw` being the stored bytes `event` was decoded from."""
        shape = self.shape(tuple(event))
        if shape is not None:
            seq_entry = _SEQ_KEY + _packb(event["seq"])
            pieces = [packed + _packb(event[key]) for packed, key in shape.keys]
            start = len(shape.header)
            prefix = b"".join(pieces)
            stop = start + len(prefix)
            end = len(raw) - len(seq_entry)
            # The cut points are right only if the leading entries and the trailing seq are exactly
            # where packing them says; anything else (another packer's bytes) takes the slow way.
            if (stop <= end and raw.startswith(shape.header) and raw.endswith(seq_entry)
                    and raw[start:stop] == prefix):
                return b"".join((shape.doc_header, seq_entry,
                                 *[pieces[i] if type(i) is int else i for i in shape.order], raw[stop:end]))
        return _packb(to_doc(event))


_docs = DocPacker()


def _add(sums: dict, event: dict) -> None:
    for sku, lot, delta, _expiry, _serials in event.get("moves") or ():
        sums[sku, lot] = sums.get((sku, lot), 0) + delta


# The sealer's sums by (sku, lot): a batch's net moves, the balances as of the sealed head. Here a
# dict; the compiled twin's own table answers as one.
StockSums = dict


def add_moves(raws, sums: dict) -> None:
    """Add the stock moves of each stored event of `raws` to `sums` ((sku, lot) -> net delta)."""
    for raw in raws:
        _add(sums, _unpack(raw))


def documents(raws, net: dict) -> list[bytes]:
    """The packed document of each stored event of `raws`, in order; their moves added to `net`."""
    packed = []
    for raw in raws:
        event = _unpack(raw)
        _add(net, event)
        packed.append(_docs.pack(raw, event))
    return packed


# ---------------------------------------------------------------------------------------------
# Bodies, as the ERP reads them

@dataclass(frozen=True, slots=True)
class BodyCounts:
    """What a sealed body holds, counted: documents by type (any type named as text), stock rows, alerts."""

    docs: int
    by_type: dict
    stock_rows: int
    alerts: int


def count_docs(docs: list) -> dict:
    # Counted by the C counter: a few kinds, thousands of documents (any type named as text, so a
    # malformed one is counted, never unhashable).
    return dict(collections.Counter([str(doc.get("type")) if type(doc) is dict else "None" for doc in docs]))


def body_counts(raw: bytes) -> BodyCounts | None:
    """The counts of a decompressed body, or None when it is not a map of lists `docs`, `stock`,
    `alerts` in valid MessagePack (the caller decodes it then, to say what is wrong)."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        body = _unpack(raw)
    except Exception:  # msgpack raises ExtraData, FormatError, StackError, TypeError, ...
        return None
    finally:
        if paused:
            gc.enable()
    if not isinstance(body, dict) or not all(isinstance(body.get(k), list) for k in ("docs", "stock", "alerts")):
        return None
    return BodyCounts(len(body["docs"]), count_docs(body["docs"]), len(body["stock"]), len(body["alerts"]))


# ---------------------------------------------------------------------------------------------
# A body's stock rows

def stock_rows(net: dict, balances: dict) -> bytes:
    """The packed list of a batch's stock rows `[sku, lot, net_delta, on_hand_after]`, one per
    (sku, lot) of `net` (its moves), in that order; `balances` (on hand before the batch, absent
    is 0) takes the moves, and gives `on_hand_after`."""
    rows = []
    for (sku, lot), delta in net.items():
        after = balances[sku, lot] = balances.get((sku, lot), 0) + delta
        rows.append([sku, lot, delta, after])
    return _packb(rows)
