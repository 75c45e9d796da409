"""The balances kept in memory by the writer equal the `lots` table and the `skus` count once each
group is committed or rolled back (the rows a group moved are written when it commits): through
committed and aborted requests (nested transactions), aborted groups, and a second writer of the
same files; an aborted request leaves the memory as it found it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings, strategies as st

from core_ext import Store, is_total_key, ledger, split_lot_key
from core_ext._verify import verify

from ._twins import twins
from ._data import stored_lot_rows, stored_totals

FLAVOURS = twins("ledger")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SKUS = ["S1", "S2"]
LOTS = [None, "L1", "L2", "L3"]

moves = st.lists(st.tuples(st.sampled_from(SKUS), st.sampled_from(LOTS), st.integers(-4, 6),
                           st.sampled_from([None, "2027-01-01", "2026-12-01"]),
                           st.lists(st.sampled_from(["a", "b", "c"]), max_size=2, unique=True).map(tuple)),
                 min_size=1, max_size=6)
# A group: several requests, each committed or aborted; then the group is committed or aborted.
groups = st.lists(st.tuples(st.lists(st.tuples(moves, st.booleans()), min_size=1, max_size=4), st.booleans()),
                  min_size=1, max_size=5)


def _memory(led, tx, state=None) -> tuple[dict, dict, int]:
    state = state or led.balances(tx)
    lots, totals = {}, {}
    for sku in SKUS:
        for lot, row in state.lots_of_sku(sku).items():
            lots[(sku, lot)] = (row.qty, row.expiry, list(row.serials))
        if state.on_hand(sku):
            totals[sku] = state.on_hand(sku)
    return lots, totals, state.held()


def _tables(tx) -> tuple[dict, dict, int]:
    lots = {split_lot_key(k): (row["qty"], row["expiry"], row["serials"]) for k, row in stored_lot_rows(tx).items()}
    totals = stored_totals(tx)
    return lots, totals, len(totals)


def _fresh(led, tx) -> tuple[dict, dict, int]:
    """What a gateway starting on these files would load."""
    return _memory(led, tx, led.Balances.load(tx))


@settings(max_examples=40, deadline=None)
@given(script=groups, flavour=st.sampled_from([p.values[0] for p in FLAVOURS]))
def test_memory_equals_the_tables_through_commits_and_rollbacks(tmp_path_factory, script, flavour):
    path = str(tmp_path_factory.mktemp("state") / "data")
    store = Store(path)
    try:
        for requests, group_commits in script:
            tx = store.begin(write=True)
            before_group = _memory(flavour, tx)
            for request_moves, request_commits in requests:
                before = _memory(flavour, tx)
                child = tx.child()
                flavour.apply_moves(child, request_moves)
                if request_commits:
                    child.commit()
                else:
                    child.abort()
                    assert _memory(flavour, tx) == before
            if group_commits:
                tx.commit()
            else:
                tx.abort()
            # The tables as committed, read apart from the writer: read in its transaction, they would
            # first take whatever its memory still has to write.
            with store.read() as view:
                tables, skus_counted, fresh = _tables(view), view.meta("skus", 0), _fresh(flavour, view)
            with store.begin(write=True) as check:
                memory = _memory(flavour, check)
            assert memory == tables == fresh
            assert skus_counted == tables[2]  # as the last commit counted
            if not group_commits:
                assert memory == before_group
    finally:
        store.close()


def test_a_second_writer_of_the_same_files_makes_the_memory_reload(tmp_path):
    from core_ext import ledger
    path = str(tmp_path / "data")
    store = Store(path)
    try:
        with store.begin(write=True) as tx:
            ledger.apply_moves(tx, [("S1", "L1", 5, None, ())])
            tx.append_event({"type": "receipt", "moves": [["S1", "L1", 5, None, []]]})
        # Another process writes the same files (a second gateway started on one data directory).
        subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            from core_ext import Store, ledger
            store = Store({path!r})
            with store.begin(write=True) as tx:
                ledger.apply_moves(tx, [("S1", "L1", -2, None, ())])
                tx.append_event({{"type": "sale", "moves": [["S1", "L1", -2, None, []]]}})
            """)], check=True, cwd=ROOT)
        with store.begin(write=True) as tx:
            assert ledger.lot_qty(tx, "S1", "L1") == 3
    finally:
        store.close()


def test_master_data_in_memory_follows_commits_and_rollbacks(seeded_store):
    from core_ext import _master
    from ._data import CATALOG
    dearer = {"items": [{**item, "unit_cents": item["unit_cents"] + 1} for item in CATALOG["items"]]}
    with seeded_store.begin(write=True) as tx:
        before = _master.view(tx).items["SKU-1"].unit_cents
        child = tx.child()
        _master.apply(child, "catalog", 2, dearer)
        assert _master.view(child).items["SKU-1"].unit_cents == before + 1
        child.abort()
        assert _master.view(tx).items["SKU-1"].unit_cents == before
        _master.apply(tx, "recalls", 2, {"recalls": [{"recall_id": "R1", "sku": "SKU-1", "lot": "A1"}]})
        assert _master.view(tx).recall_of("SKU-1", "A1")["recall_id"] == "R1"
        rules = _master.view(tx).promotions
        child = tx.child()
        _master.apply(child, "promotions", rules + 5, {"rules": []})
        assert _master.view(child).promotions == rules + 5
        child.abort()
        assert _master.view(tx).promotions == rules
        _master.apply(tx, "promotions", rules + 6, {"rules": []})
    tx = seeded_store.begin(write=True)
    assert _master.view(tx).recall_of("SKU-1", "A1")["recall_id"] == "R1"
    assert _master.view(tx).promotions == rules + 6
    tx.abort()
    with seeded_store.read() as tx:
        assert _master.view(tx).items["SKU-1"].unit_cents == before


def test_the_writer_state_loads_before_serving_and_changes_nothing(seeded_store):
    from core_ext import load_writer_state
    with seeded_store.read() as tx:
        before = {table: list(tx.items(table)) for table in ("lots", "alerts", "meta")}
    seeded_store.states.clear()
    load_writer_state(seeded_store)
    assert {cls.__name__ for cls in seeded_store.states} == {"Balances", "MasterState", "OpenAlerts", "DayTotals"}
    with seeded_store.read() as tx:
        assert {table: list(tx.items(table)) for table in ("lots", "alerts", "meta")} == before
    with seeded_store.begin(write=True) as tx:
        from core_ext import ledger
        assert ledger.lot_qty(tx, "SKU-1", "A1") == 10


def test_a_gateway_process_freezes_its_loaded_state_and_collects_its_young_objects_less_often(tmp_path):
    # In a process of its own: freezing and thresholds are the whole interpreter's.
    script = textwrap.dedent("""
        import gc, json, sys
        from core_ext import Store, freeze_loaded_state, load_writer_state
        from tests._data import seed
        store = Store(sys.argv[1])
        seed(store)
        load_writer_state(store)
        before = (gc.get_freeze_count(), gc.get_threshold())
        freeze_loaded_state()
        print(json.dumps({"before": before, "frozen": gc.get_freeze_count(), "threshold": gc.get_threshold()}))
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "data")], cwd=root, check=True,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": root}).stdout
    result = json.loads(out)
    assert result["before"][0] == 0 and result["frozen"] > result["before"][0]
    assert result["threshold"][0] == 10_000 and result["threshold"][1:] == result["before"][1][1:]


def test_a_store_of_schema_2_has_its_sku_totals_moved_beside_their_lots(tmp_path):
    # Schema 2 kept each SKU's total in a `skus` table of its own; opening the store for writing
    # moves them into `lots` (under `total_key`), counts them into `meta` and drops the table.
    import lmdb
    import msgpack
    from ._data import seed
    path = str(tmp_path / "data")
    store = Store(path)
    seed(store)
    with store.read() as tx:
        totals = stored_totals(tx)
        lots = stored_lot_rows(tx)
    store.close()
    assert len(totals) >= 3

    env = lmdb.open(path, max_dbs=32, subdir=True)
    lots_db, meta_db, skus_db = env.open_db(b"lots"), env.open_db(b"meta"), env.open_db(b"skus")
    with env.begin(write=True) as txn:
        for sku, total in totals.items():
            assert txn.delete(sku.encode(), db=lots_db)
            txn.put(sku.encode(), msgpack.packb(total), db=skus_db)
        txn.delete(b"skus", db=meta_db)
        txn.put(b"schema", msgpack.packb(2), db=meta_db)
    env.close()

    store = Store(path)
    with store.read() as tx:
        assert stored_totals(tx) == totals and stored_lot_rows(tx) == lots
        assert tx.meta("skus") == len(totals)
    tx = store.begin(write=True)
    try:
        assert {sku: ledger.balances(tx).on_hand(sku) for sku in totals} == totals
        assert ledger.balances(tx).held() == len(totals)
    finally:
        tx.abort()
    assert verify(store) == []
    store.close()
    env = lmdb.open(path, max_dbs=32, subdir=True, readonly=True)
    with pytest.raises(lmdb.NotFoundError):
        env.open_db(b"skus", create=False)
    env.close()


def test_verify_ledger_names_a_wrong_count_of_skus_with_stock(tmp_path):
    import msgpack
    from ._data import seed
    store = Store(str(tmp_path / "data"))
    seed(store)
    assert verify(store) == []
    with store.read() as tx:
        held = tx.meta("skus")
    # Damaged behind the writer's back (through LMDB itself: the writer's own commit would count again).
    with store.env.begin(write=True) as txn:
        txn.put(b"skus", msgpack.packb(held + 1), db=store.db["meta"])
    assert verify(store) == [f"meta: {held + 1} SKUs with stock counted, replay gives {held}"]
    store.close()


def test_readers_in_the_writer_see_the_rows_before_the_group_commits(tmp_path):
    """The `lots` rows a group changed are written when it commits: meanwhile the writer's readers
    (the alerts' list of SKUs, the balances) read the memory, not the table."""
    from core_ext import _alerts
    store = Store(str(tmp_path / "data"))
    try:
        tx = store.begin(write=True)
        child = tx.child()
        ledger.apply_moves(child, [("NOT-IN-CATALOG", "L1", 4, "2030-01-01", ())])
        child.commit()
        assert table_rows(tx) == {}  # not yet in the table
        assert "NOT-IN-CATALOG" in _alerts.all_skus(tx)
        assert ledger.on_hand(tx, "NOT-IN-CATALOG") == 4
        tx.commit()
        with store.read() as tx:
            assert "NOT-IN-CATALOG" in _alerts.all_skus(tx)
            assert table_rows(tx) == {b"NOT-IN-CATALOG\x00L1": {"qty": 4, "expiry": "2030-01-01", "serials": []}}
    finally:
        store.close()


def table_rows(tx) -> dict:
    """The lot rows as the table holds them in `tx`, nothing written first."""
    return {bytes(k): row for k, row in tx.items("lots") if not is_total_key(k)}


def test_the_compiled_writer_keeps_one_string_object_per_sku(seeded_store):
    """The catalog's key, the item's SKU and the compiled balances' key are one object (`shared_str`),
    whether the balances were loaded or a receipt made the SKU's entry: a lookup by an item's own SKU
    then matches by identity rather than reading another copy of the key."""
    from core_ext import _master, ledger
    if ledger.FLAVOUR != "cython":
        pytest.skip("the compiled flavour's maps")

    def key_in(mapping, sku):
        return next(k for k in mapping if k == sku)

    seeded_store.states.clear()
    with seeded_store.begin(write=True) as tx:
        items, skus = _master.view(tx).items, ledger.balances(tx).skus
        assert key_in(items, "SKU-1") is items["SKU-1"].sku is key_in(skus, "SKU-1")  # loaded from the tables
        fresh = "".join(["SKU", "-9"])  # a string of its own, as a request decodes it
        ledger.apply_moves(tx, [(fresh, None, 5, None, ())])  # the SKU's first entry, made by a move
        assert key_in(skus, "SKU-9") is sys.intern("SKU-9")
