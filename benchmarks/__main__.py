"""`python -m benchmarks [--quick] [--only NAME ...]`: every benchmark of the gateway's performance
targets, each figure beside its baseline measured in the same run, printed as a table as they come,
written to results.json and to docs/performance.md (from benchmarks/performance.template.md, whose
prose is kept as written)."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback

from ._common import ROOT, Context, Figure, at_most, say
from ._report import HEADER, entries, load_average, machine, read_results, row, write_doc, write_results

# name -> module; the order is the run's (cheap in-process ones first, the big ledger last).
BENCHMARKS = {
    "sale": "bench_sale",        # sale handler path, compiled against the pure twin
    "core_loop": "bench_ledger",  # core loop durable against raw LMDB and SQLite
    "pricing": "bench_promo",     # the promotion engine alone
    "pos": "bench_pos",           # POS/1 under wrk against a hello-world hypercorn app
    "ecr": "bench_ecr",           # ECR/1 lanes on pseudo-terminals
    "csv": "bench_csv",           # a CSV drop while a lane sells
    "startup": "bench_startup",   # gateway run to /readyz with a big ledger
    "erp": "bench_erp",           # ERP catch-up over a big ledger
    "dayclose": "bench_dayclose",  # closing a business day of many documents
}
RSS_TARGET_MB = 150


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="every benchmark at a small size (seconds each): checks they run, not figures")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=list(BENCHMARKS),
                        help=f"run only these ({', '.join(BENCHMARKS)}); other figures in --results are kept")
    parser.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "results.json"),
                        help="where to write the figures (default benchmarks/results.json)")
    parser.add_argument("--doc", default=os.path.join(ROOT, "docs", "performance.md"),
                        help="the performance page to regenerate (default docs/performance.md)")
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "benchmarks", ".data"),
                        help="cached inputs such as the big ledger (default benchmarks/.data)")
    return parser.parse_args(argv)


def _rss_figure(ctx: Context) -> Figure:
    label, peak = max(ctx.gateway_peaks_mb, key=lambda p: p[1])
    return Figure("gateway_peak_rss", "peak anonymous RSS of the gateway through the benchmarks", peak, "MB",
                  target=f"<= {RSS_TARGET_MB} MB", met=at_most(peak, RSS_TARGET_MB),
                  extra={"during": label, "per_run": {lab: round(mb, 1) for lab, mb in ctx.gateway_peaks_mb}})


def _run_one(name: str, ctx: Context) -> tuple[list[Figure], str | None]:
    module = importlib.import_module(f"benchmarks.{BENCHMARKS[name]}")
    # What the benchmark before wrote (a copied ledger, a drop directory) is on the disk before this
    # one starts, so its writeback does not fall on this one's durable commits.
    os.sync()
    try:
        return module.run(ctx), None
    except Exception as exc:  # one broken benchmark must not hide the others' figures
        traceback.print_exc()
        return [], f"{type(exc).__name__}: {exc}"


def main(argv=None) -> int:
    args = _parse(argv)
    mode = "quick" if args.quick else "full"
    ctx = Context(quick=args.quick, data_dir=args.data_dir)
    names = args.only or list(BENCHMARKS)
    results = read_results(args.results) if args.only else {}
    failed = []
    load_at_start = load_average()
    started = time.monotonic()
    print(f"benchmarks ({mode}): {', '.join(names)}", flush=True)
    print(HEADER, flush=True)
    for name in names:
        say(f"== {name}")
        figures, error = _run_one(name, ctx)
        if error:
            failed.append(name)
            results[name] = {"value": None, "unit": "", "baseline": None, "ratio": None, "target": "",
                             "met": None, "error": error, "mode": mode}
            print(f"{name:36} FAILED: {error}", flush=True)
        for key, entry in entries(figures, mode).items():
            results.pop(name, None)
            results[key] = entry
            print(row(key, entry), flush=True)
        write_results(args.results, results)
    if ctx.gateway_peaks_mb:
        key, entry = next(iter(entries([_rss_figure(ctx)], mode).items()))
        results[key] = entry
        print(row(key, entry), flush=True)
    write_results(args.results, results)
    from ._load import load_tool_name
    write_doc(args.doc, results, machine(mode, load_tool_name(), load_at_start))
    say(f"done in {time.monotonic() - started:.0f} s: {args.results}, {args.doc}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
