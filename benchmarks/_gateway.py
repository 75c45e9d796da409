"""A real `gateway run` process for the benchmarks, reached only through its public faces: the
configuration file, POS/1, UP/1 (master data and movements pushed as the ERP pushes them), /readyz,
the csv_drop directory and serial ports. Its anonymous memory (RssAnon) is sampled while it runs.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from prometheus_client.parser import text_string_to_metric_families

from ._common import ROOT, say

ERP_TOKEN = "bench-erp-token"

CONFIG = """\
[store]
id = "BENCH"
data_dir = "{data}"
timezone = "UTC"

[keys]
signing_key = "{keys}/store.pem"
erp_public_key = "{keys}/erp.pub.pem"

[pos_api]
listen = "127.0.0.1:{pos}"
[pos_api.tokens]
{tokens}

[upstream]
listen = "127.0.0.1:{upstream}"
token = "{erp_token}"
batch_max_events = {batch_max_events}
batch_max_age_s = 1.0

[metrics]
listen = "127.0.0.1:{metrics}"
{devices}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_anon_mb(pid: int) -> float | None:
    """RssAnon of `pid` in MB (the heap and other private memory, not mapped files such as LMDB's)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class RssSampler:
    """Samples RssAnon of one process every `interval_s` in a thread and keeps the peak."""

    def __init__(self, pid: int, interval_s: float = 0.02):
        self.pid = pid
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            mb = rss_anon_mb(self.pid)
            if mb is not None:
                self.peak_mb = max(self.peak_mb, mb)
            self._stop.wait(self.interval_s)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_mb


class Gateway:
    """`gateway run --config FILE` in `root`, with its own keys and free loopback ports.

    Use as a context manager; `.started_s` is the time from process start to /readyz answering 200.
    """

    def __init__(self, ctx, root: str, *, label: str, data_dir: str | None = None, terminals=("lane1",),
                 devices: str = "", batch_max_events: int = 500, ready_timeout_s: float = 120.0):
        from upstream import write_keypair
        self.ctx = ctx
        self.label = label
        self.root = root
        self.keys = os.path.join(root, "keys")
        self.data = data_dir or os.path.join(root, "data")
        os.makedirs(self.keys, exist_ok=True)
        for name in ("store", "erp"):
            if not os.path.exists(os.path.join(self.keys, f"{name}.pem")):
                write_keypair(os.path.join(self.keys, f"{name}.pem"), os.path.join(self.keys, f"{name}.pub.pem"))
        self.ports = {k: free_port() for k in ("pos", "upstream", "metrics")}
        self.tokens = {t: f"token-{t}" for t in terminals}
        self.config = os.path.join(root, "gateway.toml")
        with open(self.config, "w") as f:
            f.write(CONFIG.format(data=self.data, keys=self.keys, erp_token=ERP_TOKEN, devices=devices,
                                  batch_max_events=batch_max_events,
                                  tokens="\n".join(f'{t} = "{tok}"' for t, tok in self.tokens.items()),
                                  **self.ports))
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen | None = None
        self.sampler: RssSampler | None = None
        self.started_s: float | None = None
        self._log = None
        self._version = int(time.time() * 1000)

    @property
    def pos_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['pos']}"

    @property
    def upstream_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['upstream']}"

    def __enter__(self) -> "Gateway":
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update(GATEWAY_REQUIRE_EXTENSIONS="1", PYTHONPATH=ROOT)  # the production flavour
        self._log = open(os.path.join(self.root, "gateway.log"), "w+b")
        started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", self.config,
                                      "--log-level", "WARNING"], cwd=self.root, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        self.sampler = RssSampler(self.proc.pid)
        try:
            self._wait_ready(started)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.ready_timeout_s
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the gateway exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.ports["metrics"], timeout=2)
                conn.request("GET", "/readyz")
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    self.started_s = time.perf_counter() - started
                    return
            except OSError:
                pass
            time.sleep(0.005)
        raise RuntimeError(f"the gateway was not ready in {self.ready_timeout_s} s: {self.log_tail()}")

    def histogram(self, family: str) -> dict[float, float]:
        """The cumulative bucket counts of histogram `family` from /metrics, by upper bound."""
        conn = http.client.HTTPConnection("127.0.0.1", self.ports["metrics"], timeout=10)
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        return {float(sample.labels["le"]): sample.value
                for metric in text_string_to_metric_families(text) if metric.name == family
                for sample in metric.samples if sample.name == f"{family}_bucket"}

    def log_tail(self) -> str:
        self._log.flush()
        with open(self._log.name, "rb") as f:
            return f.read()[-2000:].decode(errors="replace")

    def rss_mb(self) -> float | None:
        return rss_anon_mb(self.proc.pid)

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        peak = self.sampler.stop()
        self.ctx.gateway_peaks_mb.append((self.label, peak))
        self._log.close()

    # -- the ERP's side: master data and stock, signed with the ERP key, over UP/1 --------------

    def _erp(self):
        from upstream import ErpClient
        return ErpClient(self.upstream_url, ERP_TOKEN, timeout=120)

    def _signed(self, kind: str, body: dict) -> dict:
        from upstream import load_private_key, sign_document
        self._version += 1
        key = load_private_key(os.path.join(self.keys, "erp.pem"))
        return sign_document(kind, self._version, body, key, issued_ms=int(time.time() * 1000))

    def push_master(self, kind: str, body: dict) -> None:
        with self._erp() as erp:
            erp.put_master(self._signed(kind, body))

    def push_movements(self, movements: list[dict], chunk: int = 2_000) -> None:
        with self._erp() as erp:
            for i in range(0, len(movements), chunk):
                erp.post_movements(self._signed("movements", {"movements": movements[i:i + chunk]}))

    def stock_up(self, catalog: dict, promotions: dict | None, receipts: list[dict]) -> None:
        say(f"{self.label}: pushing {len(catalog['items']):,} items"
            + (f", {len(promotions['rules']):,} rules" if promotions else "") + " and stock over UP/1")
        self.push_master("catalog", catalog)
        if promotions:
            self.push_master("promotions", promotions)
        self.push_movements(receipts)


class PosClient:
    """One POS/1 terminal on one keep-alive connection."""

    def __init__(self, url: str, terminal: str, token: str):
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        self.terminal = terminal
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def post(self, route: str, body: dict) -> tuple[int, dict]:
        self.conn.request("POST", f"/pos/v1/{route}", json.dumps(body), self.headers)
        response = self.conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")

    def quote_total(self, lines: list[dict], rid: str) -> int:
        status, answer = self.post("quote", {"id": rid, "lines": lines})
        if status != 200:
            raise RuntimeError(f"quote answered {status}: {answer}")
        return answer["total_cents"]

    def close(self) -> None:
        self.conn.close()


def priced_pool(client: PosClient, baskets: list[list[dict]]) -> list[tuple[list[dict], int]]:
    """Each basket with the total the gateway prices it at now (a sale must pay exactly that)."""
    return [(lines, client.quote_total(lines, f"q{i}")) for i, lines in enumerate(baskets)]
