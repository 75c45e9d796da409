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
    name = device["name"]
    role = device.get("role", "receive")
    if role not in ROLES:
        raise ValueError(f"scanner {name!r}: role must be one of {', '.join(ROLES)}, not {role!r}")
    terminator = device.get("terminator", "any")
    ScannerConnection(terminator=terminator)  # a bad terminator fails here, at start
    # Scan ids must never repeat, across reconnects and restarts: the start time plus a counter.
    boot_ms = int(time.time() * 1000)
    counter = iter(range(1, 1 << 62))
    logs = RateLimitedLog(log, LOG_INTERVAL_S, trio.current_time,
                          on_suppressed=metrics.log_suppressed.labels(name).inc)

    async def run_link(stream: trio.abc.Stream) -> None:
        try:
            await _read(stream)
        finally:
            logs.flush()

    async def _read(stream: trio.abc.Stream) -> None:
        conn = ScannerConnection(terminator=terminator)
        while True:
            due = [d for d in (conn.next_deadline(), logs.next_due()) if d is not None]
            with trio.CancelScope(deadline=min(due) if due else math.inf):
                data = await stream.receive_some(READ_SIZE)
                conn.receive_data(data, trio.current_time())
            conn.tick(trio.current_time())
            logs.flush_due()
            while (event := conn.next_event()) is not NEED_DATA:
                if isinstance(event, Scanned):
                    await _submit(event.scan, f"{boot_ms}-{next(counter)}")
                elif isinstance(event, Rejected):
                    metrics.rejects.labels(name, event.code).inc()
                    logs.warning(("rejected", event.code), "scanner %s: scan %r rejected: %s",
                                 name, event.raw, event.reason)
                elif isinstance(event, ConnectionClosed):
                    return

    async def _submit(scan, scan_id: str) -> None:
        metrics.scans.labels(name).inc()
        body = {"id": scan_id, "role": role, "lane": str(device.get("lane", "")), "code": scan.raw,
                "gtin": scan.gtin, "hibc": scan.hibc, "lot": scan.lot, "expiry": scan.expiry,
                "serial": scan.serial, "quantity": scan.quantity}
        try:
            response = await submit(Request(kind="scan", body=body, source=name, channel="scanner"))
        except Exception:
            logs.error("core_failed", "scanner %s: the core failed on scan %r", name, scan.raw,
                       exc_info=True)
            metrics.refused.labels(name, "UNAVAILABLE").inc()
            return
        if not response.body.get("ok"):
            err = str(response.body.get("err", "error"))
            metrics.refused.labels(name, err).inc()
            logs.warning(("refused", err), "scanner %s: scan %r refused: %s %s", name, scan.raw,
                         err, response.body.get("msg"))

    await serve_port(device, run_link, metrics.connected.labels(name), logs, task_status=task_status)
