"""The trio task that serves one ECR/1 terminal: open the port, answer requests, reopen on unplug."""
from __future__ import annotations

import logging
import math

import trio

from core_ext._errors import BAD_REQUEST, UNAVAILABLE
from core_ext._types import Request

from .._messages import id_problem
from .._serial_port import serve_port
from ._events import (
    Ack, AckTimeout, ConnectionClosed, FrameRejected, GarbageSkipped, LinkError, Message, Nak,
    NEED_DATA,
)
from ._protocol import EcrConnection, EcrProtocolError

log = logging.getLogger("gateway.ecr")

REQUEST_TYPES = ("quote", "sale", "return", "member", "stock", "ping", "drawer_count")
READ_SIZE = 4096
# Requests received but not yet answered; a terminal sends one at a time, so this is ample.
MAX_WAITING = 16


async def serve(device: dict, submit, metrics, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve the terminal `device` until cancelled, reopening its port whenever it goes away."""
    name = device["name"]

    async def run_link(stream):
        await _Link(name, stream, submit, metrics).run()

    await serve_port(device, run_link, metrics.connected.labels(name), log, task_status=task_status)


class _Link:
    """One open port: a reader feeding the protocol, and a responder asking the core in order."""

    def __init__(self, name: str, stream: trio.abc.Stream, submit, metrics):
        self.name = name
        self.stream = stream
        self.submit = submit
        self.metrics = metrics
        self.conn = EcrConnection()
        self.write_lock = trio.Lock()
        self.read_scope: trio.CancelScope | None = None
        self.requests_in, self.requests_out = trio.open_memory_channel(MAX_WAITING)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._respond)
            await self._read()
            nursery.cancel_scope.cancel()

    async def _read(self) -> None:
        conn = self.conn
        while True:
            deadline = conn.next_deadline()
            with trio.CancelScope(deadline=math.inf if deadline is None else deadline) as scope:
                self.read_scope = scope
                data = await self.stream.receive_some(READ_SIZE)
                conn.receive_data(data, trio.current_time())
            self.read_scope = None
            # Also after data: a steady trickle of noise must not hold off the timeouts.
            conn.tick(trio.current_time())
            await self._write(conn.data_to_send())
            if await self._drain():
                return

    async def _drain(self) -> bool:
        """Handle the protocol's events; True once the stream has ended."""
        name, metrics = self.name, self.metrics
        while (event := self.conn.next_event()) is not NEED_DATA:
            if isinstance(event, Message):
                metrics.frames.labels(name, "in").inc()
                try:
                    self.requests_in.send_nowait(event.body)
                except trio.WouldBlock:
                    log.warning("ecr %s: %d requests already waiting, dropping one unanswered",
                                name, MAX_WAITING)
                    metrics.rejects.labels(name, "overload").inc()
            elif isinstance(event, (Nak, AckTimeout)):
                if event.resent:
                    metrics.frames.labels(name, "out").inc()
                    metrics.retransmits.labels(name).inc()
            elif isinstance(event, LinkError):
                metrics.link_errors.labels(name).inc()
                log.warning("ecr %s: response to %r given up after %d sends (%s)", name,
                            event.body.get("re"), event.attempts, event.reason)
            elif isinstance(event, FrameRejected):
                metrics.rejects.labels(name, event.reason).inc()
                log.info("ecr %s: frame discarded (%s)", name, event.reason)
            elif isinstance(event, GarbageSkipped):
                metrics.garbage.labels(name).inc(event.count)
            elif isinstance(event, ConnectionClosed):
                return True
            elif isinstance(event, Ack):
                pass
        return False

    async def _respond(self) -> None:
        async for body in self.requests_out:
            answer = await self._answer(body)
            result = "ok" if answer.get("ok") else str(answer.get("err", "error"))
            self.metrics.responses.labels(self.name, result).inc()
            try:
                out = self.conn.send(Message(answer), trio.current_time())
            except EcrProtocolError as exc:
                log.error("ecr %s: response to %r cannot be framed (%s); sending its summary",
                          self.name, answer.get("re"), exc)
                out = self.conn.send(Message(_summary(answer)), trio.current_time())
            self.metrics.frames.labels(self.name, "out").inc()
            if self.read_scope is not None:
                # The reader sleeps until the old deadline; the ACK wait starts now.
                deadline = self.conn.next_deadline()
                if deadline is not None:
                    self.read_scope.deadline = min(self.read_scope.deadline, deadline)
            await self._write(out)

    async def _answer(self, body: dict) -> dict:
        kind = body.get("t")
        rid = body.get("id")
        if kind not in REQUEST_TYPES:
            self.metrics.rejects.labels(self.name, "bad_request").inc()
            what = "has no type `t`" if kind is None else f"has the unknown type {kind!r}"
            return {"t": "res", "re": rid if isinstance(rid, str) else None, "ok": False,
                    "err": BAD_REQUEST,
                    "msg": f"the request {what}; expected one of {', '.join(REQUEST_TYPES)}"}
        problem = id_problem(body)
        if problem:
            self.metrics.rejects.labels(self.name, "bad_request").inc()
            return {"t": "res", "re": rid if isinstance(rid, str) else None, "ok": False,
                    "err": BAD_REQUEST, "msg": problem}
        try:
            response = await self.submit(Request(kind=kind, body=body, source=self.name,
                                                  channel="ecr"))
        except Exception:
            # Safe to ask the terminal to retry: ids make a repeated sale apply once.
            log.exception("ecr %s: the core failed on request %r", self.name, rid)
            return {"t": "res", "re": rid, "ok": False, "err": UNAVAILABLE,
                    "msg": "the gateway cannot answer now; retry later with the same id"}
        answer = dict(response.body)
        answer.setdefault("t", "res")
        answer.setdefault("re", rid)
        if not answer.get("ok"):
            log.info("ecr %s: request %r refused: %s %s", self.name, rid, answer.get("err"),
                     answer.get("msg"))
        return answer

    async def _write(self, data: bytes) -> None:
        if data:
            async with self.write_lock:
                await self.stream.send_all(data)


def _summary(answer: dict) -> dict:
    keep = ("t", "re", "ok", "err", "msg", "seq", "total_cents", "refund_cents")
    return {k: answer[k] for k in keep if k in answer}
