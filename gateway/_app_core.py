"""Assembling the core loop: every handler of core_ext, plus those the caller brings (upstream's)."""
from __future__ import annotations

import time

from prometheus_client import CollectorRegistry

from core_ext import HANDLERS, Settings, Store
from core_ext._days import roll_due
from core_ext._handlers import DECIDES_FIRST, ECR_KINDS
from ._core_loop import CoreLoop, Handler
from ._core_metrics import CoreMetrics


def build_core(store: Store, settings: Settings, *, extra_handlers: dict | None = None,
               registry: CollectorRegistry | None = None, clock=time.time, disk_pressure=None,
               **options) -> CoreLoop:
    """The core loop over `store` with every handler; `options` go to `CoreLoop` (group limits)."""
    handlers = {kind: Handler(fn, idempotent=idem, requires_id=kind in ECR_KINDS, decides_first=kind in DECIDES_FIRST)
                for kind, (fn, idem) in HANDLERS.items()}
    for kind, fn in (extra_handlers or {}).items():
        handlers[kind] = fn if isinstance(fn, Handler) else Handler(fn)
    metrics = CoreMetrics(registry) if registry is not None else None
    options.setdefault("before_group", roll_due)
    return CoreLoop(store, handlers, settings=settings, clock=clock, metrics=metrics, disk_pressure=disk_pressure,
                    **options)
