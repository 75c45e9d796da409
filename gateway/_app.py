"""The gateway process: one store, one core loop, and every listener and device task around it."""
from __future__ import annotations

import importlib
import logging
import os
import signal

import trio
from prometheus_client import CollectorRegistry

import upstream
from core_ext import Request, Settings, Store
from upstream._handlers import read_next_activation

from ._app_core import build_core
from ._config import Config
from ._http import serve_asgi
from ._metrics import LedgerCollector, make_app as make_metrics_app, make_registry

log = logging.getLogger("gateway")

ALERT_REFRESH_S = 3600.0  # expiry windows move with the calendar even when no stock moves


class Gateway:
    """Everything one `gateway run` holds; `run()` serves until cancelled."""

    def __init__(self, config: Config, *, registry: CollectorRegistry | None = None):
        self.config = config
        self.registry = registry or make_registry()
        self.store: Store | None = None
        self.core = None
        self.urls: dict[str, list[str]] = {}
        self.device_tasks: dict[str, str] = {}
        self.erp_key_present = False
        self._device_metrics: dict = {}  # one metrics family per device kind; the device name is a label

    def _read(self):
        return self.store.read()

    def health(self):
        running = self.core is not None and self.core.running
        return running, {"core_loop": "running" if running else "stopped"}

    def ready(self):
        ok = self.store is not None and self.core is not None and self.core.running
        return ok, {"store": "open" if self.store is not None else "closed",
                    "core_loop": "running" if ok else "not started", "listeners": self.urls,
                    "erp_public_key": "present" if self.erp_key_present else "absent: master data is refused"}

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        self.store = Store(cfg.store.data_dir)
        try:
            signing_key = upstream.load_private_key(cfg.keys.signing_key)
            # Without the ERP's key the gateway still sells; master documents are refused (403).
            erp_key = None
            if os.path.exists(cfg.keys.erp_public_key):
                erp_key = upstream.load_public_key(cfg.keys.erp_public_key)
            self.erp_key_present = erp_key is not None
            seal_signal = upstream.SealSignal()
            up_metrics = upstream.Metrics(self.registry, self.store)
            handlers = upstream.make_handlers(store_id=cfg.store.id, signing_key=signing_key, erp_public_key=erp_key,
                                              config=cfg.upstream, signal=seal_signal)
            self.core = build_core(self.store, Settings(store_id=cfg.store.id, timezone=cfg.store.timezone),
                                   extra_handlers=handlers, registry=self.registry,
                                   disk_pressure=lambda: upstream.disk_pressure(self.store))
            self.registry.register(LedgerCollector(self._read))
            up_settings = upstream.Settings.from_config(cfg.upstream)
            async with trio.open_nursery() as nursery:
                await nursery.start(self.core.run)
                submit = self.core.submit
                self.urls["metrics"] = await nursery.start(serve_asgi, make_metrics_app(self.registry, self.health,
                                                                                        self.ready), cfg.metrics.listen)
                up_app = upstream.make_app(submit, self._read, cfg.upstream, up_metrics, store_id=cfg.store.id,
                                           public_key=signing_key, signal=seal_signal)
                self.urls["upstream"] = await nursery.start(
                    lambda task_status: serve_asgi(up_app, cfg.upstream.listen, certfile=cfg.upstream.tls_cert,
                                                   keyfile=cfg.upstream.tls_key, task_status=task_status))
                await nursery.start(lambda task_status: upstream.run_sealer(
                    submit, lambda: upstream.read_backlog(self.store, up_settings), self.core.wait_commit,
                    metrics=up_metrics, prune_interval_s=up_settings.prune_interval_s, task_status=task_status))
                await nursery.start(lambda task_status: upstream.run_master_activation(
                    submit, lambda: read_next_activation(self.store), seal_signal, task_status=task_status))
                if cfg.upstream.push_url:
                    await nursery.start(lambda task_status: upstream.run_push(
                        submit, self.store, cfg.upstream, seal_signal, up_metrics, task_status=task_status))
                from device_plugins import pos_api
                pos_app = pos_api.make_app(submit, dict(cfg.pos_api.tokens), pos_api.Metrics(self.registry))
                self.urls["pos_api"] = await nursery.start(serve_asgi, pos_app, cfg.pos_api.listen)
                for device in cfg.devices:
                    await self._start_device(nursery, device, submit)
                nursery.start_soon(self._refresh_alerts, submit)
                log.info("gateway %s ready: %s", cfg.store.id,
                         ", ".join(f"{k} {' '.join(v)}" for k, v in self.urls.items()))
                task_status.started(self)
        finally:
            self.store.close()
            self.store = None

    async def _start_device(self, nursery, device: dict, submit) -> None:
        plugin = importlib.import_module(f"device_plugins.{device['kind']}")
        metrics = self._device_metrics.get(device["kind"])
        if metrics is None:
            metrics = self._device_metrics[device["kind"]] = plugin.Metrics(self.registry)
        await nursery.start(plugin.serve, device, submit, metrics)
        self.device_tasks[device["name"]] = device["kind"]

    async def _refresh_alerts(self, submit) -> None:
        while True:
            await submit(Request("alerts_refresh", {}, source="timer"))
            await trio.sleep(ALERT_REFRESH_S)


async def run_until_signal(config: Config) -> None:
    """Serve until SIGTERM or SIGINT, then stop cleanly (what is committed stays committed)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            gateway = Gateway(config)
            nursery.start_soon(gateway.run)
            async for signum in signals:
                log.info("%s received: stopping", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
