"""The lab benches' guests: their own BIOS-only domains on qcow2 disks (named
`bmtest-<pid>-bench-eng-…` so the lab tests' stale-domain sweeper recognises them), a poller
of a disk's block job over the bench's own libvirt connection, and waits on block jobs and
on libvirt's own READY events (`virsh event`)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from harness.machine import URI, libvirtd_answers, run, virt_type, wait_for_libvirtd


class Lab:
    """The bench's own domains and files; cleanup() removes every one of them."""

    def __init__(self):
        self.root = Path("/var/tmp") / f"blockmig-bench-engine-{os.getpid()}"
        self.dests = self.root / "dest"
        self.dests.mkdir(parents=True)
        self.names: list[str] = []
        self.virt = virt_type()

    def domain(self, label: str, size_mib: int, data_mib: int) -> tuple[str, str]:
        """A running persistent BIOS-only domain on a qcow2 of size_mib holding data_mib of
        written data (a byte pattern from 1 MiB on: no boot signature for SeaBIOS to run)."""
        from hosts.lab.domains import VirshError, domain_state, virsh
        from tests.lab.engine_helpers import Disk, define_and_start

        name = f"bmtest-{os.getpid()}-bench-eng-{label}"
        directory = self.root / label
        directory.mkdir()
        disk = directory / "vda.qcow2"
        run("qemu-img", "create", "-q", "-f", "qcow2", disk, f"{size_mib}M")
        if data_mib:
            run("qemu-io", "-f", "qcow2", "-c", f"write -q -P 0x5a 1M {data_mib}M", disk)
        self.names.append(name)
        for attempt in range(5):
            try:
                if attempt == 0:
                    define_and_start(name, [Disk("vda", disk)], self.virt, persistent=True)
                else:
                    state = domain_state(name)
                    if state is None:
                        define_and_start(name, [Disk("vda", disk)], self.virt, persistent=True)
                    elif state != "running":
                        virsh("start", name)
                return name, virsh("domuuid", name).stdout.strip()
            except VirshError:
                if libvirtd_answers() and attempt >= 2:
                    raise
                wait_for_libvirtd()
        raise RuntimeError(f"could not start {name}")

    def cleanup(self) -> None:
        from hosts.lab.domains import destroy_and_undefine, virsh

        def one(name: str) -> None:
            try:
                virsh("blockjob", name, "vda", "--abort", check=False)
                destroy_and_undefine(name)
            except Exception as error:
                print(f"cleanup of {name}: {error}")

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, self.names))
        shutil.rmtree(self.root, ignore_errors=True)


class JobPoller:
    """Polls blockJobInfo on one disk from a thread over the bench's own connection."""

    def __init__(self, conn, name: str, target: str = "vda", period: float = 0.001):
        self.dom = conn.lookupByName(name)
        self.target = target
        self.period = period
        self.polls = 0
        self.poll_time = 0.0

    def has_job(self) -> bool:
        return bool(self.dom.blockJobInfo(self.target, 0))

    def watch(self, timeout: float = 30.0):
        """Start polling; returns (armed event, result dict, thread). result['seen'] is the
        perf_counter time of the first poll that saw a job."""
        armed = threading.Event()
        result: dict = {"seen": None}

        def loop():
            deadline = time.perf_counter() + timeout
            first = True
            while time.perf_counter() < deadline:
                before = time.perf_counter()
                info = self.dom.blockJobInfo(self.target, 0)
                after = time.perf_counter()
                self.polls += 1
                self.poll_time += after - before
                if info:
                    if first:
                        result["error"] = "a block job was already there before the clock started"
                    result["seen"] = after
                    result["seen_wall"] = time.time()
                    return
                if first:
                    first = False
                    armed.set()
                time.sleep(self.period)

        thread = threading.Thread(target=loop, daemon=True, name="job-poller")
        thread.start()
        if not armed.wait(5):
            raise RuntimeError(result.get("error") or "the poller did not start")
        return armed, result, thread

    def wait_gone(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.has_job():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the block job on {self.dom.name()}/{self.target} did not end")
            time.sleep(0.01)


def qcow2_path(name: str) -> str:
    """The source file of a domain's (first) disk."""
    xml = run("virsh", "-c", URI, "dumpxml", name)
    start = xml.index("<source file='") + len("<source file='")
    return xml[start : xml.index("'", start)]


def job_gone(name: str, timeout: float = 60, poll: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = subprocess.run(["virsh", "-c", URI, "blockjob", name, "vda", "--info"], capture_output=True, text=True)
        if "No current block job" in done.stdout + done.stderr:
            return
        time.sleep(poll)
    raise RuntimeError(f"the block job on {name}/vda did not end")


class EventListener:
    """`virsh event --timestamp` on the domain: libvirt's READY as its own client hears it."""

    LINE = re.compile(r"^(\S+ \S+?): event 'block-job-2' .*?: (.+) for (\S+) (\w+)\s*$")

    def __init__(self, name: str, log: Path):
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [
                    "stdbuf",
                    "-oL",
                    "virsh",
                    "-c",
                    URI,
                    "event",
                    "--domain",
                    name,
                    "--event",
                    "block-job-2",
                    "--loop",
                    "--timestamp",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def ready_times(self) -> list[float]:
        times = []
        for line in self.log.read_text(errors="replace").splitlines():
            match = self.LINE.match(line.strip())
            if match and match.group(4) == "ready":
                times.append(datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f%z").timestamp())
        return times

    def ready_after(self, since: float, timeout: float = 5.0) -> float | None:
        deadline = time.monotonic() + timeout
        while True:
            found = [t for t in self.ready_times() if t >= since]
            if found or time.monotonic() > deadline:
                return min(found) if found else None
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
