"""Running one benchmark in both engine flavours, one child process each (the flavour is chosen at
import), taking turns: each child sets up once, then the two run a block of the work in turn, one at
a time, so that the machine's drift over the run falls on both alike."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAVOURS = (("cython", {"GATEWAY_REQUIRE_EXTENSIONS": "1"}), ("python", {"GATEWAY_PURE_PYTHON": "1"}))


class ChildFailed(Exception):
    pass


class _Child:
    """`python -m MODULE --serve ARGS` in one flavour: it says one JSON line when set up, then
    answers each command line on its standard input (`turn`, `end`) with one JSON line."""

    def __init__(self, name: str, env: dict, module: str, args: list[str]):
        self.name = name
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        child_env.update(env, PYTHONPATH=ROOT)
        self.proc = subprocess.Popen([sys.executable, "-m", module, "--serve", *args], cwd=ROOT, env=child_env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise ChildFailed(f"the {self.name} child exited with {self.proc.wait()} (its error is above)")
        return json.loads(line)

    def ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.reply()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def run_in_turns(module: str, child_args: list[str], *, turns: int) -> dict | None:
    """`{"cython": {"turns": [...], "end": {...}}, "python": ...}`: every reply of each flavour's
    child to `turns` turns (which flavour goes first alternates from turn to turn), and its reply to
    `end`; or None after printing why a child failed. Both children set up side by side; only one
    runs a turn at a time."""
    children = {}
    try:
        for name, env in FLAVOURS:
            children[name] = _Child(name, env, module, child_args)
        for child in children.values():
            child.reply()  # set up
        replies = {name: [] for name in children}
        for turn in range(turns):
            order = [name for name, _env in (FLAVOURS if turn % 2 == 0 else FLAVOURS[::-1])]
            for name in order:
                replies[name].append(children[name].ask("turn"))
        print(f"  {turns} turns each taken, finishing ...", file=sys.stderr, flush=True)
        return {name: {"turns": replies[name], "end": child.ask("end")} for name, child in children.items()}
    except (ChildFailed, OSError, ValueError) as exc:
        print(f"  {exc}", file=sys.stderr)
        return None
    finally:
        for child in children.values():
            child.close()


def turn_rates(turns: list[dict]) -> tuple[float, list[float]]:
    """A flavour's rate over all its turns (their work over their time) and each turn's rate, from
    replies of `{"done": units, "seconds": s}`."""
    rate = sum(t["done"] for t in turns) / sum(t["seconds"] for t in turns)
    return rate, [t["done"] / t["seconds"] for t in turns]


def paired_ratios(fast: list[float], slow: list[float]) -> dict:
    """The ratio of each turn's two rates (the flavours ran one right after the other), summarised:
    how steady the figure was over the run."""
    ratios = sorted(a / b for a, b in zip(fast, slow))
    return {"turn_ratio_median": statistics.median(ratios), "turn_ratio_min": ratios[0],
            "turn_ratio_max": ratios[-1]}
