"""`python -m benchmarks`: every benchmark, one after the other, each printing its own table."""
from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("bench_ledger", "bench_promo", "bench_pos")


def main() -> int:
    status = 0
    for name in BENCHMARKS:
        try:
            module = importlib.import_module(f"benchmarks.{name}")
        except ImportError:
            continue
        print(f"\n== {name} ==", flush=True)
        status |= module.main([]) or 0
    return status


if __name__ == "__main__":
    sys.exit(main())
