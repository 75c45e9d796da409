"""`gateway demo`: a living store on one machine, in a folder of its own.

The real gateway (`gateway._app.Gateway`) with its real device plugins and listeners, driven the way
a store is driven: two ECR/1 lanes and a receiving scanner on pseudo-terminals, a legacy POS dropping
CSV files, and a demo ERP on UP/1. The folder (`demo/` by default) is made on first start and kept
between runs: its store, keys, tokens and the ERP's place in the chain.
"""
from __future__ import annotations

import datetime
import logging
import os
import random
import secrets
import shutil
import signal
import sys
import time

import serial
import trio

import upstream
from core_ext import stock_alerts
from gateway._app import Gateway
from gateway._cmd_config import ensure_signing_key
from gateway._config import load_config

from ._actors import Lane, Tally, blocking, legacy_pos, receiving
from ._data import build
from ._erp import DemoErp
from ._summary import Screen, summary_lines
from ._terminal import Cable, Terminal

LANES = ("lane1", "lane2")
SCANNER = "receiving"
LEGACY = "legacy-pos"
CONFIG = """\
# The demo store's configuration, written by `gateway demo` on first start (kept between runs).
[store]
id = "DEMO1"
data_dir = "data"
timezone = "{timezone}"

[keys]
signing_key = "keys/store.pem"
erp_public_key = "keys/erp.pub.pem"

[pos_api]
listen = "{host}:{pos}"
[pos_api.tokens]
tablet1 = "{tablet_token}"

[upstream]
listen = "{host}:{up}"
token = "{erp_token}"
batch_max_age_s = 2.0

[metrics]
listen = "{host}:{metrics}"
page_token = "{page_token}"

[[devices]]
name = "lane1"
kind = "ecr_serial"
port = "{tty}/lane1"

[[devices]]
name = "lane2"
kind = "ecr_serial"
port = "{tty}/lane2"

[[devices]]
name = "receiving"
kind = "scanner_serial"
port = "{tty}/receiving"
role = "receive"

[[devices]]
name = "legacy-pos"
kind = "csv_drop"
dir = "drop/legacy"
settle_s = 0.5
[devices.columns]
id = "TicketNo"
code = "ItemCode"
qty = "Qty"
lot = "Lot"
expiry = "Expiry"
"""


def prepare_folder(folder: str, *, fresh: bool, ports: tuple[int, int, int], host: str = "127.0.0.1",
                   timezone: str = "Asia/Shanghai") -> str:
    """The demo folder with its configuration, keys and device paths; returns the configuration's path."""
    if fresh and os.path.isdir(folder):
        shutil.rmtree(folder)
    for sub in ("keys", "erp", "tty", "drop/legacy"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    path = os.path.join(folder, "gateway.toml")
    pos, up, metrics = ports
    # The tokens are made once; the ports follow the command line each run.
    tokens = _kept_tokens(path)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(CONFIG.format(tty=os.path.abspath(os.path.join(folder, "tty")), host=host, pos=pos, up=up, metrics=metrics, timezone=timezone, **tokens))
    os.replace(path + ".tmp", path)
    for name in ("store", "erp"):
        key = os.path.join(folder, "keys" if name == "store" else "erp", f"{name}.pem")
        if not os.path.exists(key):
            upstream.write_keypair(key, key[:-4] + ".pub.pem")
    shutil.copyfile(os.path.join(folder, "erp", "erp.pub.pem"), os.path.join(folder, "keys", "erp.pub.pem"))
    return path


def _kept_tokens(path: str) -> dict:
    names = ("tablet_token", "erp_token", "page_token")
    try:
        import tomllib
        with open(path, "rb") as f:
            doc = tomllib.load(f)
        return {"tablet_token": doc["pos_api"]["tokens"]["tablet1"], "erp_token": doc["upstream"]["token"],
                "page_token": doc["metrics"]["page_token"]}
    except (OSError, KeyError, ValueError):
        return {name: secrets.token_urlsafe(18) for name in names}


def banner(gateway: Gateway, config) -> list[str]:
    """The addresses to try, with the demo's tokens (the demo's own, made for this folder)."""
    metrics, pos, up = gateway.urls["metrics"][0], gateway.urls["pos_api"][0], gateway.urls["upstream"][0]
    return [f"Demo store {config.store.id} is open; its folder: {os.path.dirname(config.path)}",
            f"  status page : {metrics}/status?token={config.metrics.page_token}",
            f"  metrics     : {metrics}/metrics",
            f"  POS/1       : {pos}/pos/v1/...   Authorization: Bearer {config.pos_api.tokens['tablet1']}",
            f"  UP/1 (ERP)  : {up}/upstream/v1/...   Authorization: Bearer {config.upstream.token}",
            "  Ctrl-C stops everything."]


async def run_demo(folder: str, *, fresh: bool = False, ports=(8600, 8700, 9600), for_s: float | None = None,
                   pace_s: float = 1.0, recall_after_s: float = 60.0, out=sys.stdout) -> Tally:
    config_path = prepare_folder(folder, fresh=fresh, ports=ports)
    config = load_config(config_path)
    ensure_signing_key(config.keys)
    data = build(datetime.date.today())
    tally = Tally()
    run_id = format(int(time.time()), "x")[-6:].upper()
    rng = random.Random()
    gateway = Gateway(config, freeze_state=True)  # a process of its own, like `gateway run`
    screen = Screen(out)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            cables = {name: Cable(os.path.join(folder, "tty", name)) for name in (*LANES, SCANNER)}
            for cable in cables.values():
                await cable.plug(nursery)
            opened: list = []  # terminals and the scanner's port, closed on the way out
            try:
                await nursery.start(gateway.run)
                erp = DemoErp(gateway.urls["upstream"][0], config.upstream.token,
                              upstream.load_private_key(os.path.join(folder, "erp", "erp.pem")),
                              upstream.load_public_key(config.keys.public_key),
                              os.path.join(folder, "erp", "state.json"), data, tally)
                erp.delivery_delay_s = 30 * pace_s
                await nursery.start(lambda task_status: erp.run(recall_after_s=recall_after_s,
                                                                pull_every_s=max(0.5, pace_s),
                                                                task_status=task_status))
                for line in banner(gateway, config):
                    print(line, file=out, flush=True)
                for name in LANES:
                    terminal = await blocking(Terminal, cables[name].terminal_path)
                    opened.append(terminal)
                    nursery.start_soon(Lane(name, terminal, data, tally, run_id=f"{name[-1]}{run_id}", pace_s=pace_s,
                                            rng=random.Random(rng.random())).run)
                port = await blocking(serial.Serial, cables[SCANNER].terminal_path, 115200)
                opened.append(port)
                nursery.start_soon(lambda: receiving(port, data, tally, run_id=run_id, pace_s=pace_s, rng=rng))
                nursery.start_soon(lambda: legacy_pos(os.path.join(folder, "drop", "legacy"), data, tally,
                                                      run_id=run_id, pace_s=pace_s, rng=rng))
                nursery.start_soon(_show, screen, gateway, tally)
                with trio.move_on_after(for_s if for_s is not None else float("inf")):
                    async for signum in signals:
                        print(f"\n{signal.Signals(signum).name} received: stopping the demo store", file=out)
                        break
                # A last look, then stop everything.
                screen.show(summary_lines(tally, _alerts(gateway)))
                screen.final()
                nursery.cancel_scope.cancel()
            finally:
                for port in opened:
                    port.close()
                with trio.CancelScope(shield=True):
                    for cable in cables.values():
                        await cable.aclose()
    return tally


def _alerts(gateway: Gateway) -> dict:
    if gateway.store is None:
        return {}
    with gateway.store.read() as tx:
        return stock_alerts(tx)


async def _show(screen, gateway: Gateway, tally: Tally) -> None:
    while True:
        screen.show(summary_lines(tally, await trio.to_thread.run_sync(_alerts, gateway)))
        await trio.sleep(1.0)


def log_to_file(folder: str) -> None:
    """The gateway's log goes to demo/gateway.log: the terminal shows the live summary."""
    os.makedirs(folder, exist_ok=True)
    logging.basicConfig(level=logging.INFO, filename=os.path.join(folder, "gateway.log"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
