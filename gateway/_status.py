"""The store's status: one snapshot read through an LMDB reader, for the status page and the
inspection commands (`gateway status`, `gateway alerts`).

The snapshot never holds a token, a key or a member's personal data: the page is shown on phones.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from importlib import metadata

import core_ext
from upstream._sealer import ACKED, HEAD

# Events read backwards to find each device's last activity.
ACTIVITY_SCAN = 20_000


def version() -> str:
    try:
        return metadata.version("store-gateway")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class UpstreamSeen:
    """When the ERP last pulled batches and last acknowledged them (this process only: a pull
    writes nothing to the store). The upstream app is wrapped by `watch`."""

    last_pull_ms: int | None = None
    last_ack_ms: int | None = None
    clock: object = field(default=time.time)

    def watch(self, app):
        """`app`, noting each answered GET .../batches and POST .../ack."""
        async def watched(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            path, method = scope.get("path", ""), scope.get("method", "")
            route = "pull" if method == "GET" and path.endswith("/batches") else (
                "ack" if method == "POST" and path.endswith("/ack") else None)

            async def noting(message):
                if route and message["type"] == "http.response.start" and 200 <= message["status"] < 300:
                    setattr(self, f"last_{route}_ms", int(self.clock() * 1000))
                await send(message)
            return await app(scope, receive, noting)
        return watched


def batches(tx, seen: UpstreamSeen | None) -> dict:
    """The batch chain as the store knows it: sealed, acknowledged, waiting to be sealed."""
    head = tx.meta(HEAD) or {}
    acked = tx.meta(ACKED, 0)
    sealed = head.get("seq", 0)
    return {"sealed": sealed, "acked": acked, "unacked_batches": max(0, sealed - acked),
            "backlog_events": max(0, tx.last_seq() - head.get("last_event", 0)),
            "last_sealed_ms": head.get("created_ms"),
            "last_pull_ms": seen.last_pull_ms if seen else None,
            "last_ack_ms": seen.last_ack_ms if seen else None}


def last_activity(tx, names) -> dict:
    """Each name's newest event time (a device or terminal is an event's `source`)."""
    wanted = set(names)
    found: dict = {}
    for event in core_ext.events_backwards(tx, ACTIVITY_SCAN):
        # Receipts and counts name their device only in their id ("<device>:<id>").
        source = event.get("source") or str(event.get("id") or "").partition(":")[0]
        if source in wanted and source not in found:
            found[source] = event.get("ts_ms")
            if len(found) == len(wanted):
                break
    return found


def device_rows(tx, devices: dict, terminals, registry) -> list[dict]:
    """Each configured device and POS/1 terminal: its state and when it last did something."""
    seen = last_activity(tx, [*devices, *terminals])
    rows = []
    for name, kind in devices.items():
        rows.append({"name": name, "kind": kind, "state": _state(registry, name, kind),
                     "last_activity_ms": seen.get(name)})
    for name in terminals:
        rows.append({"name": name, "kind": "pos_api", "state": "token configured", "last_activity_ms": seen.get(name)})
    return rows


_CONNECTED = {"ecr_serial": "gateway_ecr_connected", "scanner_serial": "gateway_scanner_connected"}


def _state(registry, name: str, kind: str) -> str:
    metric = _CONNECTED.get(kind)
    if metric is None or registry is None:
        return "watching" if kind == "csv_drop" else "running"
    value = registry.get_sample_value(metric, {"device": name})
    return "connected" if value == 1 else "disconnected"


def snapshot(store, *, store_id: str, timezone: str, now_ms: int, started_ms: int | None = None,
             devices: dict | None = None, terminals=(), registry=None, seen: UpstreamSeen | None = None) -> dict:
    """Everything the page shows, read in one read transaction (a consistent moment)."""
    with store.read() as tx:
        return {
            "store": {"id": store_id, "timezone": timezone, "version": version(), "now_ms": now_ms,
                      "started_ms": started_ms,
                      "uptime_s": None if started_ms is None else max(0, (now_ms - started_ms) // 1000)},
            "ledger": core_ext.ledger_head(tx),
            "devices": device_rows(tx, devices or {}, terminals, registry),
            "sales": core_ext.day_sales(tx, now_ms, timezone),
            "alerts": core_ext.stock_alerts(tx),
            "batches": batches(tx, seen),
            "master": core_ext.master_versions(tx),
            "refusals": core_ext.latest_refusals(tx),
        }
