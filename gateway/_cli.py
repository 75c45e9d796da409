"""The `gateway` command: one entry point, a subcommand per task.

Each subcommand lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`; only
the chosen one is imported, so `gateway check-config` starts fast and does not need what `gateway run`
needs. Each command sets up its own logging (`run` has --log-level). Exit codes: 0 done, 1 failed,
2 bad usage or an invalid configuration.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from importlib import metadata

from ._config import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# name -> (module, one line for `gateway --help`, description for `gateway NAME --help`)
COMMANDS = {
    "run": ("gateway._cmd_run", "run the gateway until SIGTERM or SIGINT",
            "Run the gateway: open the store, start the devices, the POS/1, UP/1 and metrics listeners. "
            "Without --config it runs on the embedded default (data/ and keys/ in the current directory, "
            "making the store's key pair on first start)."),
    "demo": ("gateway._cmd_demo", "run a living demo store: the real gateway driven by simulated lanes, scanner, POS and ERP",
             "Run the real gateway in a demo store of its own folder (demo/, made on first start, kept between "
             "runs; --fresh starts over): two ECR/1 lanes and a receiving scanner on pseudo-terminals, a legacy "
             "POS dropping CSV files and a demo ERP sending master data, a recall a minute in, and pulling, "
             "verifying and acknowledging every batch. Shows a live summary and the status page, POS/1, UP/1 and "
             "metrics URLs with the demo's tokens. Ctrl-C stops everything."),
    "check-config": ("gateway._cmd_config", "validate a configuration file",
                     "Validate FILE and the files it names (signing key, TLS files, data directory). Prints "
                     "each problem as 'KEY: PROBLEM' and exits 2, or any notes ('note: KEY: ...', e.g. no ERP "
                     "public key yet) and 'OK: <store id>, N devices' and exits 0. Secrets written "
                     "\"env:NAME\" need their environment variables set. Start from "
                     "configs/example-store.toml; every key is in docs/configuration.md."),
    "keygen": ("gateway._cmd_config", "write the store's Ed25519 signing key pair",
               "Write DIR/NAME.pem (the private key, mode 0600) and DIR/NAME.pub.pem (the public key to "
               "give the ERP). Never overwrites an existing key. To try the ERP's side on one machine, "
               "'gateway keygen --out erp --name erp' makes a pair standing in for the ERP's: its "
               "erp.pub.pem goes where keys.erp_public_key points, erp.pem is the --key of 'gateway erp'."),
    "token": ("gateway._cmd_token", "make a terminal's bearer token: 'gateway token new NAME'",
              "Make POS/1 terminal tokens. 'gateway token new NAME' prints a fresh token and the line to paste "
              "under [pos_api.tokens], as the token or as its SHA-256 ('sha256:<hex>'). SIGHUP makes a running "
              "gateway take the new tokens without a restart (docs/security.md)."),
    "verify-ledger": ("gateway._cmd_ledger", "replay the ledger and check every balance",
                      "Replay every ledger event and compare each stock balance with the replay; "
                      "exits 0 only when all are equal, 1 when one differs. It only reads, so it may run "
                      "beside a running gateway."),
    "status": ("gateway._cmd_inspect", "the store at a glance: sales today, batches, alerts, master data",
               "Print the store's state: events, today's sales by lane and payment method, the batch chain, "
               "open alerts, master data in force and waiting, the latest refusals. Read-only (LMDB readers): "
               "safe while the gateway runs. --json prints it as data."),
    "stock": ("gateway._cmd_inspect", "on hand of one item by lot, with expiries and recalls",
              "Print what the store holds of the item CODE names (a SKU, GTIN, POS code or a raw barcode scan): "
              "on hand by lot, each lot's expiry, expired or expiring lots, recalls. Read-only: safe while the "
              "gateway runs. Exits 1 when no catalog item matches."),
    "alerts": ("gateway._cmd_inspect", "open stock alerts: reorder, expiring lots, recalled lots on hand",
               "Print the open alerts: low stock with the suggested reorder quantity, lots expiring within the "
               "policy's window, recalled lots still on hand, units sold beyond the ledger. Read-only: safe "
               "while the gateway runs."),
    "report": ("gateway._cmd_report", "print a business day's figures (the close, or the day so far)",
               "Reports read from the store, read-only (safe while the gateway runs). 'gateway report day "
               "[DAY]' prints a business day's close, or the current day's figures so far (CLOSE/1)."),
    "price": ("gateway._cmd_price", "price a basket file against a promotions rules file, offline",
              "Price a basket file against a promotions rules file and explain every cent, committing "
              "nothing: a promotions manager checks a rule set before the ERP sends it."),
    "erp": ("upstream._erp_cli", "reference ERP client: pull batches, push master data and movements, close counts",
            "A reference ERP client for the upstream API (UP/1), for trying and checking a store from a "
            "shell. Every subcommand needs --url (the gateway's upstream.listen, e.g. http://127.0.0.1:8700) "
            "and the ERP's token (--token, or the ERP_TOKEN environment variable); pushes need --key, the "
            "ERP's private key. Exits 0 done, 1 the gateway refused or a batch failed verification, 2 bad "
            "usage or input."),
}


def _version() -> str:
    try:
        return metadata.version("store-gateway")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser(command: str | None) -> tuple[argparse.ArgumentParser, object]:
    """The parser, with the arguments of `command` alone (its module imported), if one is given."""
    parser = argparse.ArgumentParser(
        prog="gateway", description="Edge gateway for medical-device stores.",
        epilog="Run 'gateway COMMAND --help' for the options of each command. Exit codes: 0 done, "
               "1 failed, 2 bad usage or an invalid configuration. A walk-through: docs/quickstart-store.md.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    module = None
    for name, (module_name, summary, description) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=summary, description=description)
        sub.set_defaults(command=name)
        if name == command:
            module = importlib.import_module(module_name)
            _add_arguments(module, name, sub)
    return parser, module


def _add_arguments(module, name: str, parser: argparse.ArgumentParser) -> None:
    # One module serves check-config and keygen: it offers an `add_<name>_arguments` per command.
    specific = getattr(module, f"add_{name.replace('-', '_')}_arguments", None)
    (specific or module.add_arguments)(parser)


def _run(module, args) -> int:
    specific = getattr(module, f"run_{args.command.replace('-', '_')}", None)
    return (specific or module.run)(args)


def _chosen(argv: list[str]) -> str | None:
    """The subcommand named in argv: the first word that is not an option (the top level takes no values)."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _chosen(argv)
    try:
        parser, module = build_parser(command)
    except ImportError as exc:
        print(f"gateway {command}: not available in this installation ({exc})", file=sys.stderr)
        return EXIT_FAILED
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse already explained
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return _run(module, args)
    except ConfigError as exc:
        for key, problem in exc.problems:
            print(f"{key}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
