"""Fixtures for the lab tier: one real lab (libvirtd + QEMU) per test session.

The session's domains are named `bmtest-<pid>-testvm` / `bmtest-<pid>-twodisk`, so parallel
sessions never collide and the demo `testvm` is never touched. They are destroyed at the end.
"""

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hosts.lab import LabInfo, build_lab, destroy_lab, wait_until_up
from hosts.lab.domains import VIRT_TYPE_FILE, destroy_and_undefine, virsh
from hosts.lab.services import ensure_libvirtd
from tests.lab.engine_helpers import domains, people, worker  # noqa: F401  (fixtures of the migration tests)
from tests.pids import pid_alive

TEST_LAB_ROOT = Path("/var/tmp")
# The KVM-or-TCG verdict costs a boot (up to 20 s when KVM hangs): share it between sessions.
SHARED_VERDICT = TEST_LAB_ROOT / "blockmig-test-virt_type"
_STALE = re.compile(r"^bmtest-(\d+)-")


def _remove_stale_test_labs() -> None:
    """Domains and dirs left by test sessions that died without tearing down."""
    names = virsh("list", "--all", "--name", check=False).stdout.split()
    for name in names:
        match = _STALE.match(name)
        if match and not pid_alive(int(match.group(1))):
            destroy_and_undefine(name)
    for path in TEST_LAB_ROOT.glob("blockmig-test-lab-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def lab() -> Iterator[LabInfo]:
    if os.geteuid() != 0 or shutil.which("virsh") is None:
        pytest.fail("the lab tier needs root and libvirt (make services)")
    try:
        ensure_libvirtd()
    except (RuntimeError, subprocess.CalledProcessError) as error:
        pytest.fail(f"libvirtd is not usable: {error}")
    _remove_stale_test_labs()

    pid = os.getpid()
    lab_dir = TEST_LAB_ROOT / f"blockmig-test-lab-{pid}"  # QEMU runs as root and reads it
    lab_dir.mkdir(parents=True, exist_ok=True)
    if SHARED_VERDICT.exists():
        shutil.copyfile(SHARED_VERDICT, lab_dir / VIRT_TYPE_FILE)
    info = build_lab(lab_dir, prefix=f"bmtest-{pid}-")
    try:
        shutil.copyfile(lab_dir / VIRT_TYPE_FILE, SHARED_VERDICT)
        wait_until_up(info, timeout=60)
        yield info
    finally:
        destroy_lab(info)
        shutil.rmtree(lab_dir, ignore_errors=True)
