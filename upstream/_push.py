"""Optional push mode: POST each sealed envelope to the ERP, in order; a 2xx answer acknowledges it.

The cursor is the acknowledgement itself (batch `acked + 1` is the next to push), so pulls and
pushes can be mixed and a restart resumes exactly where the ERP stands. The HTTP client is the
standard library's, run in a worker thread.
"""
from __future__ import annotations

import logging
import urllib.error
import urllib.request
from typing import Callable

import trio

from core_ext import Request, u64

from ._sealer import ACKED, SealSignal, Settings, read_head
from ._sources import PUSH

log = logging.getLogger("gateway.upstream.push")


def post_envelope(url: str, raw: bytes, *, token: str = "", timeout: float = 10.0, context=None) -> int:
    """POST one envelope; returns the HTTP status (0 when no answer came)."""
    headers = {"Content-Type": "application/msgpack"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=raw, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError) as exc:
        log.info("push to %s got no answer: %s", url, exc)
        return 0


def backoff_s(failures: int, base: float, cap: float) -> float:
    """Seconds to wait after `failures` consecutive failures: doubling from `base`, at most `cap`."""
    return min(cap, base * 2 ** min(max(failures - 1, 0), 62))


def next_to_push(store) -> tuple[int, bytes | None]:
    """(seq, envelope bytes) of the first unacknowledged batch, or (seq, None) when all are."""
    with store.read() as tx:
        acked = tx.meta(ACKED, 0)
        if acked >= read_head(tx).seq:
            return acked + 1, None
        return acked + 1, tx.get_raw("batches", u64(acked + 1))


async def run_push(submit, store, config, signal: SealSignal, metrics=None, *,
                   post: Callable[..., int] = post_envelope, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Push every unacknowledged batch to `push_url` in order, forever, with capped backoff."""
    settings = Settings.from_config(config)
    task_status.started()
    failures = 0
    while True:
        waiter = signal.waiter()
        seq, raw = next_to_push(store)
        if raw is None:
            await waiter.wait()
            continue
        status = await trio.to_thread.run_sync(
            lambda: post(settings.push_url, raw, token=settings.push_token), abandon_on_cancel=True)
        if 200 <= status < 300:
            failures = 0
            answer = await submit(Request("ack", {"through": seq}, source=PUSH, channel="erp"))
            if not answer.ok:
                log.warning("acknowledging pushed batch %d refused: %s", seq, answer.body.get("msg"))
                await trio.sleep(settings.push_backoff_s)
            continue
        failures += 1
        if metrics is not None:
            metrics.push_failures.inc()
        delay = backoff_s(failures, settings.push_backoff_s, settings.push_backoff_max_s)
        log.warning("push of batch %d failed (status %s); retrying in %.1f s", seq, status or "none", delay)
        await trio.sleep(delay)
