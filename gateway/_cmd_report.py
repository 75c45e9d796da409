"""`gateway report day [DAY]`: a business day's figures (CLOSE/1), read-only, beside a running gateway."""
from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="report", metavar="REPORT", required=True)
    p = sub.add_parser(
        "day", help="a closed business day's close, or the current day so far",
        description="Print the figures of business day DAY (YYYY-MM-DD): its day_close when it is closed, "
                    "or, for the current day, the same figures so far (an X report; nothing is sealed or "
                    "closed). Without DAY: the current day. Opens the store read-only, so it is safe while "
                    "the gateway runs. Exits 0, or 1 when DAY is neither closed nor current.")
    p.add_argument("day", nargs="?", metavar="DAY", help="the business day, YYYY-MM-DD (default: the current one)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON document")
    p.add_argument("--config", metavar="FILE", help="the gateway's configuration (default: the embedded one)")
    p.add_argument("--data-dir", metavar="DIR", help="read this data directory instead of the configured one")


def _data_dir(args) -> str | None:
    if args.data_dir:
        return args.data_dir
    from ._config import ConfigError, load_config
    try:
        return load_config(args.config, resolve_secrets=False).store.data_dir
    except ConfigError as exc:
        for key, problem in exc.problems:
            print(f"{key}: {problem}", file=sys.stderr)
        return None


def run(args) -> int:
    from core_ext import Store, StoreError, day_report

    path = _data_dir(args)
    if path is None:
        return 2
    try:
        store = Store(path, readonly=True)
    except StoreError as exc:
        print(f"report day: {exc}", file=sys.stderr)
        return 2
    try:
        with store.read() as tx:
            report = day_report(tx, args.day)
    finally:
        store.close()
    if report is None:
        what = f"business day {args.day} is neither closed nor the current one" if args.day else "no business day is open yet"
        print(f"report day: {what}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report))
    else:
        print(render(report))
    return 0


def _money(cents) -> str:
    return "-" if cents is None else f"{cents / 100:,.2f}"


def render(report: dict) -> str:
    """The report for a person: one block per lane, then the totals, promotions, refusals, stock."""
    state = "OPEN (figures so far)" if report.get("open") else f"closed, event {report.get('to_seq')}"
    out = [f"business day {report['day']}: {state}; events {report['from_seq']}..{report['to_seq']}"]
    for name, lane in [*report["lanes"].items(), ("TOTAL", report["totals"])]:
        out.append(f"\n{name}: {lane['sales']} sales, {lane['returns']} returns; gross {_money(lane['gross_cents'])}, "
                   f"discount {_money(lane['discount_cents'])}, net {_money(lane['net_cents'])}, "
                   f"refunded {_money(lane['refund_cents'])}; points earned {lane['points_earned']}, "
                   f"redeemed {lane['points_redeemed']}")
        out.append(f"  {'method':10} {'taken':>12} {'refunded':>12} {'expected':>12} {'counted':>12} {'difference':>12}")
        for method, p in lane["payments"].items():
            out.append(f"  {method:10} {_money(p['taken']):>12} {_money(p['refunded']):>12} {_money(p['expected']):>12} "
                       f"{_money(p['counted']):>12} {_money(p['difference']):>12}")
    if report["promotions"]:
        out.append("\npromotions:")
        for rule, p in report["promotions"].items():
            out.append(f"  {rule}: rule set {p['ruleset']}, {p['baskets']} baskets, {p['units']} units, "
                       f"{_money(p['discount_cents'])} off")
    if report["refusals"]:
        out.append("\nrefusals: " + ", ".join(f"{code} {n}" for code, n in report["refusals"].items()))
    out.append("\nstock units: " + ", ".join(f"{key} {n}" for key, n in report["stock"].items()))
    return "\n".join(out)
