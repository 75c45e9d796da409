"""A big CSV drop while a lane sells: a file of 3-line baskets is moved into a running gateway's
csv_drop directory and timed until it lies in done/, whatever the gateway does inside (one request
or slices); meanwhile a POS/1 terminal sells at a busy lane's pace and its latencies are kept."""
from __future__ import annotations

import os
import random
import tempfile
import threading
import time

from . import _dataset
from ._common import Figure, at_least, at_most, percentile, say
from ._gateway import Gateway, PosClient, priced_pool

SKUS, RULES = 2_000, 300
LANE_RATE = 20.0  # sales/s of the lane selling meanwhile: a busy till

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

    def __init__(self, gw: Gateway, pool):
        self.client = PosClient(gw.pos_url, "lane1", gw.tokens["lane1"])
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
                status, answer = self.client.post("sales", {"id": f"csv{run}-{i}", "lines": lines,
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


def run(ctx) -> list[Figure]:
    rows = ctx.size(6_000, 200_000)
    with tempfile.TemporaryDirectory() as tmp:
        drop = os.path.join(tmp, "drop")
        with Gateway(ctx, tmp, label="csv", devices=DEVICE.format(dir=drop), ready_timeout_s=120) as gw:
            gw.stock_up(_dataset.catalog(SKUS), _dataset.promotions(RULES, SKUS), _dataset.receipts(SKUS, 10_000_000))
            quoter = PosClient(gw.pos_url, "lane1", gw.tokens["lane1"])
            pool = priced_pool(quoter, _dataset.baskets(40, 3, SKUS, seed=11))
            quoter.close()
            staged = os.path.join(tmp, "day.csv")
            say(f"csv: writing a file of {rows:,} rows")
            write_file(staged, rows, SKUS)
            lane = Lane(gw, pool)
            lane.start()
            time.sleep(0.5)  # the lane's own pace first, so the figure shows what the file changes
            before = gw.rss_mb()
            say(f"csv: dropping it (RssAnon {before:.1f} MB) while a lane sells at {LANE_RATE:.0f}/s")
            started = time.perf_counter()
            os.replace(staged, os.path.join(drop, "day.csv"))  # one rename: the POS's own way to drop a file
            try:
                _wait_done(drop, "day.csv", ctx.size(120, 3_600))
            finally:
                finished = time.perf_counter()
                after = gw.rss_mb()
                latencies, overlapping = lane.stop(started, finished)
    elapsed = finished - started
    rate = rows / elapsed
    growth = after - before
    p99, worst = percentile(latencies, 0.99), latencies[-1]
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
    ]
