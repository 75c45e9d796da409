"""A reference ERP client of UP/1: pull and verify batches, acknowledge them, send signed documents.

Blocking (the standard library's http.client), so an ERP team can read it as plain Python and a
test can run it in a worker thread. Every batch is checked alone (signature) and in sequence (hash
chain, no gap in seq or events) before it is counted as received.
"""
from __future__ import annotations

import datetime
import http.client
import json
import ssl
import tomllib
import urllib.parse
from dataclasses import dataclass, field

import msgpack

from core_ext import docbytes

from ._envelope import (
    EnvelopeError, UpstreamError, ZERO_DIGEST, check_envelope, count_body, decode_body, to_jsonable, unpack,
    verify_envelope,
)

API = "/upstream/v1"


class ErpError(UpstreamError):
    """The gateway answered with an error (`status`, `code`), or could not be reached (status 0)."""

    def __init__(self, status: int, code: str, message: str, body: dict | None = None):
        super().__init__(f"{status} {code}: {message}" if status else message)
        self.status = status
        self.code = code
        self.message = message
        self.body = body or {}


class ErpClient:
    """One gateway's UP/1 API, over one kept-alive connection."""

    def __init__(self, url: str, token: str, *, cafile: str | None = None, timeout: float = 40.0):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the gateway URL must be http(s)://host:port, got {url!r}")
        self.parts = parts
        self.token = token
        self.timeout = timeout
        self.context = ssl.create_default_context(cafile=cafile) if parts.scheme == "https" else None
        self._conn = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "ErpClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _connection(self):
        if self._conn is None:
            port = self.parts.port
            if self.context is not None:
                self._conn = http.client.HTTPSConnection(self.parts.hostname, port, timeout=self.timeout,
                                                         context=self.context)
            else:
                self._conn = http.client.HTTPConnection(self.parts.hostname, port, timeout=self.timeout)
        return self._conn

    def call(self, method: str, path: str, body=None, *, query: dict | None = None):
        """One request; returns the decoded answer, or raises ErpError."""
        target = self.parts.path.rstrip("/") + API + path
        if query:
            target += "?" + urllib.parse.urlencode(query)
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/msgpack"}
        payload = None
        if body is not None:
            payload = msgpack.packb(body, use_bin_type=True)
            headers["Content-Type"] = "application/msgpack"
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, target, body=payload, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (http.client.HTTPException, OSError) as exc:
                self.close()
                # A kept-alive connection the server closed meanwhile: one fresh try.
                if attempt == 2 or not isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError,
                                                        ConnectionResetError)):
                    raise ErpError(0, "UNREACHABLE", f"cannot reach {self.parts.geturl()}: {exc}") from None
        try:
            answer = unpack(data, "the answer") if data else {}
        except ValueError as exc:
            raise ErpError(resp.status, "BAD_ANSWER", str(exc)) from None
        if not 200 <= resp.status < 300:
            if not isinstance(answer, dict):
                answer = {}
            raise ErpError(resp.status, str(answer.get("error", "HTTP_ERROR")), str(answer.get("message", "")),
                           answer)
        return answer

    def status(self) -> dict:
        return self.call("GET", "/status")

    def batches(self, after: int = 0, limit: int = 100, wait: float = 0) -> tuple[list, bool]:
        query = {"after": after, "limit": limit}
        if wait:
            query["wait"] = wait
        answer = self.call("GET", "/batches", query=query)
        if not isinstance(answer, dict) or not isinstance(answer.get("batches"), list):
            raise ErpError(200, "BAD_ANSWER", "the answer to /batches has no list of batches")
        return answer["batches"], bool(answer.get("more"))

    def ack(self, through: int) -> dict:
        return self.call("POST", "/ack", {"through": through})

    def put_master(self, doc: dict) -> dict:
        return self.call("PUT", f"/master/{urllib.parse.quote(doc['kind'])}", doc)

    def close_count(self, device: str, close_id: str) -> dict:
        return self.call("POST", f"/counts/{device}/close", {"id": close_id})

    def post_movements(self, doc: dict) -> dict:
        return self.call("POST", "/movements", doc)


class ChainVerifier:
    """The ERP's memory of one store's chain: the last batch received and its digest.

    Starting after batch N without its digest (`digest` None), the first batch's `prev` is trusted
    as given: say so to whoever reads the result (`anchored` is False).
    """

    def __init__(self, public_key, *, seq: int = 0, digest: bytes | None = None, last_event: int | None = None,
                 store: str | None = None):
        self.public_key = public_key
        self.seq = seq
        self.digest = ZERO_DIGEST if seq == 0 else digest
        self.last_event = 0 if seq == 0 else last_event
        self.store = store
        self.anchored = self.digest is not None

    def check(self, env) -> None:
        """Accept `env` as the next batch or raise EnvelopeError saying what is wrong."""
        check_envelope(env)
        if self.store is not None and env["store"] != self.store:
            raise EnvelopeError(f"belongs to store {env['store']!r}, not {self.store!r}", seq=env["seq"],
                                reason="chain")
        expect_first = None if self.last_event is None else self.last_event + 1
        self.digest = verify_envelope(env, self.public_key, self.digest, expect_seq=self.seq + 1,
                                      expect_first_event=expect_first)
        self.seq = env["seq"]
        self.last_event = env["last_event"]
        if self.store is None:
            self.store = env["store"]

    def state(self) -> dict:
        return {"seq": self.seq, "digest": self.digest.hex() if self.digest else None,
                "last_event": self.last_event, "store": self.store}

    @classmethod
    def from_state(cls, public_key, state: dict) -> "ChainVerifier":
        digest = bytes.fromhex(state["digest"]) if state.get("digest") else None
        return cls(public_key, seq=int(state["seq"]), digest=digest, last_event=state.get("last_event"),
                   store=state.get("store"))


@dataclass(slots=True)
class BatchSummary:
    seq: int
    first_event: int
    last_event: int
    docs: int
    by_type: dict
    stock_rows: int
    alerts: int


@dataclass(slots=True)
class PullTotals:
    batches: int = 0
    docs: int = 0
    by_type: dict = field(default_factory=dict)
    stock_rows: int = 0
    last_seq: int = 0
    acked: int = 0


def summarize(env: dict, body: dict) -> BatchSummary:
    # Documents counted by type as text (a malformed type is counted, never unhashable).
    return BatchSummary(env["seq"], env["first_event"], env["last_event"], len(body["docs"]),
                        docbytes.count_docs(body["docs"]), len(body["stock"]), len(body["alerts"]))


def _counted(env: dict) -> BatchSummary:
    # The same summary, counted from the body's bytes: no caller needs its documents.
    counts = count_body(env)
    return BatchSummary(env["seq"], env["first_event"], env["last_event"], counts.docs, counts.by_type,
                        counts.stock_rows, counts.alerts)


def pull(client: ErpClient, verifier: ChainVerifier, *, ack: bool = False, limit: int = 500, wait: float = 0,
         on_batch=None, progress=None, until: int | None = None) -> PullTotals:
    """Pull every batch after `verifier.seq`, verify each, read its body, and (with `ack`)
    acknowledge after each page. `on_batch(env, body, summary)` sees each batch in order, its body
    decoded; without it, bodies are only counted (as checked, without building their documents).
    `progress(totals, last_seq)` is called after each page. Stops when the gateway says no more."""
    totals = PullTotals(last_seq=verifier.seq)
    while True:
        envelopes, more = client.batches(after=verifier.seq, limit=limit, wait=wait if not totals.batches else 0)
        for env in envelopes:
            verifier.check(env)
            if on_batch is None:
                body, summary = None, _counted(env)
            else:
                body = decode_body(env)
                summary = summarize(env, body)
            totals.batches += 1
            totals.docs += summary.docs
            totals.stock_rows += summary.stock_rows
            for kind, n in summary.by_type.items():
                totals.by_type[kind] = totals.by_type.get(kind, 0) + n
            totals.last_seq = env["seq"]
            if on_batch is not None:
                on_batch(env, body, summary)
        if ack and envelopes:
            client.ack(verifier.seq)
            totals.acked = verifier.seq
        if progress is not None:
            progress(totals)
        if not more or not envelopes or (until is not None and verifier.seq >= until):
            return totals


def load_source(path: str):
    """A document body from JSON or TOML (by the file's extension); raises ValueError naming the file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        if path.lower().endswith(".toml"):
            return tomllib.loads(data.decode("utf-8"))
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid {'TOML' if path.lower().endswith('.toml') else 'JSON'} ({exc})") from None


def parse_when_ms(text: str) -> int:
    """Unix milliseconds of an ISO 8601 date or time (no offset: UTC)."""
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 date or time, e.g. 2026-12-01T00:00:00+08:00") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return int(when.timestamp() * 1000)


def envelope_json(env: dict, body: dict | None = None) -> dict:
    """An envelope (with its decoded body in place of the compressed one) as JSON-ready data."""
    out = dict(env)
    if body is not None:
        out["body"] = body
    return to_jsonable(out)
