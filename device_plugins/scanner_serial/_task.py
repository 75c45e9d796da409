"""The trio task for one serial scanner: read scans, submit them with the scanner's role."""
from __future__ import annotations

import logging
import math
import time

import trio

from core_ext import RateLimitedLog, Request

from .._serial_port import serve_port
from ._events import NEED_DATA, ConnectionClosed, Rejected, Scanned
from ._protocol import ScannerConnection

log = logging.getLogger("gateway.scanner")

ROLES = ("receive", "count", "lane")
READ_SIZE = 1024
# A bad scan or a refusal is logged once, then summarised at most once a minute per device and kind:
# a scanner stuck on one code must not fill the disk.
LOG_INTERVAL_S = 60.0


async def serve(device: dict, submit, metrics, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve the scanner `device` until cancelled, reopening its port whenever it goes away."""
    scanner = _Scanner(device, submit, metrics)
    await serve_port(device, scanner.run_link, metrics.connected.labels(scanner.name), scanner.logs,
                     task_status=task_status)


class _Scanner:
    """One scanner: what lasts across reconnects (its scan ids, its log) and what one open port does."""

    def __init__(self, device: dict, submit, metrics):
        self.name = device["name"]
        self.role = device.get("role", "receive")
        if self.role not in ROLES:
            raise ValueError(f"scanner {self.name!r}: role must be one of {', '.join(ROLES)}, not {self.role!r}")
        self.terminator = device.get("terminator", "any")
        ScannerConnection(terminator=self.terminator)  # a bad terminator fails here, at start
        self.lane = str(device.get("lane", ""))
        self.submit = submit
        self.metrics = metrics
        # Scan ids must never repeat, across reconnects and restarts: the start time plus a counter.
        self._boot_ms = int(time.time() * 1000)
        self._counter = iter(range(1, 1 << 62))
        self.logs = RateLimitedLog(log, LOG_INTERVAL_S, trio.current_time,
                                   on_suppressed=metrics.log_suppressed.labels(self.name).inc)

    async def run_link(self, stream: trio.abc.Stream) -> None:
        try:
            await self._read(stream)
        finally:
            self.logs.flush()

    async def _read(self, stream: trio.abc.Stream) -> None:
        conn = ScannerConnection(terminator=self.terminator)
        while True:
            due = [d for d in (conn.next_deadline(), self.logs.next_due()) if d is not None]
            with trio.CancelScope(deadline=min(due) if due else math.inf):
                data = await stream.receive_some(READ_SIZE)
                conn.receive_data(data, trio.current_time())
            conn.tick(trio.current_time())
            self.logs.flush_due()
            while (event := conn.next_event()) is not NEED_DATA:
                if isinstance(event, ConnectionClosed):
                    return
                await self._handle(event)

    async def _handle(self, event) -> None:
        if isinstance(event, Scanned):
            await self._submit(event.scan, f"{self._boot_ms}-{next(self._counter)}")
        elif isinstance(event, Rejected):
            self.metrics.rejects.labels(self.name, event.code).inc()
            self.logs.warning(("rejected", event.code), "scanner %s: scan %r rejected: %s",
                              self.name, event.raw, event.reason)

    async def _submit(self, scan, scan_id: str) -> None:
        name = self.name
        self.metrics.scans.labels(name).inc()
        body = {"id": scan_id, "role": self.role, "lane": self.lane, "code": scan.raw,
                "gtin": scan.gtin, "hibc": scan.hibc, "lot": scan.lot, "expiry": scan.expiry,
                "serial": scan.serial, "quantity": scan.quantity}
        try:
            response = await self.submit(Request(kind="scan", body=body, source=name, channel="scanner"))
        except Exception:
            self.logs.error("core_failed", "scanner %s: the core failed on scan %r", name, scan.raw,
                            exc_info=True)
            self.metrics.refused.labels(name, "UNAVAILABLE").inc()
            return
        if not response.body.get("ok"):
            err = str(response.body.get("err", "error"))
            self.metrics.refused.labels(name, err).inc()
            self.logs.warning(("refused", err), "scanner %s: scan %r refused: %s %s", name, scan.raw,
                              err, response.body.get("msg"))
