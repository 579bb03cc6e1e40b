"""The systemd units in deploy/: what each must say for the service to be supervised.

Parsed with configparser (systemd's syntax is close enough for these files), and, where
`systemd-analyze` is installed, checked by `systemd-analyze verify` too (it needs no running
systemd: it loads the unit files and reports unknown keys, bad values and missing programs).
"""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
CHECKOUT = "/srv/blockmig"  # where the units expect the checkout (and its .venv)
UNITS = ["blockmig-web.service", "blockmig-worker@.service", "blockmig-sync.service"]


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(
        strict=False, interpolation=None, delimiters=("=",), comment_prefixes=("#", ";"), empty_lines_in_values=False
    )
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string((DEPLOY / name).read_text(), source=name)
    return parser


def exec_start(name: str) -> list[str]:
    return shlex.split(unit(name)["Service"]["ExecStart"])


def seconds(value: str) -> float:
    """A systemd time span as used here: `90`, `90s`, `2min`, `1min 30s`."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    assert parts, value
    return sum(float(number) * units[suffix] for number, suffix in parts)


@pytest.mark.parametrize("name", UNITS)
def test_every_unit_is_restarted_forever_with_the_shared_environment(name):
    service = unit(name)["Service"]
    assert service["Restart"] == "always"
    assert 0 < seconds(service["RestartSec"]) <= 10
    # A database down for minutes must not make systemd give up on the restarts.
    assert unit(name)["Unit"]["StartLimitIntervalSec"] == "0"
    assert service["EnvironmentFile"] == "/etc/blockmig/env"
    assert service["WorkingDirectory"] == CHECKOUT
    assert service["KillSignal"] == "SIGTERM"
    assert service["User"] and service["User"] != "root"


@pytest.mark.parametrize("name", UNITS)
def test_every_unit_starts_after_the_network_database_and_redis(name):
    section = unit(name)["Unit"]
    after = section["After"].split()
    assert {"network-online.target", "postgresql.service", "redis.service"} <= set(after)
    assert "network-online.target" in section["Wants"].split()
    assert unit(name)["Install"]["WantedBy"] == "multi-user.target"


def test_web_runs_daphne_with_the_asgi_app():
    argv = exec_start("blockmig-web.service")
    assert argv[0] == f"{CHECKOUT}/.venv/bin/daphne"
    assert argv[-1] == "blockmig.asgi:application"
    assert "-p" in argv and "-b" in argv and "--proxy-headers" in argv


def worker_drain_seconds() -> int:
    """run_worker's drain timeout (`….drain(timeout=N)` in its SIGTERM path)."""
    source = (REPO / "blockmig" / "management" / "commands" / "run_worker.py").read_text()
    drains = [int(t) for t in re.findall(r"drain\(timeout=(\d+)\)", source)]
    assert drains, "run_worker.py no longer says drain(timeout=N): update this test and TimeoutStopSec"
    return max(drains)


def test_worker_template_runs_run_worker_and_waits_for_its_drain():
    argv = exec_start("blockmig-worker@.service")
    assert argv == [f"{CHECKOUT}/.venv/bin/python", "manage.py", "run_worker"]
    service = unit("blockmig-worker@.service")["Service"]
    assert service["KillSignal"] == "SIGTERM"  # run_worker drains on SIGTERM ...
    # ... and gets its whole drain, plus time to exit, before systemd sends SIGKILL.
    assert seconds(service["TimeoutStopSec"]) >= worker_drain_seconds() + 30
    assert service["KillMode"] == "mixed"  # the drain still has its ssh children (qemu+ssh://)
    assert "%i" in service["SyslogIdentifier"]  # the instances are told apart in the journal


def test_sync_unit_runs_the_sync_loop():
    argv = exec_start("blockmig-sync.service")
    assert argv == [f"{CHECKOUT}/.venv/bin/python", "manage.py", "sync_loop"]
    assert seconds(unit("blockmig-sync.service")["Service"]["TimeoutStopSec"]) >= 30


def test_env_example_sets_what_every_process_needs():
    keys = {
        line.split("=", 1)[0] for line in (DEPLOY / "env.example").read_text().splitlines() if line and not line.startswith("#")
    }
    assert {
        "DATABASE_URL",
        "REDIS_URL",
        "DJANGO_SECRET_KEY",
        "DJANGO_ALLOWED_HOSTS",
        "DJANGO_DEBUG",
        "BLOCKMIG_CHANNEL_PREFIX",
        "BLOCKMIG_WEB_PORT",
    } <= keys


def test_systemd_analyze_verify_accepts_the_units(tmp_path):
    """systemd's own parser: unknown keys, bad values, missing programs. The checkout path
    is pointed at this one so that the programs exist; nothing is installed or started."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: `make packages` installs Debian's systemd package")
    for name in UNITS:
        (tmp_path / name).write_text((DEPLOY / name).read_text().replace(CHECKOUT, str(REPO)))
    files = [str(tmp_path / name) for name in UNITS] + [str(tmp_path / "blockmig-worker@1.service")]
    done = subprocess.run([analyze, "verify", *files], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stdout + done.stderr
