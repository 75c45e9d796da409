"""docs/quickstart-store.md, run as written: its files saved, its commands run by a shell, its shown
output found in what the commands print.

The page's fenced blocks carry their role after the language word (hidden when rendered):
`toml store.toml` / `json NAME` are files to save; `sh` is run and must exit 0; `sh wait` is retried
until its output shows (the gateway works in the background); `sh run` is the gateway itself, started
in the background; `sh install` is skipped (the suite runs from the source tree). A `text` block right
after a command is the output it must show, `...` standing for anything.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from .test_gateway_process import Process, free_ports, wait_ready

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "quickstart-store.md")
FENCE = re.compile(r"^```(\w*)[ \t]*([^\n]*)\n(.*?)^```[ \t]*$", re.S | re.M)
DEFAULT_PORTS = ("8600", "8700", "9600")


def read_doc() -> str:
    with open(DOC, encoding="utf-8") as f:
        return f.read()


def blocks(text: str) -> list[tuple[str, str, str]]:
    """(language, role, content) of every fenced block, in page order."""
    return [(m.group(1), m.group(2).strip(), m.group(3)) for m in FENCE.finditer(text)]


def shows(output: str, expected: str) -> list[str]:
    """The expected lines missing from output; `...` in a line matches anything."""
    lines = output.splitlines()
    missing = []
    for want in filter(None, (line.strip() for line in expected.splitlines())):
        pattern = ".*".join(re.escape(part) for part in want.split("..."))
        if not any(re.search(pattern, line) for line in lines):
            missing.append(want)
    return missing


def test_the_page_has_the_blocks_this_test_knows():
    roles = {(lang, role) for lang, role, _ in blocks(read_doc())}
    unknown = {(lang, role) for lang, role in roles
               if not (lang == "text" and not role or lang == "sh" and role in ("", "wait", "run", "install")
                       or lang in ("toml", "json") and re.fullmatch(r"[\w.-]+", role))}
    assert not unknown, f"blocks this test would not run: {unknown}"
    assert ("sh", "run") in roles and ("toml", "store.toml") in roles


@pytest.mark.skipif(shutil.which("curl") is None, reason="the page's POS/1 sale is a curl command")
def test_the_quickstart_runs_as_written(tmp_path):
    text = read_doc()
    ports = [str(p) for p in free_ports(3)]
    for default, port in zip(DEFAULT_PORTS, ports):
        text = text.replace(f"127.0.0.1:{default}", f"127.0.0.1:{port}")
    here = tmp_path / "store"
    here.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "gateway"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m gateway "$@"\n', encoding="utf-8")
    wrapper.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("ERP_TOKEN", None)  # the page passes --token; a token in the environment must not hide a gap

    def sh(script: str) -> tuple[int, str]:
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=here, env=env,
                              capture_output=True, text=True, timeout=60)
        return done.returncode, done.stdout + done.stderr

    page = blocks(text)
    gateway = None
    ran = 0
    try:
        for i, (lang, role, content) in enumerate(page):
            if lang in ("toml", "json"):
                (here / role).write_text(content, encoding="utf-8")
                continue
            if lang != "sh" or role == "install":
                continue
            if role == "run":
                args = content.split()
                assert args[:2] == ["gateway", "run"], content
                gateway = Process(here, *args[2:])
                wait_ready(gateway, int(ports[2]))
                continue
            expected = page[i + 1][2] if i + 1 < len(page) and page[i + 1][0] == "text" else ""
            deadline = time.monotonic() + (20 if role == "wait" else 0)
            while True:
                code, output = sh(content)
                missing = shows(output, expected)
                if code == 0 and not missing or time.monotonic() > deadline:
                    break
                time.sleep(0.2)  # a real process in the background: only its output can tell
            assert code == 0, f"{content}\nexited {code}:\n{output}"
            assert not missing, f"{content}\ndid not show {missing}; it printed:\n{output}"
            ran += 1
        assert gateway is not None and ran >= 8
        gateway.proc.send_signal(signal.SIGINT)  # Ctrl-C, as the page says
        assert gateway.wait(10) == 0, gateway.output()
        assert "SIGINT received: stopping" in gateway.output()
    finally:
        if gateway is not None:
            gateway.close()
