"""Running one benchmark in both engine flavours, one child process each (the flavour is chosen at
import), so the figures come from the same machine at nearly the same moment."""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAVOURS = (("cython", {"GATEWAY_REQUIRE_EXTENSIONS": "1"}), ("python", {"GATEWAY_PURE_PYTHON": "1"}))


def run_both(module: str, child_args: list[str]) -> dict | None:
    """`{"cython": figures, "python": figures}` from `python -m MODULE --child ARGS` (its last stdout
    line is a JSON map), or None after printing a child's error."""
    results = {}
    for name, env in FLAVOURS:
        print(f"  {name} ...", file=sys.stderr, flush=True)
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        child_env.update(env, PYTHONPATH=ROOT)
        done = subprocess.run([sys.executable, "-m", module, "--child", *child_args], cwd=ROOT, env=child_env,
                              capture_output=True, text=True)
        if done.returncode:
            print(done.stderr, file=sys.stderr)
            return None
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    return results
