"""`gateway erp ...`: the reference ERP client from a terminal.

  gateway erp pull --url URL --token T --store-key PUB.pem [--verify] [--ack] [--after N] [--json]
  gateway erp push-master KIND FILE --key ERP.pem --url URL --token T [--version N] [--effective ISO]
  gateway erp push-movements FILE --key ERP.pem --url URL --token T [--version N]
  gateway erp consume | publish-master | publish-movements --nats URL ...   (NATS/1: _nats_erp_cli.py)

Exit codes: 0 done, 1 the gateway refused or a batch failed verification, 2 bad usage or input.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from ._day_close import Reconciler
from ._envelope import MASTER_KINDS, EnvelopeError, sign_document
from ._erp_client import ChainVerifier, ErpClient, ErpError, envelope_json, load_source, parse_when_ms, pull
from ._keys import KeyFileError, load_private_key, load_public_key

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="the gateway's upstream listener, e.g. https://10.0.0.5:8700")
    parser.add_argument("--token", default=None,
                        help="the ERP's bearer token (default: the ERP_TOKEN environment variable)")
    parser.add_argument("--cafile", default=None, help="CA certificate (PEM) that signed the gateway's TLS certificate")
    parser.add_argument("--timeout", type=float, default=40.0, help="seconds to wait for an answer (default 40)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the erp subcommands to `parser` (the `erp` command's parser)."""
    sub = parser.add_subparsers(dest="erp_command", metavar="ERP_COMMAND", required=True)

    p = sub.add_parser("pull", help="pull, verify and summarize sealed batches",
                       description="Pull every batch after N, check each signature and the hash chain, "
                                   "decode the bodies and print a summary per batch and in total.")
    _connection_arguments(p)
    p.add_argument("--store-key", required=True, metavar="PUB.pem",
                   help="the store's public key (PEM) that signs its batches")
    p.add_argument("--verify", action="store_true",
                   help="also check that each batch's documents cover exactly its events, in order, and "
                        "reconcile every day_close: recompute each figure from the documents of its range "
                        "and print each difference (exit 1 when any)")
    p.add_argument("--ack", action="store_true", help="acknowledge what was received and verified")
    p.add_argument("--after", type=int, default=None, metavar="N", help="pull batches after this seq (default 0, or the state file's)")
    p.add_argument("--state", default=None, metavar="FILE",
                   help="a file keeping the last verified seq and digest, so the next pull checks the chain from there")
    p.add_argument("--limit", type=int, default=500, help="batches per request (default 500, at most 1000)")
    p.add_argument("--wait", type=float, default=0, help="long-poll up to this many seconds when nothing is new")
    p.add_argument("--json", action="store_true", help="print one JSON line per batch (with its decoded body)")

    p = sub.add_parser("push-master", help="sign and send a master-data document",
                       description="Sign the JSON or TOML content of FILE as master data of KIND and PUT it.")
    p.add_argument("kind", choices=MASTER_KINDS, metavar="KIND", help=f"one of {', '.join(MASTER_KINDS)}")
    p.add_argument("file", metavar="FILE", help="the document's content, .json or .toml")
    p.add_argument("--key", required=True, help="the ERP's private key (PEM)")
    _connection_arguments(p)
    p.add_argument("--version", type=int, default=None, help="the version (default: the one in force + 1)")
    p.add_argument("--effective", default=None, help="when it takes effect, ISO 8601 (default: at once)")

    p = sub.add_parser("push-movements", help="sign and send stock movements",
                       description='Sign FILE ({"movements": [...]}, .json or .toml) and POST it.')
    p.add_argument("file", metavar="FILE", help="the movements, .json or .toml")
    p.add_argument("--key", required=True, help="the ERP's private key (PEM)")
    _connection_arguments(p)
    p.add_argument("--version", type=int, default=None, help="the ERP's own counter (default: now in ms)")


    p = sub.add_parser("close-count", help="close a scanner's open cycle count into adjustments",
                       description="Close the open cycle count of DEVICE (a scanner with role = \"count\"): every "
                                   "SKU it counted is set to the counted figure, lots not scanned count as zero.")
    p.add_argument("device", metavar="DEVICE", help="the counting scanner's name in the configuration")
    _connection_arguments(p)
    p.add_argument("--id", default=None, help="an id for this close, so a retry closes once (default: now in ms)")

    from . import _nats_erp_cli
    _nats_erp_cli.add_arguments(sub)


def _client(args) -> ErpClient:
    token = args.token if args.token is not None else os.environ.get("ERP_TOKEN", "")
    if not token:
        raise ValueError("no token: give --token or set ERP_TOKEN")
    return ErpClient(args.url, token, cafile=args.cafile, timeout=args.timeout)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _types(by_type: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(by_type.items())) or "none"


def _read_state(path: str | None):
    if not path or not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        int(state["seq"])
        return state
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a state file this client wrote ({exc})") from None


def _write_state(path: str, verifier: ChainVerifier) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(verifier.state(), f)
    os.replace(tmp, path)


def run_pull(args) -> int:
    public_key = load_public_key(args.store_key)
    state = _read_state(args.state)
    if state is not None and args.after is None:
        verifier = ChainVerifier.from_state(public_key, state)
    else:
        verifier = ChainVerifier(public_key, seq=args.after or 0)
    if not verifier.anchored:
        _say(f"note: starting after batch {verifier.seq} without its digest: the first batch's prev is trusted")
    with _client(args) as client:
        run = _PullRun(args, verifier, target=client.status().get("last_seq", 0))
        try:
            totals = pull(client, verifier, ack=args.ack, limit=args.limit, wait=args.wait,
                          on_batch=run.on_batch, progress=run.progress)
        except EnvelopeError as exc:
            if args.state:
                _write_state(args.state, verifier)
            _say(f"REJECTED {exc} (verified through batch {verifier.seq}; nothing after it acknowledged)")
            return EXIT_FAILED
    run.print_totals(totals)
    if run.differing:
        _say(f"RECONCILIATION FAILED for {len(run.differing)} day(s): {', '.join(run.differing)}")
        return EXIT_FAILED
    return EXIT_OK


class _PullRun:
    """What one `gateway erp pull` prints and keeps as the batches come: each batch's line (or JSON),
    the day closes reconciled, the progress on standard error, the chain state saved."""

    def __init__(self, args, verifier: ChainVerifier, *, target: int):
        self.args = args
        self.verifier = verifier
        self.target = target
        self.out = sys.stdout
        self.started = self.last_progress = time.monotonic()
        self.reconciler = Reconciler()
        self.differing: list[str] = []

    def on_batch(self, env, body, summary) -> None:
        args, out = self.args, self.out
        if args.verify:
            seqs = [d.get("seq") if isinstance(d, dict) else None for d in body["docs"]]
            if seqs != list(range(env["first_event"], env["last_event"] + 1)):
                raise EnvelopeError("its documents do not cover its events in order", seq=env["seq"])
            for doc in body["docs"]:
                _reconcile(self.reconciler, doc, self.differing, out, args.json)
        if args.json:
            print(json.dumps({"batch": envelope_json(env, body)}), file=out)
        else:
            print(f"batch {summary.seq}: events {summary.first_event}-{summary.last_event}, "
                  f"{summary.docs} docs ({_types(summary.by_type)}), {summary.stock_rows} stock rows, "
                  f"{summary.alerts} alerts", file=out)

    def progress(self, totals) -> None:
        if self.args.state:
            _write_state(self.args.state, self.verifier)
        now = time.monotonic()
        if now - self.last_progress >= 1.0:
            self.last_progress = now
            _say(f"... {totals.batches} batches through {totals.last_seq} of {max(self.target, totals.last_seq)}"
                 f" ({totals.batches / (now - self.started):.0f}/s)")

    def print_totals(self, totals) -> None:
        args = self.args
        if args.json:
            summary = {"batches": totals.batches, "docs": totals.docs, "by_type": totals.by_type,
                       "stock_rows": totals.stock_rows, "last_seq": totals.last_seq,
                       "acked": totals.acked if args.ack else None, "chain_anchored": self.verifier.anchored}
            print(json.dumps({"totals": summary}), file=self.out)
        else:
            print(f"total: {totals.batches} batches, {totals.docs} docs ({_types(totals.by_type)}), "
                  f"{totals.stock_rows} stock rows; verified through batch {totals.last_seq}"
                  + (f", acknowledged through {totals.acked}" if args.ack and totals.acked else ""), file=self.out)


def _reconcile(reconciler: Reconciler, doc: dict, differing: list, out, as_json: bool) -> None:
    """Check a pulled document if it is a day_close; print what was found."""
    found = reconciler.feed(doc) if isinstance(doc, dict) else None
    if found is None:
        return
    day = doc.get("day")
    checked = not (found and found[0].startswith("not checked"))
    if checked and found:
        differing.append(str(day))
    if as_json:
        print(json.dumps({"reconcile": {"day": day, "checked": checked, "differences": found if checked else [],
                                        "note": None if checked else found[0]}}), file=out)
    elif not checked:
        print(f"day {day}: {found[0]}", file=out)
    elif found:
        for line in found:
            print(f"day {day}: DIFFERS {line}", file=out)
    else:
        print(f"day {day}: reconciled, every figure of its close matches documents "
              f"{doc.get('from_seq')}..{doc.get('to_seq')}", file=out)


def _signed(kind: str, args, default_version) -> dict:
    key = load_private_key(args.key)
    body = load_source(args.file)
    if not isinstance(body, dict):
        raise ValueError(f"{args.file}: the content must be a map (a JSON object or TOML table)")
    version = args.version if args.version is not None else default_version()
    effective = parse_when_ms(args.effective) if getattr(args, "effective", None) else None
    return sign_document(kind, version, body, key, issued_ms=int(time.time() * 1000), effective_ms=effective)


def _next_version(status: dict, kind: str) -> int:
    """One above the newest version the gateway holds: in force, or sent ahead and still waiting
    (the gateway refuses anything not above both)."""
    waiting = [version for version, _effective in (status.get("pending") or {}).get(kind, [])]
    return max([status["versions"].get(kind, 0)] + waiting) + 1


def run_push_master(args) -> int:
    with _client(args) as client:
        doc = _signed(args.kind, args, lambda: _next_version(client.status(), args.kind))
        answer = client.put_master(doc)
    when = f", effective {answer['effective_ms']}" if answer.get("effective_ms") else ""
    print(f"{args.kind} version {answer.get('applied')} accepted{when}")
    return EXIT_OK


def run_push_movements(args) -> int:
    with _client(args) as client:
        doc = _signed("movements", args, lambda: int(time.time() * 1000))
        answer = client.post_movements(doc)
    print(f"movements: {answer.get('applied', 0)} applied, {answer.get('duplicates', 0)} already applied before")
    return EXIT_OK


def run_close_count(args) -> int:
    with _client(args) as client:
        answer = client.close_count(args.device, args.id or f"close-{int(time.time() * 1000)}")
    for sku, lot, counted, delta in answer.get("counted", []):
        print(f"{sku:16} lot {lot or '-':12} counted {counted:6}  adjustment {delta:+d}")
    print(f"count of {args.device} closed as ledger event {answer.get('seq')}")
    return EXIT_OK


def run(args) -> int:
    if args.erp_command in ("consume", "publish-master", "publish-movements"):
        from . import _nats_erp_cli
        try:
            return _nats_erp_cli.run(args)
        except (KeyFileError, ValueError) as exc:
            _say(f"gateway erp {args.erp_command}: {exc}")
            return EXIT_USAGE
    commands = {"pull": run_pull, "push-master": run_push_master, "push-movements": run_push_movements,
                "close-count": run_close_count}
    try:
        return commands[args.erp_command](args)
    except ErpError as exc:
        _say(f"gateway erp {args.erp_command}: {exc}")
        if exc.status == 401:
            _say("  check --token (or ERP_TOKEN) against the gateway's upstream.token")
        for problem in exc.body.get("errors") or ():
            _say(f"  - {problem}")
        return EXIT_FAILED
    except (KeyFileError, ValueError) as exc:
        _say(f"gateway erp {args.erp_command}: {exc}")
        return EXIT_USAGE
