"""`gateway run`: serve the store until SIGTERM or SIGINT."""
from __future__ import annotations

import argparse
import functools
import logging
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="the store's configuration file (default: the embedded one, for trying things out)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="how much to log on standard error (default INFO)")


def run(args) -> int:
    import trio

    from ._app import StartError, run_until_signal
    from ._cmd_config import prepare
    from ._config import ConfigError, load_config

    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for key, problem in exc.problems:
            print(f"{key}: {problem}", file=sys.stderr)
        print("gateway: the configuration is invalid; nothing was started", file=sys.stderr)
        return 2
    # The embedded default makes its own keys so a fresh machine starts with no manual step; a
    # real store's configuration must name keys that exist (made once with `gateway keygen`).
    problems = prepare(config, create_keys=args.config is None)
    if problems:
        for key, problem in problems:
            print(f"{key}: {problem}", file=sys.stderr)
        print("gateway: files the configuration names are missing or unusable; nothing was started",
              file=sys.stderr)
        return 2
    try:
        trio.run(functools.partial(run_until_signal, config, freeze_state=True))
    except StartError as exc:
        print(f"{exc.key}: {exc.problem}", file=sys.stderr)
        print("gateway: could not start; nothing is running", file=sys.stderr)
        return 1
    return 0
