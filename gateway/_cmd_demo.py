"""`gateway demo`: the real gateway in a living demo store (`demo_store`), for trying it out.

Kept apart from `gateway run`, which never imports the simulators.
"""
from __future__ import annotations

import argparse
import sys


def _ports(text: str) -> tuple[int, int, int]:
    try:
        ports = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"three port numbers, POS/1,UP/1,metrics, got {text!r}") from None
    if len(ports) != 3 or not all(0 <= p <= 65535 for p in ports):
        raise argparse.ArgumentTypeError(f"three port numbers from 0 to 65535, POS/1,UP/1,metrics, got {text!r}")
    return ports


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default="demo", help="the demo store's folder, made on first start and kept "
                                                      "between runs (default: demo)")
    parser.add_argument("--fresh", action="store_true", help="start over: delete the folder first")
    parser.add_argument("--for", dest="for_s", type=float, metavar="SECONDS",
                        help="stop by itself after this many seconds (default: until Ctrl-C)")
    parser.add_argument("--ports", type=_ports, default=(8600, 8700, 9600), metavar="POS,UP,METRICS",
                        help="the listeners' ports on 127.0.0.1 (default 8600,8700,9600; 0 picks a free one)")
    parser.add_argument("--pace", type=float, default=2.0, metavar="SECONDS",
                        help="about how often each lane sells, in seconds (default 2)")
    parser.add_argument("--recall-after", type=float, default=60.0, metavar="SECONDS",
                        help="when the demo ERP issues its recall (default 60)")


def run(args) -> int:
    import trio

    from demo_store._run import log_to_file, run_demo
    from ._app import StartError

    if args.pace <= 0:
        print("gateway demo: --pace must be above 0", file=sys.stderr)
        return 2
    log_to_file(args.dir)
    try:
        tally = trio.run(lambda: run_demo(args.dir, fresh=args.fresh, ports=args.ports, for_s=args.for_s,
                                          pace_s=args.pace, recall_after_s=args.recall_after))
    except StartError as exc:
        print(f"{exc.key}: {exc.problem}", file=sys.stderr)
        print("gateway demo: could not start (is another gateway using the ports? try --ports)", file=sys.stderr)
        return 1
    return 1 if tally.errors else 0
