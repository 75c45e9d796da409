"""Running one benchmark in both engine flavours, one child process each (the flavour is chosen at
import), so the figures come from the same machine at nearly the same moment."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAVOURS = (("cython", {"GATEWAY_REQUIRE_EXTENSIONS": "1"}), ("python", {"GATEWAY_PURE_PYTHON": "1"}))


def run_both(module: str, child_args: list[str], *, rounds: int = 1) -> dict | None:
    """`{"cython": figures, "python": figures}` from `python -m MODULE --child ARGS` (its last stdout
    line is a JSON map), or None after printing a child's error.

    With `rounds` > 1 the flavours take turns that many times and each figure is the median of its
    flavour's rounds (every round's value is kept under `"rounds"`): on a machine whose speed drifts
    over minutes, a ratio of two single runs a few seconds apart says as much about the drift. Which
    flavour goes first alternates from round to round, so a drift in one direction falls on both."""
    runs: dict = {name: [] for name, _env in FLAVOURS}
    for round_no in range(rounds):
        for name, env in (FLAVOURS if round_no % 2 == 0 else FLAVOURS[::-1]):
            print(f"  {name} ..." + (f" (round {round_no + 1} of {rounds})" if rounds > 1 else ""), file=sys.stderr,
                  flush=True)
            child_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
            child_env.update(env, PYTHONPATH=ROOT)
            done = subprocess.run([sys.executable, "-m", module, "--child", *child_args], cwd=ROOT, env=child_env,
                                  capture_output=True, text=True)
            if done.returncode:
                print(done.stderr, file=sys.stderr)
                return None
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {name: _median_of(results) for name, results in runs.items()}


def _median_of(results: list[dict]) -> dict:
    """Each numeric figure's median over the rounds, the rest as the first round gave it."""
    out = dict(results[0])
    for key, value in results[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = statistics.median(r[key] for r in results)
            if len(results) > 1:
                out.setdefault("rounds", {})[key] = [r[key] for r in results]
    return out
