"""`gateway status`, `gateway stock CODE`, `gateway alerts`: what the store holds, read-only.

They open the data directory and read through LMDB readers (read-only transactions), so they are
safe while the gateway runs and never wait for its writer. `--json` prints the same as data.
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="the gateway's configuration (default: the embedded one)")
    parser.add_argument("--data-dir", metavar="DIR", help="read this data directory instead of the configured one")
    parser.add_argument("--json", action="store_true", help="print JSON for tools instead of text")


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)


def add_alerts_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)


def add_stock_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("code", metavar="CODE", help="a SKU, GTIN, POS code or a raw barcode scan")
    _common(parser)


def _open(args):
    """(store, store id, timezone), or raises SystemExit-worthy problems as (code, text)."""
    from core_ext import Store

    from ._config import load_config
    # Only the data directory and the timezone are needed: the tokens' env: variables need not be set.
    config = load_config(args.config, resolve_secrets=False)
    # Read-only: beside a running gateway (of this version or an older one) it changes nothing,
    # not even the schema mark a writable open would upgrade.
    return Store(args.data_dir or config.store.data_dir, readonly=True), config.store.id, config.store.timezone


def _with_store(args, fn) -> int:
    import os

    from core_ext import StoreError

    from ._config import ConfigError
    try:
        path_given = args.data_dir or None
        if path_given and not os.path.isdir(path_given):
            print(f"{args.command}: {path_given} is not a data directory", file=sys.stderr)
            return 2
        store, store_id, timezone = _open(args)
    except ConfigError as exc:
        for key, problem in exc.problems:
            print(f"{key}: {problem}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 2
    try:
        return fn(store, store_id, timezone)
    finally:
        store.close()


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def run_status(args) -> int:
    from ._status import snapshot
    from ._status_page import age, clock, money

    def show(store, store_id, timezone) -> int:
        now = int(time.time() * 1000)
        snap = snapshot(store, store_id=store_id, timezone=timezone, now_ms=now)
        if args.json:
            _print_json(snap)
            return 0
        led, b, sales = snap["ledger"], snap["batches"], snap["sales"]
        print(f"store {store_id}: {led['events']:,} events, the last {age(led['last_event_ms'], now)}; "
              f"{led['skus']} SKUs with stock")
        print(f"today ({sales['day']}): {sales['sales']} sales, {money(sales['sales_cents'])}; "
              f"refunds {money(sales['refund_cents'])}")
        for lane, f in sales["lanes"].items():
            print(f"  {lane:12} {f['sales']:5} sales {money(f['sales_cents']):>12}  {f['returns']} returns  "
                  f"{f['refusals']} refused")
        for method, cents in sales["payments"].items():
            print(f"  paid {method:9} {money(cents):>12}")
        print(f"batches: {b['sealed']} sealed (last {age(b['last_sealed_ms'], now)}), acknowledged through "
              f"{b['acked']}, {b['unacked_batches']} waiting for the ERP, {b['backlog_events']} events to seal")
        alerts = snap["alerts"]
        print("alerts: " + ", ".join(f"{kind} {len(alerts.get(kind, ()))}"
                                     for kind in ("low_stock", "expiring", "recalled", "unallocated")))
        for kind, m in sorted(snap["master"].items()):
            waiting = "".join(f", v{p['version']} waiting for {clock(p['effective_ms'], timezone)}" for p in m["pending"])
            print(f"master {kind}: version {m['version']}{waiting}")
        for r in snap["refusals"][:5]:
            print(f"refused {clock(r['ts_ms'], timezone)} {r['source']}: {r['err']} {r['sku']} lot {r['lot']}")
        return 0
    return _with_store(args, show)


def run_alerts(args) -> int:
    import core_ext

    def show(store, _store_id, _timezone) -> int:
        with store.read() as tx:
            alerts = core_ext.stock_alerts(tx)
        if args.json:
            _print_json(alerts)
            return 0
        for a in alerts.get("low_stock", []):
            print(f"low stock  {a['sku']:12} {a['name'][:30]:30} on hand {a['on_hand']}, reorder point "
                  f"{a['reorder_point']}: order {a['suggested_qty']}")
        for a in alerts.get("expiring", []):
            print(f"expiring   {a['sku']:12} lot {a['lot']:10} {a['qty']} units expire {a['expiry']} "
                  f"({a['days_left']} days)")
        for a in alerts.get("recalled", []):
            print(f"RECALLED   {a['sku']:12} lot {a['lot']:10} {a['qty']} units on hand: {a['recall_id']}, pull them")
        for a in alerts.get("unallocated", []):
            print(f"unallocated {a['sku']:11} {a['qty']} units sold beyond the ledger's stock")
        if not any(alerts.values()):
            print("no open alert")
        return 0
    return _with_store(args, show)


def run_stock(args) -> int:
    import core_ext

    def show(store, _store_id, timezone) -> int:
        with store.read() as tx:
            found = core_ext.stock_of(tx, args.code, int(time.time() * 1000), timezone)
        if found is None:
            print(f"stock: no catalog item for {args.code!r} (a SKU, GTIN, POS code or scan)", file=sys.stderr)
            return 1
        if args.json:
            _print_json(found)
            return 0
        scanned = "".join(f", scanned {k} {v}" for k, v in found["scanned"].items())
        print(f"{found['sku']} {found['name']} ({found['category']}){scanned}")
        print(f"on hand {found['on_hand']} (reorder point {found['reorder_point']}, reorder qty {found['reorder_qty']})")
        for lot in found["lots"]:
            flags = [f"RECALLED {lot['recall_id']}"] if lot["recall_id"] else []
            flags += ["EXPIRED"] if lot["expired"] else (["expires soon"] if lot["expiring"] else [])
            print(f"  lot {lot['lot'] or '-':12} {lot['qty']:6}  expiry {lot['expiry'] or '-':10}  {' '.join(flags)}")
        for r in found["recalls"]:
            print(f"recall {r['recall_id']}: lot {r['lot'] or '(every lot)'}: {r['reason']}")
        return 0
    return _with_store(args, show)
