"""`gateway verify-ledger`: replay the event log and compare it with the stored balances."""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="the gateway's configuration (default: the embedded one)")
    parser.add_argument("--data-dir", metavar="DIR", help="check this data directory instead of the configured one")


def run(args) -> int:
    from core_ext import Store, StoreError
    from core_ext._verify import verify

    if args.data_dir:
        path = args.data_dir
    else:
        from ._config import ConfigError, load_config
        try:
            # Only the data directory is needed: the tokens' env: variables need not be set here.
            path = load_config(args.config, resolve_secrets=False).store.data_dir
        except ConfigError as exc:
            for key, problem in exc.problems:
                print(f"{key}: {problem}", file=sys.stderr)
            return 2
    try:
        # Read-only: beside a running gateway (of this version or an older one) it changes nothing,
        # not even the schema mark a writable open would upgrade.
        store = Store(path, readonly=True)
    except StoreError as exc:
        print(f"verify-ledger: {exc}", file=sys.stderr)
        return 2
    try:
        with store.read() as tx:
            events = tx.last_seq()
        problems = verify(store, progress=lambda done, total: print(f"  replayed {done:,} of {total:,} events",
                                                                    file=sys.stderr))
    finally:
        store.close()
    for problem in problems:
        print(problem)
    if problems:
        print(f"verify-ledger: {len(problems)} balance(s) differ from the replay of {events:,} events", file=sys.stderr)
        return 1
    print(f"verify-ledger: OK, {events:,} events replayed, every balance matches")
    return 0
