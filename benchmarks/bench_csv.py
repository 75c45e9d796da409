"""A big CSV drop while a lane sells: a file of 3-line baskets is moved into a running gateway's
csv_drop directory and timed until it lies in done/, whatever the gateway does inside (one request
or slices); meanwhile a POS/1 terminal sells at a busy lane's pace and its latencies are kept.

Then the bulk load: a second file of the same size while POS/1 terminals sell back to back, as fast
as the gateway answers them (from a process of their own, so their threads never hold up the lane's
clock), and the same lane's latencies are kept again, reported beside that load."""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time

from . import _dataset
from ._common import ROOT, Figure, at_least, at_most, percentile, say
from ._gateway import Gateway, PosClient, priced_pool

SKUS, RULES = 2_000, 300
LANE_RATE = 20.0  # sales/s of the lane selling meanwhile: a busy till
BULK_TERMINALS = 4  # POS/1 terminals selling at full speed during the second file

DEVICE = """
[[devices]]
name = "legacy"
kind = "csv_drop"
dir = "{dir}"
settle_s = 0.0
poll_s = 0.05
max_bytes = 1073741824
[devices.columns]
id = "TicketNo"
code = "ItemCode"
qty = "Qty"
"""


def write_file(path: str, rows: int, n_skus: int, seed: int = 7) -> None:
    """`rows` rows of 3-line baskets (TicketNo, ItemCode, Qty), as a legacy POS exports a day."""
    rnd = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        f.write("TicketNo,ItemCode,Qty\n")
        for r in range(rows):
            f.write(f"T{r // 3},{_dataset.sku(rnd.randrange(n_skus))},{rnd.randrange(1, 4)}\n")


class Lane:
    """A POS/1 terminal selling pre-priced baskets at LANE_RATE until stopped, keeping each latency."""

    def __init__(self, gw: Gateway, pool, tag: str = "csv"):
        self.client = PosClient(gw.pos_url, "lane1", gw.tokens["lane1"])
        self.tag = tag  # sale ids are "<tag><start time>-<n>": each Lane's its own
        self.pool = pool
        self.latencies: list[tuple[float, float]] = []  # (sent at, seconds to the answer)
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        start, i, run = time.perf_counter(), 0, int(time.time())
        try:
            while not self._stop.is_set():
                lines, total = self.pool[i % len(self.pool)]
                t = time.perf_counter()
                status, answer = self.client.post("sales", {"id": f"{self.tag}{run}-{i}", "lines": lines,
                                                            "payments": [{"method": "cash", "cents": total}]})
                self.latencies.append((t, time.perf_counter() - t))
                if status != 201:
                    raise RuntimeError(f"the lane's sale answered {status}: {answer}")
                i += 1
                self._stop.wait(max(0.0, start + i / LANE_RATE - time.perf_counter()))
        except Exception as exc:
            self.error = exc

    def stop(self, since: float, until: float) -> tuple[list[float], int]:
        """The latencies (ms, sorted) of the sales that overlapped [since, until] (all of them when
        none did: a quick run's file may be done between two sales), and how many overlapped."""
        self._stop.set()
        self._thread.join()
        self.client.close()
        if self.error:
            raise self.error
        during = [s for t, s in self.latencies if t <= until and t + s >= since]
        return sorted(x * 1000 for x in (during or [s for _t, s in self.latencies])), len(during)


def _wait_done(drop: str, name: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    done, rejected = os.path.join(drop, "done", name), os.path.join(drop, "rejected", name)
    while time.monotonic() < deadline:
        if os.path.exists(done):
            return
        if os.path.exists(rejected):
            with open(rejected + ".errors.txt", encoding="utf-8", errors="replace") as f:
                raise RuntimeError(f"the file was rejected: {f.read()[:500]}")
        time.sleep(0.005)
    raise TimeoutError(f"the file was not done in {timeout_s:.0f} s")


class Flood:
    """POS/1 terminals selling back to back in a child process (`--flood`) until `stop`."""

    def __init__(self, gw: Gateway, pool, terminals: list[str], workdir: str):
        spec = os.path.join(workdir, "flood.json")
        with open(spec, "w") as f:
            json.dump({"url": gw.pos_url, "tokens": {t: gw.tokens[t] for t in terminals}, "pool": pool}, f)
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_csv", "--flood", spec], cwd=ROOT,
                                     env={**os.environ, "PYTHONPATH": ROOT}, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def stop(self) -> dict:
        """{"sales", "seconds"} the terminals sold (closing the child's stdin stops it)."""
        out, _err = self.proc.communicate(timeout=120)
        if self.proc.returncode:
            raise RuntimeError(f"the POS/1 flood failed ({self.proc.returncode})")
        return json.loads(out.strip().splitlines()[-1])


def _flood_child(spec_path: str) -> dict:
    with open(spec_path) as f:
        spec = json.load(f)
    pool, stop, counts, errors = spec["pool"], threading.Event(), {}, []

    def sell(terminal: str, token: str) -> None:
        client, run, i = PosClient(spec["url"], terminal, token), int(time.time() * 1000), 0
        try:
            while not stop.is_set():
                lines, total = pool[i % len(pool)]
                status, answer = client.post("sales", {"id": f"bulk{run}-{i}", "lines": lines,
                                                       "payments": [{"method": "cash", "cents": total}]})
                if status != 201:
                    raise RuntimeError(f"{terminal}: a sale answered {status}: {answer}")
                i += 1
                counts[terminal] = i
        except Exception as exc:
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=sell, args=item, daemon=True) for item in spec["tokens"].items()]
    started = time.perf_counter()
    for t in threads:
        t.start()
    sys.stdin.read()  # until the parent closes it
    stop.set()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return {"sales": sum(counts.values()), "seconds": time.perf_counter() - started}


def _stage(tmp: str, name: str, rows: int, seed: int) -> str:
    """A file of `rows` rows written beside the drop, before any lane sells: the lane's thread shares
    this process's interpreter lock, and a sale sent while the file was written took up to 110 ms
    here, none of it the gateway's."""
    staged = os.path.join(tmp, name)
    say(f"csv: writing {name}, {rows:,} rows")
    write_file(staged, rows, SKUS, seed=seed)
    return staged


def _drop(gw: Gateway, ctx, staged: str, drop: str, lane: Lane):
    """Drop the `staged` file, wait until it is done; (seconds, RssAnon before and after in MB, the
    lane's latencies in ms meanwhile, how many of them overlapped the file)."""
    name = os.path.basename(staged)
    before = gw.rss_mb()
    started = time.perf_counter()
    os.replace(staged, os.path.join(drop, name))  # one rename: the POS's own way to drop a file
    try:
        _wait_done(drop, name, ctx.size(120, 3_600))
    finally:
        finished = time.perf_counter()
        after = gw.rss_mb()
        latencies, overlapping = lane.stop(started, finished)
    return finished - started, before, after, latencies, overlapping


def run(ctx) -> list[Figure]:
    rows = ctx.size(6_000, 200_000)
    bulk = [f"bulk{i + 1}" for i in range(BULK_TERMINALS)]
    with tempfile.TemporaryDirectory() as tmp:
        drop = os.path.join(tmp, "drop")
        with Gateway(ctx, tmp, label="csv", devices=DEVICE.format(dir=drop), ready_timeout_s=120,
                     terminals=("lane1", *bulk)) as gw:
            gw.stock_up(_dataset.catalog(SKUS), _dataset.promotions(RULES, SKUS), _dataset.receipts(SKUS, 10_000_000))
            quoter = PosClient(gw.pos_url, "lane1", gw.tokens["lane1"])
            pool = priced_pool(quoter, _dataset.baskets(40, 3, SKUS, seed=11))
            quoter.close()
            day, day2 = _stage(tmp, "day.csv", rows, 7), _stage(tmp, "day2.csv", rows, 8)
            lane = Lane(gw, pool)
            lane.start()
            time.sleep(0.5)  # the lane's own pace first, so the figure shows what the file changes
            say(f"csv: a file while a lane sells at {LANE_RATE:.0f}/s")
            elapsed, before, after, latencies, overlapping = _drop(gw, ctx, day, drop, lane)
            say(f"csv: a second file while {BULK_TERMINALS} POS/1 terminals sell at full speed, and the lane")
            flood = Flood(gw, pool, bulk, tmp)
            lane = Lane(gw, pool, tag="bulk-lane")
            lane.start()
            time.sleep(0.5)
            try:
                bulk_elapsed, _b, _a, bulk_latencies, bulk_overlapping = _drop(gw, ctx, day2, drop, lane)
            finally:
                flooded = flood.stop()
    rate = rows / elapsed
    growth = after - before
    p99, worst = percentile(latencies, 0.99), latencies[-1]
    bulk_p99, bulk_worst = percentile(bulk_latencies, 0.99), bulk_latencies[-1]
    load = {"file_rows_per_s": rows / bulk_elapsed, "pos_terminals": BULK_TERMINALS,
            "pos_sales_per_s": flooded["sales"] / flooded["seconds"], "lane_sales": len(bulk_latencies),
            "lane_sales_during_drop": bulk_overlapping}
    return [
        Figure("csv_drop_rows_per_s", f"CSV drop of {rows:,} rows (3-line baskets, {SKUS:,} SKUs, {RULES} rules) "
               "to done/", rate, "rows/s", target=">= 50,000 rows/s", met=at_least(rate, 50_000),
               extra={"rows": rows, "seconds": elapsed}),
        Figure("csv_drop_heap_growth", "gateway RssAnon after the drop minus before", growth, "MB",
               target="<= 50 MB", met=at_most(growth, 50), extra={"before_mb": before, "after_mb": after}),
        Figure("csv_drop_lane_sale_p99", "a lane's POS/1 sale latency during the drop, p99", p99, "ms",
               target="<= 50 ms", met=at_most(p99, 50), extra={"sales": len(latencies), "sales_during_drop": overlapping}),
        Figure("csv_drop_lane_sale_max", "a lane's POS/1 sale latency during the drop, max", worst, "ms",
               target="<= 250 ms", met=at_most(worst, 250)),
        Figure("csv_bulk_lane_sale_p99", f"a lane's POS/1 sale latency during a second drop with {BULK_TERMINALS} "
               "POS/1 terminals selling at full speed, p99", bulk_p99, "ms", target="<= 50 ms",
               met=at_most(bulk_p99, 50), extra=load),
        Figure("csv_bulk_lane_sale_max", "the same lane under the same bulk load, max", bulk_worst, "ms",
               target="<= 250 ms", met=at_most(bulk_worst, 250), extra=load),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--flood", required=True, help="the flood's spec file (JSON), written by Flood")
    print(json.dumps(_flood_child(parser.parse_args().flood)))
    sys.exit(0)
