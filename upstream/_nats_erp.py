"""NATS/1, the chain's side: one reference consumer for every store's chain, and publishing documents.

`ChainConsumer` is the part without I/O: fed each message of `<prefix>.batches.>`, it verifies the
store's chain (signature, `prev`, `seq`, events without a gap) and says whether to acknowledge it.
`consume` runs it against the hub (asyncio, nats-py); `publish_document` signs and publishes master
data or movements. `ensure_streams` creates the streams the way the chain runs them.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import nats
import nats.js.errors
from nats.js import api

from ._envelope import EnvelopeError, decode_body, decode_envelope, digest, sign_document
from ._erp_client import ChainVerifier, summarize
from ._nats_hub import MSG_ID

log = logging.getLogger("gateway.erp.nats")

# Verdicts on one batch message.
VERIFIED, DUPLICATE, REJECTED = "verified", "duplicate", "rejected"

# A day close's own check (day-close.md): given the store, the `day_close` document and every document
# of its range (`from_seq..to_seq`, in order), the problems found (empty: it reconciles).
DayCloseCheck = Callable[[str, dict, list], list]


def stream_names(prefix: str) -> tuple[str, str]:
    """(batches stream, documents stream) for a subject prefix: `GW_BATCHES`, `GW_DOWN`."""
    base = prefix.replace(".", "_").replace("-", "_").upper()
    return f"{base}_BATCHES", f"{base}_DOWN"


async def ensure_streams(js, prefix: str, *, replicas: int = 1, duplicate_window_s: float = 120.0) -> None:
    """Create the chain's two streams when missing (file storage; the hub runs `sync_interval: always`)."""
    batches, down = stream_names(prefix)
    for name, subjects in ((batches, [f"{prefix}.batches.>"]),
                           (down, [f"{prefix}.master.>", f"{prefix}.movements.>"])):
        try:
            await js.stream_info(name)
            continue
        except nats.js.errors.NotFoundError:
            pass
        await js.add_stream(api.StreamConfig(
            name=name, subjects=subjects, storage=api.StorageType.FILE, retention=api.RetentionPolicy.LIMITS,
            num_replicas=replicas, duplicate_window=duplicate_window_s, discard=api.DiscardPolicy.NEW))


# ---------------------------------------------------------------------------------------------
# Verifying every store's chain (no I/O)

@dataclass(slots=True)
class StoreSummary:
    batches: int = 0
    duplicates: int = 0
    docs: int = 0
    by_type: dict = field(default_factory=dict)
    last_seq: int = 0
    rejected: list = field(default_factory=list)
    day_closes: int = 0
    day_close_problems: list = field(default_factory=list)


class ChainConsumer:
    """Every store's chain as the ERP knows it: the last verified batch and its digest, per store.

    `keys` maps a store id to its public key. `state` (from `state()`, e.g. kept in a file) resumes
    each chain where it stood. `day_close_check`, when given, reconciles every `day_close` document
    against the documents of its range; without it a day close is counted, not checked.
    """

    def __init__(self, keys: dict, *, state: dict | None = None, day_close_check: DayCloseCheck | None = None):
        self.keys = dict(keys)
        self.day_close_check = day_close_check
        self.verifiers: dict[str, ChainVerifier] = {}
        self.summaries: dict[str, StoreSummary] = {}
        self._open_days: dict[str, list] = {}   # store -> documents since its last day close
        for store, st in (state or {}).items():
            if store in self.keys:
                self.verifiers[store] = ChainVerifier.from_state(self.keys[store], st)

    def summary(self, store: str) -> StoreSummary:
        return self.summaries.setdefault(store, StoreSummary())

    def take(self, subject: str, data: bytes) -> tuple[str, str]:
        """(verdict, words) for one message: acknowledge VERIFIED and DUPLICATE, never REJECTED."""
        store = subject.rpartition(".")[2]
        summary = self.summary(store)
        try:
            env = decode_envelope(data)
            if env["store"] != store:
                raise EnvelopeError(f"names store {env['store']!r} but came on {subject}", seq=env["seq"])
            key = self.keys.get(store)
            if key is None:
                raise EnvelopeError(f"no public key for store {store!r}", seq=env["seq"])
            verifier = self.verifiers.setdefault(store, ChainVerifier(key, store=store))
            if env["seq"] <= verifier.seq:
                return self._repeat(verifier, env, summary)
            verifier.check(env)
            body = decode_body(env)
        except EnvelopeError as exc:
            summary.rejected.append(str(exc))
            return REJECTED, str(exc)
        batch = summarize(env, body)
        summary.batches += 1
        summary.docs += batch.docs
        summary.last_seq = env["seq"]
        for kind, n in batch.by_type.items():
            summary.by_type[kind] = summary.by_type.get(kind, 0) + n
        self._day_closes(store, body["docs"], summary)
        return VERIFIED, f"batch {env['seq']}"

    @staticmethod
    def _repeat(verifier: ChainVerifier, env: dict, summary: StoreSummary) -> tuple[str, str]:
        # A redelivery (the consumer died before its ack) of a batch verified before.
        if env["seq"] == verifier.seq and verifier.digest is not None and digest(env) != verifier.digest:
            raise EnvelopeError("differs from the batch of the same seq verified before", seq=env["seq"])
        summary.duplicates += 1
        return DUPLICATE, f"batch {env['seq']} again"

    def _day_closes(self, store: str, docs: list, summary: StoreSummary) -> None:
        """The hook for day closes (day-close.md): each is counted, and checked when a checker is given."""
        pending = self._open_days.setdefault(store, []) if self.day_close_check else None
        for doc in docs:
            if pending is not None:
                pending.append(doc)
            if not isinstance(doc, dict) or doc.get("type") != "day_close":
                continue
            summary.day_closes += 1
            if pending is None:
                continue
            in_range = [d for d in pending if isinstance(d, dict)
                        and doc.get("from_seq", 0) <= d.get("seq", -1) <= doc.get("to_seq", -1)]
            for problem in self.day_close_check(store, doc, in_range) or ():
                summary.day_close_problems.append(f"{doc.get('day')}: {problem}")
            pending[:] = [d for d in pending if isinstance(d, dict) and d.get("seq", 0) > doc.get("to_seq", 0)]

    def state(self) -> dict:
        return {store: v.state() for store, v in self.verifiers.items()}

    def report(self) -> list[str]:
        """One line per store, in store order, plus one per rejection and per day-close problem."""
        lines = []
        for store in sorted(self.summaries):
            s = self.summaries[store]
            types = ", ".join(f"{k} {v}" for k, v in sorted(s.by_type.items())) or "none"
            closes = f"{s.day_closes} day closes" + ("" if self.day_close_check or not s.day_closes
                                                    else " (not reconciled: no checker installed)")
            lines.append(f"store {store}: {s.batches} batches verified through {s.last_seq}, {s.docs} docs "
                         f"({types}), {s.duplicates} repeats, {closes}, {len(s.rejected)} rejected")
            lines += [f"  REJECTED {text}" for text in s.rejected[:5]]
            lines += [f"  DAY CLOSE {text}" for text in s.day_close_problems[:5]]
        return lines

    @property
    def failed(self) -> bool:
        return any(s.rejected or s.day_close_problems for s in self.summaries.values())


def load_store_keys(folder: str) -> dict:
    """{store id: public key} from `<store>.pub.pem` files in `folder`."""
    from ._keys import load_public_key

    keys = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".pub.pem"):
            keys[name[:-len(".pub.pem")]] = load_public_key(os.path.join(folder, name))
    if not keys:
        raise ValueError(f"{folder}: holds no <store>.pub.pem file")
    return keys


def read_state(path: str | None) -> dict:
    if not path or not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_state(path: str | None, consumer: ChainConsumer) -> None:
    """Written (and synced) before the acknowledgements it covers, so a crash repeats, never skips."""
    if not path:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(consumer.state(), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Against the hub (asyncio)

async def connect(servers: list, *, token: str = "", creds: str = ""):
    options = {"servers": list(servers), "name": "erp", "connect_timeout": 5, "max_reconnect_attempts": 5}
    if token:
        options["token"] = token
    if creds:
        options["user_credentials"] = creds
    return await nats.connect(**options)


@dataclass(slots=True)
class ConsumeOptions:
    prefix: str = "gw"
    durable: str = "erp"
    state_path: str | None = None
    idle_s: float = 2.0             # stop after this long without a message (0: never)
    fetch_batch: int = 256
    fetch_wait_s: float = 1.0       # how long one fetch waits for messages before it counts as idle
    until: dict | None = None       # {store: seq}: stop once every store is verified through its seq
    on_page: Callable | None = None  # called after each page (progress, figures)


async def consume(nc, consumer: ChainConsumer, options: ConsumeOptions) -> ChainConsumer:
    """Verify and acknowledge `<prefix>.batches.>` through the durable consumer until idle (or `until`)."""
    js = nc.jetstream()
    batches, _down = stream_names(options.prefix)
    config = api.ConsumerConfig(durable_name=options.durable, ack_policy=api.AckPolicy.EXPLICIT,
                                deliver_policy=api.DeliverPolicy.ALL, max_ack_pending=options.fetch_batch * 4,
                                ack_wait=60.0)
    sub = await js.pull_subscribe(f"{options.prefix}.batches.>", durable=options.durable, stream=batches,
                                  config=config)
    idle_since = time.monotonic()
    while not _reached(consumer, options.until):
        try:
            messages = await sub.fetch(options.fetch_batch, timeout=options.fetch_wait_s)
        except asyncio.TimeoutError:
            # nats-py raises its own TimeoutError (a subclass) or, when its wait ran out between the
            # server's "no messages" and the lingering request, asyncio's: an idle page either way.
            messages = []
        if not messages:
            if options.idle_s and time.monotonic() - idle_since >= options.idle_s:
                break
            continue
        idle_since = time.monotonic()
        verdicts = [consumer.take(m.subject, m.data) for m in messages]
        write_state(options.state_path, consumer)
        for message, (verdict, text) in zip(messages, verdicts):
            if verdict == REJECTED:
                log.error("%s REJECTED: %s", message.subject, text)
                continue  # left unacknowledged: delivered again, and reported every time until fixed
            await message.ack()
        if options.on_page is not None:
            options.on_page(consumer, len(messages))
    return consumer


def _reached(consumer: ChainConsumer, until: dict | None) -> bool:
    if not until:
        return False
    return all(consumer.summary(store).last_seq >= seq for store, seq in until.items())


def document_subject(prefix: str, kind: str, store: str | None) -> str:
    if kind == "movements":
        if not store:
            raise ValueError("movements are for one store: give its id")
        return f"{prefix}.movements.{store}"
    return f"{prefix}.master.{kind}" + (f".{store}" if store else "")


async def publish_document(js, prefix: str, doc: dict, *, store: str | None = None):
    """Publish a signed document to its subject; the same document twice is one message (Nats-Msg-Id)."""
    import msgpack

    subject = document_subject(prefix, doc["kind"], store)
    headers = {MSG_ID: f"{doc['kind']}:{store or '*'}:{doc['version']}"}
    return await js.publish(subject, msgpack.packb(doc, use_bin_type=True), headers=headers)


def sign_for_chain(kind: str, body, key, *, version: int | None = None, effective_ms: int | None = None) -> dict:
    """A signed document; the default version is the issue time in ms, above every earlier one, whether
    it went to the whole chain or to one store (a store keeps one version line per kind)."""
    now = int(time.time() * 1000)
    return sign_document(kind, now if version is None else version, body, key, issued_ms=now,
                         effective_ms=effective_ms)


def run_blocking(coro):
    """Run an asyncio coroutine from the command line."""
    return asyncio.run(coro)
