"""The machine the lab benches run on: commands, the virt type the lab tests chose, how busy
the host is, libvirtd (whether it answers, its pid, restarts by other tests) and CPU readings
of processes from /proc."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

from harness.figures import ANOMALIES

ROOT = Path(__file__).resolve().parent.parent.parent
URI = "qemu:///system"
MiB = 2**20
CLK_TCK = os.sysconf("SC_CLK_TCK")


def code_version() -> str:
    """`git describe` of the checkout the bench runs from, or 'unknown code'."""
    done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown code"


def run(*args) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def virt_type() -> str:
    verdict = Path("/var/tmp/blockmig-test-virt_type")  # shared by the lab tests
    if verdict.exists() and verdict.read_text().strip() in ("kvm", "qemu"):
        return verdict.read_text().strip()
    return "qemu"  # TCG: the guest only has to hold its disk, not boot


def noise() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    done = subprocess.run(["virsh", "-q", "-c", URI, "list", "--name"], capture_output=True, text=True)
    if done.returncode != 0:
        return f"load average {load} on {os.cpu_count()} cores, libvirtd not answering right now"
    running = len([n for n in done.stdout.split() if n])
    return f"load average {load} on {os.cpu_count()} cores, {running} running domains on the lab host"


def libvirtd_answers() -> bool:
    return subprocess.run(["virsh", "-q", "-c", URI, "version"], capture_output=True).returncode == 0


def wait_for_libvirtd(timeout: float = 90.0) -> None:
    """Other lab tests restart libvirtd (the fault tier): wait until it answers again."""
    deadline = time.monotonic() + timeout
    while not libvirtd_answers():
        if time.monotonic() > deadline:
            raise RuntimeError(f"libvirtd did not answer for {timeout:.0f} s")
        time.sleep(0.5)


class LibvirtdWatch(threading.Thread):
    """Notes every change of libvirtd's pid (another test restarting it) with its time."""

    def __init__(self):
        super().__init__(daemon=True, name="libvirtd-watch")
        self.pid = libvirtd_pid()
        self.changes: list[tuple[float, int | None, int | None]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.2):
            pid = libvirtd_pid()
            if pid != self.pid:
                self.changes.append((time.time(), self.pid, pid))
                self.pid = pid

    def between(self, t0: float, t1: float) -> list:
        return [c for c in self.changes if t0 <= c[0] <= t1]

    def note(self, section: str, t0: float) -> None:
        changes = self.between(t0, time.time())
        if changes:
            line = (
                f"{section}: libvirtd changed pid {len(changes)}× during it (another test restarted it: "
                + ", ".join(f"{a}→{b or 'gone'}" for _t, a, b in changes)
                + "); its figures are disturbed"
            )
            print(f"    NOTE: {line}")
            ANOMALIES.append(line)


def cpu_or_none(pid: int | None) -> float | None:
    try:
        return proc_cpu_seconds(pid) if pid else None
    except (FileNotFoundError, ProcessLookupError):
        return None


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    rest = stat[stat.rfind(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def libvirtd_pid() -> int | None:
    done = subprocess.run(["pgrep", "-o", "-x", "libvirtd"], capture_output=True, text=True)
    return int(done.stdout.split()[0]) if done.returncode == 0 and done.stdout.split() else None
