"""HTTP load: `wrk` with a Lua script giving every request an id of its own, or, where wrk is not
installed, a Python keep-alive load generator (one thread per connection). The same tool loads the
gateway and its baseline in one run, so their ratio holds whichever it is."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

from ._common import percentile

ID_MARK = "@ID@"

LUA = r"""
local threads = 0
local counter = 0
local template = [==[{template}]==]
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

function request()
  counter = counter + 1
  local body = string.gsub(template, "{mark}", "{prefix}" .. tid .. "-" .. counter)
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {{"requests": %d, "duration_us": %d, "bad_status": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p99_us": %d}}\n', summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(slots=True)
class LoadResult:
    requests_per_s: float
    requests: int
    bad: int  # answers other than 2xx, and socket errors
    p50_ms: float
    p99_ms: float
    tool: str


def load_tool_name() -> str:
    """`wrk` when installed (BENCH_LOAD_TOOL=python forces the Python generator)."""
    if os.environ.get("BENCH_LOAD_TOOL") == "python" or shutil.which("wrk") is None:
        return "python keep-alive generator"
    return "wrk"


def post_load(url: str, path: str, token: str, template: str, *, connections: int, seconds: float,
              prefix: str) -> LoadResult:
    """POST `template` (JSON text with ID_MARK where the request id goes) to `url + path` over
    `connections` keep-alive connections for `seconds`."""
    if load_tool_name() == "wrk":
        return _wrk(url, path, token, template, connections, seconds, prefix)
    return _python(url, path, token, template, connections, seconds, prefix)


def _wrk(url, path, token, template, connections, seconds, prefix) -> LoadResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(LUA.format(template=template, token=token, mark=ID_MARK,
                           prefix=prefix))
    try:
        threads = min(connections, max(1, (os.cpu_count() or 1)))
        done = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
                               "-s", f.name, url + path], capture_output=True, text=True, timeout=seconds + 60)
    finally:
        os.unlink(f.name)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if done.returncode or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-500:]} {done.stderr[-500:]}")
    s = json.loads(line.removeprefix("WRKJSON "))
    return LoadResult(s["requests"] / (s["duration_us"] / 1e6), s["requests"], s["bad_status"] + s["socket_errors"],
                      s["p50_us"] / 1000, s["p99_us"] / 1000, "wrk")


def _python(url, path, token, template, connections, seconds, prefix) -> LoadResult:
    host, port = url.removeprefix("http://").split(":")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    latencies: list[list[float]] = [[] for _ in range(connections)]
    bad = [0] * connections
    start = threading.Barrier(connections + 1)
    deadline = [0.0]

    def worker(c: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        start.wait()
        i = 0
        while time.perf_counter() < deadline[0]:
            i += 1
            body = template.replace(ID_MARK, f"{prefix}{c}-{i}")
            t = time.perf_counter()
            conn.request("POST", path, body, headers)
            response = conn.getresponse()
            response.read()
            latencies[c].append(time.perf_counter() - t)
            if not 200 <= response.status < 300:
                bad[c] += 1
        conn.close()

    workers = [threading.Thread(target=worker, args=(c,)) for c in range(connections)]
    for w in workers:
        w.start()
    t0 = time.perf_counter()
    deadline[0] = t0 + seconds
    start.wait()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    merged = sorted(x for per in latencies for x in per)
    return LoadResult(len(merged) / elapsed, len(merged), sum(bad), percentile(merged, 0.5) * 1000,
                      percentile(merged, 0.99) * 1000, "python")
