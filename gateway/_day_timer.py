"""The business day's timer: asks the single writer to close each day when it ends.

It never writes: it submits a `day_close` request, which closes every day that has ended (so the
first request after a start catches up on days missed while stopped, each once, in order) and
answers when the open day ends. Between requests it sleeps until then, at most `max_sleep_s` at a
time so that a wall clock set forward is noticed soon.
"""
from __future__ import annotations

import logging
import time

import trio

from core_ext import Request

log = logging.getLogger("gateway.days")

RETRY_S = 5.0        # after a refused close (the store could not be written)
MIN_SLEEP_S = 0.01   # the writer's clock is read in whole milliseconds
TIMER_SOURCE = "timer"  # of the gateway's timed requests (the day's close, the alerts' refresh)


async def run_day_closer(submit, clock=time.time, *, max_sleep_s: float = 60.0,
                         task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Close business days as they end; `task_status.started()` once the days missed are closed."""
    started = False
    while True:
        response = await submit(Request("day_close", {}, source=TIMER_SOURCE))
        if response.ok:
            for day in response.body.get("closed", ()):
                log.info("business day %s closed", day)
            delay = response.body["open_until_ms"] / 1000 - clock()
        else:
            log.warning("closing the business day was refused: %s", response.body.get("msg"))
            delay = RETRY_S
        if not started:
            started = True
            task_status.started()
        await trio.sleep(min(max(delay, MIN_SLEEP_S), max_sleep_s))
