"""configs/gateway.service: the systemd unit the README's store steps install."""
from __future__ import annotations

import configparser
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIT = os.path.join(ROOT, "configs", "gateway.service")


def service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNIT, encoding="utf-8")
    return parser["Service"]


def test_the_unit_is_hardened_and_checks_the_configuration_first():
    s = service()
    assert s["NoNewPrivileges"] == "yes" and s["ProtectSystem"] == "strict" and s["PrivateTmp"] == "yes"
    assert s["ReadWritePaths"] == "/var/lib/gateway"
    assert s["SupplementaryGroups"] == "dialout"
    assert s["ExecStartPre"].split()[1:] == ["check-config", "/etc/gateway/gateway.toml"]
    assert s["ExecStart"].split()[1:] == ["run", "--config", "/etc/gateway/gateway.toml"]
    assert s["User"] == "gateway" and s["KillSignal"] == "SIGTERM"


def test_the_readme_installs_this_unit():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        assert "configs/gateway.service" in f.read()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not on this machine")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    # verify checks that the programs exist: point the unit at stand-ins in a temporary tree.
    fake = tmp_path / "opt" / "gateway" / "bin" / "gateway"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    with open(UNIT, encoding="utf-8") as f:
        text = f.read().replace("/opt/gateway/bin/gateway", str(fake))
    unit = tmp_path / "gateway.service"
    unit.write_text(text, encoding="utf-8")
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                          timeout=60)
    # Only complaints about this unit count; the host's own units are not ours to judge.
    ours = [line for line in (done.stdout + done.stderr).splitlines() if "gateway.service" in line]
    assert not ours, "\n".join(ours)
