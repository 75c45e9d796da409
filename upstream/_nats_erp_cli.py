"""`gateway erp consume` and `gateway erp publish-master` / `publish-movements`: the chain's side of NATS/1.

  gateway erp consume --nats URL --keys DIR [--prefix gw] [--durable erp] [--state FILE] [--idle S]
  gateway erp publish-master KIND FILE --nats URL --key ERP.pem [--store S] [--version N] [--effective ISO]
  gateway erp publish-movements FILE --nats URL --key ERP.pem --store S [--version N]
"""
from __future__ import annotations

import argparse
import os
import sys

from ._envelope import MASTER_KINDS
from ._erp_client import load_source, parse_when_ms
from ._keys import load_private_key
from ._nats_erp import (
    ChainConsumer, ConsumeOptions, connect, consume, ensure_streams, load_store_keys, publish_document, read_state,
    run_blocking, sign_for_chain,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _hub_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nats", required=True, action="append", metavar="URL",
                        help="the hub, e.g. nats://hub.example:4222 (repeat for a cluster)")
    parser.add_argument("--prefix", default="gw", help="the subject prefix (default gw)")
    parser.add_argument("--token", default=None, help="the hub's token (default: the NATS_TOKEN environment variable)")
    parser.add_argument("--creds", default="", help="a NATS credentials file instead of a token")


def add_arguments(sub) -> None:
    """Add the NATS subcommands to the `erp` command's subparsers."""
    p = sub.add_parser("consume", help="verify every store's chain from the NATS hub and acknowledge it",
                       description="Read <prefix>.batches.> through a durable consumer, verify each store's "
                                   "chain (signature, prev, seq) and its day closes, acknowledge what verified, "
                                   "and print a summary per store. Exits 1 when a batch was rejected.")
    _hub_arguments(p)
    p.add_argument("--keys", required=True, metavar="DIR", help="a folder of <store>.pub.pem, one per store")
    p.add_argument("--durable", default="erp", help="the durable consumer's name (default erp)")
    p.add_argument("--state", default=None, metavar="FILE",
                   help="keeps each store's last verified batch and digest, so the next run checks the chain on")
    p.add_argument("--idle", type=float, default=2.0,
                   help="stop after this many seconds without a new batch (default 2; 0: run until interrupted)")
    p.add_argument("--create-streams", action="store_true",
                   help="create the chain's streams when missing (file storage, duplicate window 2 min)")

    for name, what in (("publish-master", "master data"), ("publish-movements", "stock movements")):
        p = sub.add_parser(name, help=f"sign and publish {what} to the NATS hub",
                           description=f"Sign the JSON or TOML content of FILE as {what} and publish it to the hub, "
                                       "for the whole chain or (--store) one store.")
        if name == "publish-master":
            p.add_argument("kind", choices=MASTER_KINDS, metavar="KIND", help=f"one of {', '.join(MASTER_KINDS)}")
        p.add_argument("file", metavar="FILE", help="the document's content, .json or .toml")
        p.add_argument("--key", required=True, help="the ERP's private key (PEM)")
        _hub_arguments(p)
        p.add_argument("--store", default=None, required=name == "publish-movements",
                       help="one store's id (default: every store)" if name == "publish-master" else "the store's id")
        p.add_argument("--version", type=int, default=None, help="the version (default: now in ms)")
        if name == "publish-master":
            p.add_argument("--effective", default=None, help="when it takes effect, ISO 8601 (default: at once)")


def _token(args) -> str:
    return args.token if args.token is not None else os.environ.get("NATS_TOKEN", "")


async def _consume(args) -> int:
    keys = load_store_keys(args.keys)
    consumer = ChainConsumer(keys, state=read_state(args.state))
    nc = await connect(args.nats, token=_token(args), creds=args.creds)
    try:
        if args.create_streams:
            await ensure_streams(nc.jetstream(), args.prefix)
        await consume(nc, consumer, ConsumeOptions(prefix=args.prefix, durable=args.durable,
                                                   state_path=args.state, idle_s=args.idle))
    finally:
        await nc.close()
    for line in consumer.report():
        print(line)
    return EXIT_FAILED if consumer.failed else EXIT_OK


async def _publish(args, kind: str) -> int:
    body = load_source(args.file)
    if not isinstance(body, dict):
        raise ValueError(f"{args.file}: the content must be a map (a JSON object or TOML table)")
    effective = parse_when_ms(args.effective) if getattr(args, "effective", None) else None
    doc = sign_for_chain(kind, body, load_private_key(args.key), version=args.version, effective_ms=effective)
    nc = await connect(args.nats, token=_token(args), creds=args.creds)
    try:
        ack = await publish_document(nc.jetstream(), args.prefix, doc, store=args.store)
    finally:
        await nc.close()
    where = f"store {args.store}" if args.store else "every store"
    print(f"{kind} version {doc['version']} published for {where} (stream {ack.stream}, seq {ack.seq}"
          f"{', already there' if ack.duplicate else ''})")
    return EXIT_OK


def run(args) -> int:
    import nats.errors

    try:
        if args.erp_command == "consume":
            return run_blocking(_consume(args))
        kind = "movements" if args.erp_command == "publish-movements" else args.kind
        return run_blocking(_publish(args, kind))
    except (nats.errors.Error, OSError) as exc:
        print(f"gateway erp {args.erp_command}: the hub: {exc!r}", file=sys.stderr)
        return EXIT_FAILED


COMMANDS = ("consume", "publish-master", "publish-movements")
