"""The table printed as figures come in, results.json, the machine, and docs/performance.md."""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
from importlib import metadata

from ._common import Figure

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "performance.template.md")
HEADER = f"{'figure':44} {'value':>14} {'baseline':>14} {'ratio':>8}  {'target':32} met"


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}" if abs(x) < 1 else f"{x:.2f}"


def _met(met: bool | None) -> str:
    return {True: "yes", False: "NO", None: "-"}[met]


def row(name: str, entry: dict) -> str:
    value = f"{_num(entry['value'])} {entry['unit']}"
    ratio = "-" if entry["ratio"] is None else f"{entry['ratio']:.2f}x"
    return (f"{name:44} {value:>14} {_num(entry['baseline']):>14} {ratio:>8}  {entry['target'][:32]:32} "
            f"{_met(entry['met'])}")


def entries(figures: list[Figure], mode: str) -> dict:
    return {f.name: {**f.as_json(), "mode": mode} for f in figures}


def write_results(path: str, results: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_results(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _proc_field(path: str, key: str) -> str:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def machine(mode: str, load_tool: str) -> dict:
    mem_kb = _proc_field("/proc/meminfo", "MemTotal").split()[0]
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"cpu": _proc_field("/proc/cpuinfo", "model name"), "cores": os.cpu_count(),
            "memory": f"{int(mem_kb) / 1024 / 1024:.1f} GiB" if mem_kb.isdigit() else "unknown",
            "python": platform.python_version(), "lmdb": _version("lmdb"), "cython": _version("Cython"),
            "os": f"{platform.system()} {platform.release()}",
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load average at start": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
            "mode": mode, "HTTP load tool": load_tool}


def _machine_md(info: dict) -> str:
    return "\n".join(f"- {key}: {value}" for key, value in info.items())


def _summary_md(results: dict) -> str:
    lines = ["| figure | value | baseline (same run) | ratio | target | met |", "|---|---|---|---|---|---|"]
    for name, e in results.items():
        ratio = "-" if e.get("ratio") is None else f"{e['ratio']:.2f}x"
        base = "-" if e.get("baseline") is None else f"{_num(e['baseline'])} ({e.get('baseline_of', '')})"
        lines.append(f"| `{name}`: {e.get('title', '')} | {_num(e.get('value'))} {e.get('unit', '')} | {base} | "
                     f"{ratio} | {e.get('target') or '-'} | {_met(e.get('met'))} |")
    return "\n".join(lines)


def _figure_md(name: str, results: dict) -> str:
    e = results.get(name)
    if e is None:
        return f"`{name}`: not measured in this run."
    text = f"**{_num(e.get('value'))} {e.get('unit', '')}**"
    if e.get("baseline") is not None:
        text += f" against {_num(e['baseline'])} for the {e.get('baseline_of', 'baseline')}"
        if e.get("ratio") is not None:
            text += f" ({e['ratio']:.2f}x)"
    if e.get("target"):
        text += f"; target {e['target']}: {'met' if e.get('met') else 'not met' if e.get('met') is False else '-'}"
    notes = {k: v for k, v in e.items() if k not in ("value", "unit", "baseline", "ratio", "target", "met",
                                                     "title", "baseline_of", "mode", "error")}
    if notes:
        text += ". " + ", ".join(f"{k}: {_num(v) if isinstance(v, float) else v}" for k, v in sorted(notes.items()))
    if e.get("error"):
        text += f". Error: {e['error']}"
    return text


def render_doc(template: str, results: dict, info: dict) -> str:
    """Fill the template's {{machine}}, {{summary}} and {{figure NAME}}; every other word is kept."""
    text = template.replace("{{machine}}", _machine_md(info)).replace("{{summary}}", _summary_md(results))
    return re.sub(r"\{\{figure ([A-Za-z0-9_]+)\}\}", lambda m: _figure_md(m.group(1), results), text)


def write_doc(path: str, results: dict, info: dict) -> None:
    with open(TEMPLATE, encoding="utf-8") as f:
        template = f.read()
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_doc(template, results, info))
