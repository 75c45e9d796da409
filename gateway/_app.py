"""The gateway process: one store, one core loop, and every listener and device task around it."""
from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import os
import signal
import socket
import time

import trio
from prometheus_client import CollectorRegistry

import upstream
from core_ext import GatewayError, Request, Settings, Store, StoreError, freeze_loaded_state, load_writer_state
from upstream._handlers import read_next_activation

from ._app_core import build_core
from ._config import Config, ConfigError, load_config, secret_file_problems
from ._day_metrics import DayCollector
from ._day_timer import TIMER_SOURCE, run_day_closer
from ._http import serve_asgi
from ._reload import Reload, needs_restart, token_changes
from ._metrics import EdgeMetrics, LedgerCollector, make_app as make_metrics_app, make_registry
from ._status import UpstreamSeen, snapshot
from ._status_page import PATHS as STATUS_PATHS, make_handler as make_status_page

log = logging.getLogger("gateway")

ALERT_REFRESH_S = 3600.0  # expiry windows move with the calendar even when no stock moves


class StartError(GatewayError):
    """The gateway could not start: `key` is the configuration key at fault, `problem` says why."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


def _leaves(exc: BaseException):
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _start_error(exc: BaseException) -> StartError | None:
    """The StartError `exc` carries, when it is nothing else (nurseries wrap it in groups)."""
    leaves = list(_leaves(exc))
    return leaves[0] if len(leaves) == 1 and isinstance(leaves[0], StartError) else None


class Gateway:
    """Everything one `gateway run` holds; `run()` serves until cancelled."""

    def __init__(self, config: Config, *, registry: CollectorRegistry | None = None, freeze_state: bool = False):
        self.config = config
        # A process of its own (`gateway run`) freezes what it loaded out of the collector's way; a
        # gateway inside a test session must not freeze the session's objects with it.
        self.freeze_state = freeze_state
        self.registry = registry or make_registry()
        self.store: Store | None = None
        self.core = None
        self.urls: dict[str, list[str]] = {}
        self.device_tasks: dict[str, str] = {}
        self.erp_key_present = False
        self.started = False  # every listener and device task is up
        self._device_metrics: dict = {}  # one metrics family per device kind; the device name is a label
        self.upstream_seen = UpstreamSeen()
        self.started_ms: int | None = None
        self.pos_app = None   # the POS/1 and UP/1 apps, whose tokens a reload swaps
        self.up_app = None
        self._reloaded = trio.Event()

    def reload_waiter(self) -> trio.Event:
        """Set when the next reload is done (take it before sending SIGHUP)."""
        return self._reloaded

    async def reload(self) -> Reload:
        """Read the configuration file again; take the new tokens, say what needs a restart."""
        path = self.config.path
        try:
            if path is None:
                raise ConfigError([("--config", "the embedded default has no file to read again")])
            new = await trio.to_thread.run_sync(load_config, path)
        except ConfigError as exc:
            result = Reload(problems=tuple(exc.problems))
        else:
            result = self._apply(new)
        result.log(path or "the embedded default")
        self._reloaded.set()
        self._reloaded = trio.Event()
        return result

    def _apply(self, new: Config) -> Reload:
        old = self.config
        terminals = token_changes(old.pos_api.tokens, new.pos_api.tokens)
        erp_changed = bool(token_changes({"erp": old.upstream.token}, {"erp": new.upstream.token}))
        if self.pos_app is not None:
            self.pos_app.tokens.replace(new.pos_api.tokens)
        if self.up_app is not None:
            self.up_app.tokens.replace({"erp": new.upstream.token})
        restart = tuple(needs_restart(old, new))
        # Only the tokens are taken; the rest stays as started until the restart the log asks for.
        self.config = dataclasses.replace(
            old, pos_api=dataclasses.replace(old.pos_api, tokens=dict(new.pos_api.tokens)),
            upstream=dataclasses.replace(old.upstream, token=new.upstream.token))
        return Reload(terminals=terminals, erp_token_changed=erp_changed, restart_needed=restart)

    def status(self, now_ms: int | None = None) -> dict:
        """The status page's snapshot, read through an LMDB reader (blocking: call it off the loop)."""
        store = self.store
        if store is None:
            raise StoreError("the store is not open")
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        return snapshot(store, store_id=self.config.store.id, timezone=self.config.store.timezone, now_ms=now_ms,
                        started_ms=self.started_ms, devices=dict(self.device_tasks),
                        terminals=sorted(self.config.pos_api.tokens), registry=self.registry, seen=self.upstream_seen)

    def _status_pages(self, edge) -> dict:
        handle = make_status_page(self.config.metrics.page_token, self.status, count=edge)
        return {path: handle for path in STATUS_PATHS}

    def _read(self):
        # None while the store is closed: the metrics collector then reports it closed.
        return None if self.store is None else self.store.read()

    def health(self):
        running = self.core is not None and self.core.running
        return running, {"core_loop": "running" if running else "stopped"}

    def ready(self):
        # Ready only once every listener is bound: a probe that passes must mean POS/1 answers.
        running = self.store is not None and self.core is not None and self.core.running
        return running and self.started, {
                    "store": "open" if self.store is not None else "closed",
                    "core_loop": "running" if running else "not started",
                    "listeners": self.urls, "started": self.started,
                    "erp_public_key": "present" if self.erp_key_present else "absent: master data is refused"}

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; `task_status.started(self)` once every listener and device is up.

        Raises StartError (alone, not in a group) naming the configuration key at fault when a key
        cannot be used, the data directory cannot be opened or a listener cannot be bound.
        """
        try:
            await self._run(task_status)
        except BaseExceptionGroup as group:
            error = _start_error(group)
            if error is None:
                raise
            raise error from error.__cause__

    async def _run(self, task_status) -> None:
        cfg = self.config
        signing_key, erp_key = self._load_keys()
        self._open_store()
        try:
            seal_signal = upstream.SealSignal()
            up_metrics = upstream.Metrics(self.registry, self.store, settings=cfg.upstream)
            self.core = self._build_core(signing_key, erp_key, seal_signal)
            self.registry.register(LedgerCollector(self._read))
            self.registry.register(DayCollector(self._read))
            edge = EdgeMetrics(self.registry)
            await trio.to_thread.run_sync(load_writer_state, self.store)
            if self.freeze_state:
                freeze_loaded_state()
            async with trio.open_nursery() as nursery:
                await nursery.start(self.core.run)
                submit = self.core.submit
                self.started_ms = int(time.time() * 1000)
                # Days missed while stopped are closed before any device or API is heard.
                await nursery.start(run_day_closer, submit)
                self.urls["metrics"] = await _listen(nursery, "metrics.listen", make_metrics_app(
                    self.registry, self.health, self.ready, edge=edge.counter("metrics"),
                    pages=self._status_pages(edge.counter("metrics"))), cfg.metrics.listen,
                    certfile=cfg.metrics.tls_cert, keyfile=cfg.metrics.tls_key)
                await self._serve_upstream(nursery, submit, signing_key, seal_signal, up_metrics,
                                           edge.counter("upstream"))
                await self._serve_pos_api(nursery, submit, edge.counter("pos_api"))
                await self._start_devices(nursery, submit)
                nursery.start_soon(self._refresh_alerts, submit)
                log.info("gateway %s ready: %s", cfg.store.id,
                         ", ".join(f"{k} {' '.join(v)}" for k, v in self.urls.items()))
                self.started = True
                task_status.started(self)
        finally:
            self.started = False
            store, self.store = self.store, None
            store.close()

    def _load_keys(self):
        """(the store's signing key, the ERP's public key or None). The keys come first: a key that
        cannot be used must stop the start before the store is touched. One that other users may
        read is refused too: it may already have been copied."""
        cfg = self.config
        for key, problem in secret_file_problems(cfg):
            raise StartError(key, problem)
        try:
            signing_key = upstream.load_private_key(cfg.keys.signing_key)
        except upstream.KeyFileError as exc:
            raise StartError("keys.signing_key", str(exc)) from exc
        # Without the ERP's key the gateway still sells; master documents are refused (403).
        erp_key = None
        if os.path.exists(cfg.keys.erp_public_key):
            try:
                erp_key = upstream.load_public_key(cfg.keys.erp_public_key)
            except upstream.KeyFileError as exc:
                raise StartError("keys.erp_public_key", str(exc)) from exc
        self.erp_key_present = erp_key is not None
        return signing_key, erp_key

    def _open_store(self) -> None:
        try:
            self.store = Store(self.config.store.data_dir)
        except (StoreError, OSError) as exc:  # OSError: the directory cannot even be made
            raise StartError("store.data_dir", str(exc)) from exc

    def _build_core(self, signing_key, erp_key, seal_signal):
        """The core loop with every handler: the core's own, the upstream's, the NATS link's."""
        cfg = self.config
        handlers = upstream.make_handlers(store_id=cfg.store.id, signing_key=signing_key, erp_public_key=erp_key,
                                          config=cfg.upstream, signal=seal_signal)
        if cfg.nats.enabled:
            from upstream._nats_link import make_nats_handlers
            handlers.update(make_nats_handlers(trust_stream=cfg.nats.trust_stream))
        return build_core(self.store, Settings(store_id=cfg.store.id, timezone=cfg.store.timezone,
                                               day_starts_at=cfg.store.day_starts_at),
                          extra_handlers=handlers, registry=self.registry,
                          disk_pressure=lambda: upstream.disk_pressure(self.store))

    async def _serve_upstream(self, nursery, submit, signing_key, seal_signal, up_metrics, edge) -> None:
        """UP/1 on its listener, and the upstream's tasks: the sealer, master-data activation, the
        push client and the NATS link when configured."""
        cfg = self.config
        up_settings = upstream.Settings.from_config(cfg.upstream)
        self.up_app = upstream.make_app(submit, self._read, cfg.upstream, up_metrics, store_id=cfg.store.id,
                                        public_key=signing_key, signal=seal_signal, edge=edge)
        self.urls["upstream"] = await _listen(nursery, "upstream.listen", self.upstream_seen.watch(self.up_app),
                                              cfg.upstream.listen,
                                              certfile=cfg.upstream.tls_cert, keyfile=cfg.upstream.tls_key,
                                              client_ca=cfg.upstream.tls_client_ca)
        await nursery.start(lambda task_status: upstream.run_sealer(
            submit, upstream.BacklogReader(self.store, up_settings), self.core.wait_commit,
            metrics=up_metrics, prune_interval_s=up_settings.prune_interval_s,
            pressure=lambda: upstream.disk_pressure(self.store), task_status=task_status))
        await nursery.start(lambda task_status: upstream.run_master_activation(
            submit, lambda: read_next_activation(self.store), seal_signal, task_status=task_status))
        if cfg.upstream.push_url:
            await nursery.start(lambda task_status: upstream.run_push(
                submit, self.store, cfg.upstream, seal_signal, up_metrics, task_status=task_status))
        if cfg.nats.enabled:
            from upstream._nats_link import run_link
            await nursery.start(functools.partial(
                run_link, store_id=cfg.store.id, store=self.store, submit=submit, signal=seal_signal,
                config=cfg.nats, registry=self.registry))

    async def _serve_pos_api(self, nursery, submit, edge) -> None:
        from device_plugins import pos_api
        cfg = self.config
        self.pos_app = pos_api.make_app(submit, dict(cfg.pos_api.tokens), pos_api.Metrics(self.registry), edge=edge,
                                        client_certs=bool(cfg.pos_api.tls_client_ca))
        self.urls["pos_api"] = await _listen(nursery, "pos_api.listen", self.pos_app, cfg.pos_api.listen,
                                             certfile=cfg.pos_api.tls_cert, keyfile=cfg.pos_api.tls_key,
                                             client_ca=cfg.pos_api.tls_client_ca)

    async def _start_devices(self, nursery, submit) -> None:
        for i, device in enumerate(self.config.devices):
            try:
                await self._start_device(nursery, device, submit)
            except Exception as exc:  # groups too; a cancellation is not an Exception
                leaf = next(_leaves(exc))
                raise StartError(f"devices[{i}]", f"the {device['kind']} device {device['name']!r} "
                                                  f"cannot start: {leaf}") from leaf

    async def _start_device(self, nursery, device: dict, submit) -> None:
        plugin = importlib.import_module(f"device_plugins.{device['kind']}")
        metrics = self._device_metrics.get(device["kind"])
        if metrics is None:
            metrics = self._device_metrics[device["kind"]] = plugin.Metrics(self.registry)
        await nursery.start(plugin.serve, device, submit, metrics)
        self.device_tasks[device["name"]] = device["kind"]

    async def _refresh_alerts(self, submit) -> None:
        while True:
            await submit(Request("alerts_refresh", {}, source=TIMER_SOURCE))
            await trio.sleep(ALERT_REFRESH_S)


def _bind(key: str, listen: str) -> socket.socket:
    """A listening TCP socket on `listen` ("host:port", IPv6 in brackets), as hypercorn would make it.

    Bound here rather than by hypercorn so that a port already taken is a StartError naming `key`,
    and the socket that failed to bind is closed at once instead of left for the collector.
    """
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise StartError(key, f"cannot listen on {listen}: {exc.strerror or exc}") from exc
    return sock


async def _listen(nursery, key: str, app, listen: str, **tls) -> list[str]:
    """Serve `app` on `listen`; returns the bound URLs (port 0 becomes the port the system chose)."""
    # hypercorn's listener owns the descriptor from here on. Not closed here if the start fails: by
    # then hypercorn may have closed it and the number may already name another file.
    fd = _bind(key, listen).detach()
    return await nursery.start(functools.partial(serve_asgi, app, f"fd://{fd}", **tls))


async def _start_and_announce(nursery, gateway: Gateway, task_status) -> None:
    await nursery.start(gateway.run)
    task_status.started(gateway)


async def run_until_signal(config: Config, *, freeze_state: bool = False,
                           task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve until SIGTERM or SIGINT, then stop cleanly (what is committed stays committed); on
    SIGHUP reload the tokens from the file (`gateway._reload`). `task_status.started(gateway)` once
    every listener is up.

    Raises StartError (alone, not in a group) when the gateway cannot start.
    """
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:
                gateway = Gateway(config, freeze_state=freeze_state)
                # Started beside the signal loop, so a SIGTERM during a slow start still stops it.
                nursery.start_soon(_start_and_announce, nursery, gateway, task_status)
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        if gateway.started:
                            await gateway.reload()
                        else:
                            log.warning("SIGHUP before the gateway started: nothing reloaded")
                        continue
                    log.info("%s received: stopping", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    break
    except BaseExceptionGroup as group:
        error = _start_error(group)
        if error is None:
            raise
        raise error from error.__cause__
