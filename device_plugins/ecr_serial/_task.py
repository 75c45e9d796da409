"""The trio task that serves one ECR/1 terminal: open the port, answer requests, reopen on unplug."""
from __future__ import annotations

import logging
import math

import trio

from core_ext import RateLimitedLog, Request, answer_refused, errors

from .._messages import id_problem
from .._serial_port import serve_port
from ._events import (
    Ack, AckTimeout, ConnectionClosed, Dropped, FrameRejected, GarbageSkipped, LinkError, Message,
    Nak, NEED_DATA,
)
from ._protocol import EcrConnection, EcrProtocolError, invalid_utf8

log = logging.getLogger("gateway.ecr")

REQUEST_TYPES = ("quote", "sale", "return", "member", "stock", "ping", "drawer_count")
READ_SIZE = 4096
# Requests waiting for the core, per line, besides the one it is working on: a terminal sends one
# at a time, so this is ample; more are answered UNAVAILABLE at once. The line asks the core one
# request at a time, so it never holds more than one place in the writer's queue.
MAX_WAITING = 16
# A message a device can repeat (a bad frame, a refusal) is logged once, then summarised at most
# once a minute per device and kind.
LOG_INTERVAL_S = 60.0
# A refusal's words about something the terminal sent quote at most this much of it.
QUOTE_CHARS = 40
# A refused id longer than this is not echoed in `re` (the answer must fit in a frame).
ECHO_ID_CHARS = 1024


async def serve(device: dict, submit, metrics, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve the terminal `device` until cancelled, reopening its port whenever it goes away."""
    name = device["name"]
    logs = device_log(name, metrics)

    async def run_link(stream):
        try:
            await _Link(name, stream, submit, metrics, logs).run()
        finally:
            logs.flush()

    await serve_port(device, run_link, metrics.connected.labels(name), logs, task_status=task_status)


def device_log(name: str, metrics) -> RateLimitedLog:
    """The device's rate-limited log (kept across reconnects), counting what it holds back."""
    return RateLimitedLog(log, LOG_INTERVAL_S, trio.current_time,
                          on_suppressed=metrics.log_suppressed.labels(name).inc)


class _Link:
    """One open port: a reader feeding the protocol, and a responder asking the core in order.

    Every request the reader ACKs is answered exactly once: by the plugin at once (a request it
    refuses itself, or `UNAVAILABLE` when MAX_WAITING already wait), or by the responder.
    """

    def __init__(self, name: str, stream: trio.abc.Stream, submit, metrics,
                 logs: RateLimitedLog | None = None):
        self.name = name
        self.stream = stream
        self.submit = submit
        self.metrics = metrics
        # The series every request moves, looked up once (labels() takes a lock and a dict lookup).
        self._received = metrics.received.labels(name)
        self._frames_in = metrics.frames.labels(name, "in")
        self._frames_out = metrics.frames.labels(name, "out")
        self._answered_ok = metrics.responses.labels(name, "ok")
        self.logs = logs if logs is not None else device_log(name, metrics)
        self.conn = EcrConnection()
        self.write_lock = trio.Lock()
        self.read_scope: trio.CancelScope | None = None
        self.requests_in, self.requests_out = trio.open_memory_channel(MAX_WAITING)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._respond)
            await self._read()
            nursery.cancel_scope.cancel()

    def _next_deadline(self) -> float:
        due = [d for d in (self.conn.next_deadline(), self.logs.next_due()) if d is not None]
        return min(due) if due else math.inf

    async def _read(self) -> None:
        conn = self.conn
        while True:
            with trio.CancelScope(deadline=self._next_deadline()) as scope:
                self.read_scope = scope
                data = await self.stream.receive_some(READ_SIZE)
                self._received.inc(len(data))
                conn.receive_data(data, trio.current_time())
            self.read_scope = None
            now = trio.current_time()
            # Also after data: a steady trickle of noise must not hold off the timeouts.
            conn.tick(now)
            self.logs.flush_due(now)
            out, closed = self._drain()
            await self._write(out + conn.data_to_send())
            if closed:
                return

    def _drain(self) -> tuple[bytes, bool]:
        """Handle the protocol's events: the bytes of the answers given at once, and whether the
        stream has ended."""
        name, metrics, logs = self.name, self.metrics, self.logs
        out = bytearray()
        closed = False
        while (event := self.conn.next_event()) is not NEED_DATA:
            if isinstance(event, Message):
                self._frames_in.inc()
                out += self._take(event.body, event.escaped)
            elif isinstance(event, (Nak, AckTimeout)):
                if event.resent:
                    self._frames_out.inc()
                    metrics.retransmits.labels(name).inc()
            elif isinstance(event, LinkError):
                metrics.link_errors.labels(name).inc()
                reason = "closed" if event.reason == "closed" else "retries"
                metrics.answers_dropped.labels(name, reason).inc()
                logs.warning(("link_error", event.reason),
                             "ecr %s: response to %r given up after %d sends (%s)", name,
                             event.body.get("re"), event.attempts, event.reason)
            elif isinstance(event, Dropped):
                metrics.answers_dropped.labels(name, event.reason).inc()
                logs.warning(("dropped", event.reason),
                             "ecr %s: response to %r dropped unsent (%s): the terminal is not "
                             "taking its answers", name, event.body.get("re"), event.reason)
            elif isinstance(event, FrameRejected):
                metrics.rejects.labels(name, event.reason).inc()
                logs.info(("rejected", event.reason), "ecr %s: frame discarded (%s)", name,
                          event.reason)
            elif isinstance(event, GarbageSkipped):
                metrics.garbage.labels(name).inc(event.count)
            elif isinstance(event, ConnectionClosed):
                closed = True
            elif isinstance(event, Ack):
                pass
        return bytes(out), closed

    def _take(self, body: dict, escaped: bool) -> bytes:
        """Queue an ACKed request for the core, or answer it at once; the bytes to write now."""
        refusal = self._refusal(body, escaped)
        if refusal is not None:
            self.metrics.rejects.labels(self.name, "bad_request").inc()
            self.logs.info(("refused", errors.BAD_REQUEST), "ecr %s: request refused: %s %s", self.name,
                           errors.BAD_REQUEST, refusal["msg"])
            return self._send(refusal)
        try:
            self.requests_in.send_nowait(body)
            return b""
        except trio.WouldBlock:
            self.metrics.shed.labels(self.name).inc()
            self.logs.warning("shed", "ecr %s: %d requests already waiting; %r answered %s",
                              self.name, MAX_WAITING, body["id"], errors.UNAVAILABLE)
            return self._send(answer_refused(body["id"], errors.UNAVAILABLE,
                                             f"{MAX_WAITING} requests from this terminal are already "
                                             "waiting; nothing was applied, retry later with the same id"))

    def _refusal(self, body: dict, escaped: bool) -> dict | None:
        """The `BAD_REQUEST` the plugin answers itself, or None when the core should see `body`."""
        problem = id_problem(body)
        rid = body["id"] if problem is None else _echo(body.get("id"))
        bad_text = invalid_utf8(body) if escaped else None
        kind = body.get("t")
        if bad_text:
            msg = bad_text
        elif kind not in REQUEST_TYPES:
            what = ("has no type `t`" if kind is None
                    else f"has the unknown type {_quote(kind)}")
            msg = f"the request {what}; expected one of {', '.join(REQUEST_TYPES)}"
        elif problem:
            msg = problem
        else:
            return None
        return answer_refused(rid, errors.BAD_REQUEST, msg)

    async def _respond(self) -> None:
        async for body in self.requests_out:
            answer = await self._ask_core(body)
            await self._write(self._send(answer))

    def _send(self, answer: dict) -> bytes:
        """Frame `answer` (behind any awaiting their ACK); the bytes to write now."""
        if answer.get("ok"):
            self._answered_ok.inc()
        else:
            self.metrics.responses.labels(self.name, str(answer.get("err", "error"))).inc()
        now = trio.current_time()
        try:
            out = self.conn.send(Message(answer), now)
        except EcrProtocolError as exc:
            self.logs.error("unframeable", "ecr %s: response to %r cannot be framed (%s); "
                            "sending its summary", self.name, answer.get("re"), exc)
            out = self.conn.send(Message(_summary(answer)), now)
        self._frames_out.inc()
        if self.read_scope is not None:
            # The reader sleeps until the old deadline; the ACK wait starts now.
            deadline = self.conn.next_deadline()
            if deadline is not None:
                self.read_scope.deadline = min(self.read_scope.deadline, deadline)
        return out

    async def _ask_core(self, body: dict) -> dict:
        rid = body["id"]
        try:
            response = await self.submit(Request(kind=body["t"], body=body, source=self.name,
                                                  channel="ecr"))
        except Exception:
            # Safe to ask the terminal to retry: ids make a repeated sale apply once.
            self.logs.error("core_failed", "ecr %s: the core failed on request %r", self.name, rid,
                            exc_info=True)
            return answer_refused(rid, errors.UNAVAILABLE, "the gateway cannot answer now; retry later with the same id")
        answer = dict(response.body)
        answer.setdefault("t", "res")
        answer.setdefault("re", rid)
        if not answer.get("ok"):
            self.logs.info(("refused", answer.get("err")), "ecr %s: request %r refused: %s %s",
                           self.name, rid, answer.get("err"), answer.get("msg"))
        return answer

    async def _write(self, data: bytes) -> None:
        if not data:
            return
        # The lock only keeps the reader's ACKs and the responder's answers from interleaving when
        # the port is slow to take them; free (nearly always), it is taken without a turn given
        # away, so the bytes leave at once.
        try:
            self.write_lock.acquire_nowait()
        except trio.WouldBlock:
            await self.write_lock.acquire()
        try:
            await self.stream.send_all(data)
        finally:
            self.write_lock.release()


def _echo(rid):
    """A refused id as `re` may carry it back: a string that can be framed, else None."""
    if not isinstance(rid, str) or len(rid) > ECHO_ID_CHARS or invalid_utf8(rid):
        return None
    return rid


def _quote(value) -> str:
    """`value` as a refusal may show it: escaped, and cut short."""
    text = ascii(value)
    return text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + "..."


def _summary(answer: dict) -> dict:
    """The fields a terminal needs, when the whole answer is too big to frame."""
    keep = ("t", "re", "ok", "err", "seq", "total_cents", "refund_cents")
    summary = {k: answer[k] for k in keep if k in answer}
    if isinstance(answer.get("msg"), str):
        summary["msg"] = answer["msg"][:200]
    return summary
