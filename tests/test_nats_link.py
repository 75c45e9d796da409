"""NATS/1 against a real nats-server: batches up in order and once, documents down through the same
handlers as UP/1, across hub restarts and outages."""
from __future__ import annotations

import msgpack
import trio

from upstream import decode_envelope, sign_document
from upstream._nats_hub import Hub, HubSettings, WrongLastSequence
from upstream._nats_link import Position

from ._data import CATALOG, NOW, stored_on_hand

NOW_MS = int(NOW * 1000)
from ._nats_rig import bridge, chain, hub, link_settings, rig, until, until_async  # noqa: F401


def assert_stream_holds_chain(found, raw_batches, store="S001"):
    """Every stored batch exactly once, in seq order, byte for byte, with its headers."""
    seqs = [decode_envelope(data)["seq"] for _s, _h, data in found]
    assert seqs == list(range(1, len(raw_batches) + 1)), seqs
    assert [data for _s, _h, data in found] == raw_batches
    previous = 0
    for stream_seq, headers, data in found:
        assert headers["Nats-Msg-Id"] == f"{store}:{decode_envelope(data)['seq']}"
        assert headers["Nats-Expected-Last-Subject-Sequence"] == str(previous)
        previous = stream_seq


async def test_batches_reach_the_stream_in_order_once_and_move_the_cursor(rig, chain, hub, nursery):
    await rig.sales(9, "a")   # batch_max_events 4: three batches
    await rig.start_link(nursery, link_settings(hub))
    await until(lambda: rig.published() == rig.head(), what="the published cursor")
    assert_stream_holds_chain(await chain.batches(), rig.raw_batches())
    before = rig.head()
    await rig.sales(5, "b")
    await until(lambda: rig.published() == rig.head() > before, what="the next batches")
    assert_stream_holds_chain(await chain.batches(), rig.raw_batches())
    assert rig.metric("gateway_nats_published_seq") == rig.head()
    assert rig.metric("gateway_nats_publish_lag_batches") == 0
    assert rig.metric("gateway_nats_hub_reachable") == 1
    await until(lambda: rig.metric("gateway_nats_connected") == 1, what="the connected gauge")


async def test_publishing_goes_on_across_a_hub_restart(rig, chain, hub, nursery):
    await rig.sales(8, "a")
    await rig.start_link(nursery, link_settings(hub))
    await until(lambda: rig.published() == rig.head(), what="the first batches")
    before = rig.head()
    await trio.to_thread.run_sync(hub.stop)
    await rig.sales(8, "b")   # sealed while the hub is away
    await until(lambda: rig.metric("gateway_nats_hub_reachable") == 0, what="the hub to be seen gone")
    assert rig.published() == before and rig.metric("gateway_nats_publish_lag_batches") == rig.head() - before > 0
    await trio.to_thread.run_sync(hub.start)
    await until(lambda: rig.published() == rig.head(), what="publishing after the restart")
    assert_stream_holds_chain(await chain.batches(), rig.raw_batches())


async def test_a_gateway_started_while_the_hub_is_down_publishes_once_it_is_back(rig, chain, hub, nursery):
    await trio.to_thread.run_sync(hub.stop)
    await rig.sales(12, "a")
    link = await rig.start_link(nursery, link_settings(hub))
    await until(lambda: link.metrics.publish_failures._value.get() >= 3, what="failed attempts")
    assert rig.published() == 0 and rig.metric("gateway_nats_publish_lag_batches") == rig.head() > 0
    await rig.sales(4, "b")   # the gateway goes on selling and sealing meanwhile
    await trio.to_thread.run_sync(hub.start)
    await until(lambda: rig.published() == rig.head(), what="the backlog to be published")
    assert_stream_holds_chain(await chain.batches(), rig.raw_batches())


async def test_a_stale_position_resyncs_from_the_stream_instead_of_doubling(rig, chain, hub, nursery):
    # As after a lost acknowledgement: the gateway believes batch 2 is still to send.
    await rig.sales(8, "a")
    link = await rig.start_link(nursery, link_settings(hub))
    await until(lambda: rig.published() == rig.head() >= 2, what="the first batches")
    found = await chain.batches()
    link.position = Position(2, found[0][0])
    await rig.sales(4, "b")
    await until(lambda: rig.published() == rig.head(), what="the third batch")
    assert_stream_holds_chain(await chain.batches(), rig.raw_batches())


async def test_what_the_duplicate_window_covers_and_what_the_expected_sequence_covers(bridge, hub, tmp_path):
    # A stream with a 1 s window, so that "after the window" comes within the test's deadline.
    from ._nats_rig import Chain
    chain = await Chain(bridge, hub, prefix="dw").open(duplicate_window_s=1.0)
    client = Hub(HubSettings(servers=(hub.url,)))
    subject, body = "dw.batches.S9", b"batch one"
    first = await bridge.run(client.publish, subject, body, {"Nats-Msg-Id": "S9:1",
                                                            "Nats-Expected-Last-Subject-Sequence": "0"})
    # The window: the same message id again, with no expected sequence, is acknowledged as a duplicate.
    again = await bridge.run(client.publish, subject, body, {"Nats-Msg-Id": "S9:1"})
    assert again.duplicate and again.seq == first.seq
    # The expected sequence: a repeat that names the position it was first sent at is refused, inside
    # the window (the server checks it before the message id) ...
    try:
        await bridge.run(client.publish, subject, body, {"Nats-Msg-Id": "S9:1",
                                                        "Nats-Expected-Last-Subject-Sequence": "0"})
        raise AssertionError("a repeat naming a stale position was stored")
    except WrongLastSequence:
        pass

    # ... and after it, when only the expected sequence still stands between a late repeat and a double.
    async def window_passed():
        probe = await bridge.run(client.publish, "dw.batches.PROBE", b"p", {"Nats-Msg-Id": "probe"})
        return not probe.duplicate and probe.seq != first_probe.seq
    first_probe = await bridge.run(client.publish, "dw.batches.PROBE", b"p", {"Nats-Msg-Id": "probe"})
    await until_async(window_passed, what="the duplicate window to pass")
    try:
        await bridge.run(client.publish, subject, body, {"Nats-Msg-Id": "S9:1",
                                                        "Nats-Expected-Last-Subject-Sequence": "0"})
        raise AssertionError("a late repeat naming a stale position was stored")
    except WrongLastSequence:
        pass
    # Without the expected sequence, past the window, the same batch would be stored twice.
    late = await bridge.run(client.publish, subject, body, {"Nats-Msg-Id": "S9:1"})
    assert not late.duplicate and late.seq != first.seq
    await bridge.run(client.close)
    await chain.close()


# --- documents down ------------------------------------------------------------------------

def catalog(version: int, cents: int, erp_key) -> dict:
    body = {"items": [dict(item, unit_cents=cents) if item["sku"] == "SKU-2" else item
                      for item in CATALOG["items"]]}
    return sign_document("catalog", version, body, erp_key, issued_ms=NOW_MS)


def in_force(rig) -> tuple[int, int]:
    with rig.up.store.read() as tx:
        return tx.get("master", "catalog")["version"], tx.get("catalog", "SKU-2")["unit_cents"]


def documents(rig, kind: str, outcome: str) -> float:
    return rig.metric("gateway_nats_documents_total", {"kind": kind, "outcome": outcome})


async def drained(chain, durable="gw-S001"):
    async def check():
        return await chain.consumer_pending(durable) == (0, 0)
    await until_async(check, what="the consumer to be drained (all delivered and acknowledged)")


async def test_master_documents_apply_once_and_repeats_or_old_versions_are_acknowledged_no_ops(
        rig, chain, hub, nursery, erp_key):
    await rig.start_link(nursery, link_settings(hub))
    await chain.publish_doc(catalog(5, 5990, erp_key))
    await until(lambda: in_force(rig) == (5, 5990), what="catalog 5 in force")
    # The same document again (another message id: the ERP re-sent it), then an older version late.
    await chain.publish_doc(catalog(5, 5990, erp_key), msg_id="resent-5")
    await chain.publish_doc(catalog(3, 3990, erp_key))
    await chain.publish_doc(catalog(7, 7990, erp_key), store="S001")
    await until(lambda: in_force(rig) == (7, 7990), what="the store's own catalog 7")
    await drained(chain)
    assert documents(rig, "catalog", "applied") == 2
    assert documents(rig, "catalog", "refused") == 2


async def test_a_document_for_another_store_is_never_applied(rig, chain, hub, nursery, erp_key):
    await rig.start_link(nursery, link_settings(hub))
    await chain.publish_doc(catalog(8, 8990, erp_key), store="S002")
    await chain.publish_doc(catalog(6, 6990, erp_key), store="S001")
    await until(lambda: in_force(rig) == (6, 6990), what="the store's own catalog")
    await drained(chain)
    assert in_force(rig) == (6, 6990)
    assert documents(rig, "catalog", "applied") == 1 and documents(rig, "catalog", "refused") == 0


async def test_movements_apply_once_and_a_bad_signature_is_refused_for_good(rig, chain, hub, nursery, erp_key):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    await rig.start_link(nursery, link_settings(hub))
    moves = {"movements": [{"id": "M-1", "type": "receipt", "sku": "SKU-4", "qty": 7}]}
    doc = sign_document("movements", 1, moves, erp_key, issued_ms=NOW_MS)

    def on_hand():
        with rig.up.store.read() as tx:
            return stored_on_hand(tx, "SKU-4")
    before = on_hand()
    await chain.publish_doc(doc, store="S001")
    await chain.publish_doc(doc, subject="gw.movements.S001", msg_id="again")   # delivered twice
    forged = sign_document("movements", 2, moves, Ed25519PrivateKey.generate(), issued_ms=NOW_MS)
    await chain.publish_doc(forged, store="S001")
    await chain.publish_doc(doc, store="S002")   # another store's: not this consumer's subject
    await drained(chain)
    assert documents(rig, "movements", "applied") == 2   # the repeat applies nothing: its id is known
    assert documents(rig, "movements", "refused") == 1
    with rig.up.store.read() as tx:
        assert tx.get("movements", "M-1") is not None
    assert on_hand() == before + 7


async def test_a_document_not_acknowledged_before_a_crash_is_delivered_again_and_is_a_no_op(
        rig, chain, hub, nursery, erp_key):
    import asyncio
    import threading
    settings = link_settings(hub, fetch_wait_s=0.2, ack_wait_s=1.0)
    link = await rig.start_link(nursery, settings)
    acking = threading.Event()

    async def ack_never_sent(message):   # runs on the link's asyncio thread
        acking.set()
        await asyncio.Event().wait()
    link.hub.ack = ack_never_sent
    await chain.publish_doc(catalog(9, 9990, erp_key))
    await until(acking.is_set, what="the document to be committed and its ack due")
    rig.link_scope.cancel()   # the gateway stops after the commit, before JetStream heard the ack
    assert in_force(rig) == (9, 9990)
    assert documents(rig, "catalog", "applied") == 1
    # The restarted gateway's link gets it again once the ack wait ran out: a no-op, acknowledged.
    await rig.start_link(nursery, settings)
    await until(lambda: documents(rig, "catalog", "refused") == 1, what="the redelivery")
    await drained(chain)
    assert in_force(rig) == (9, 9990)
