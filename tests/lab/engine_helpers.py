"""Shared pieces for the migration lab tests: own domains on copies of the seed chain, a real
`manage.py run_worker` process on the test database, users in each role.

Test modules import the fixtures they use by name (pytest finds fixtures in a module's
namespace), so the lab engineer's conftest stays theirs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection

from blockmig.models import AuditEvent, Migration
from hosts.lab.domains import destroy_and_undefine, virsh
from hosts.models import Hypervisor
from tests.helpers import make_user

REPO = Path(__file__).resolve().parents[2]
URI = "qemu:///system"
# Short leases so takeovers happen within seconds in tests (production: 6 s / 1.5 s / 1 s).
WORKER_ENV = {"BLOCKMIG_LEASE_SECONDS": "3", "BLOCKMIG_HEARTBEAT_SECONDS": "1", "BLOCKMIG_POLL_SECONDS": "1"}


def run(*args) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))}: {done.stderr.strip()}")
    return done.stdout


# -- domains --------------------------------------------------------------------------------


@dataclass
class Disk:
    target: str
    path: Path
    format: str = "qcow2"


@dataclass
class TestDomain:
    name: str
    uuid: str
    directory: Path
    backups: Path
    disks: list[Disk]

    def live_xml(self) -> str:
        return virsh("dumpxml", self.name).stdout

    def inactive_xml(self) -> str:
        return virsh("dumpxml", "--inactive", self.name).stdout

    def sources(self, inactive: bool = False) -> dict[str, str]:
        root = ET.fromstring(self.inactive_xml() if inactive else self.live_xml())
        return {d.find("target").get("dev"): d.find("source").get("file") for d in root.findall("./devices/disk")}

    def is_persistent(self) -> bool:
        return "yes" in virsh("dominfo", self.name).stdout.split("Persistent:")[1].split("\n")[0]

    def state(self) -> str | None:
        done = virsh("domstate", self.name, check=False)
        return done.stdout.strip() if done.returncode == 0 else None


def minimal_domain_xml(name: str, disks: list[Disk], virt_type: str) -> str:
    """A BIOS-only guest: nothing boots, but QEMU runs and holds the disks, which is all a
    block copy needs, and it starts in a fraction of a second."""
    domain = ET.Element("domain", type=virt_type)
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "uuid").text = str(uuid.uuid4())
    ET.SubElement(domain, "memory", unit="MiB").text = "64"
    ET.SubElement(domain, "vcpu").text = "1"
    os_ = ET.SubElement(domain, "os")
    ET.SubElement(os_, "type", arch="x86_64").text = "hvm"
    devices = ET.SubElement(domain, "devices")
    for disk in disks:
        element = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(element, "driver", name="qemu", type=disk.format)
        ET.SubElement(element, "source", file=str(disk.path))
        ET.SubElement(element, "target", dev=disk.target, bus="virtio")
    ET.SubElement(devices, "controller", type="usb", model="none")
    ET.SubElement(devices, "memballoon", model="none")
    return ET.tostring(domain, encoding="unicode")


def define_and_start(name: str, disks: list[Disk], virt_type: str, persistent: bool = True) -> str:
    xml_path = disks[0].path.parent / f"{name}.xml"
    xml_path.write_text(minimal_domain_xml(name, disks, virt_type))
    if persistent:
        virsh("define", str(xml_path))
        virsh("start", name)
    else:
        virsh("create", str(xml_path))
    return virsh("domuuid", name).stdout.strip()


def copy_seed_chain(lab, directory: Path) -> list[Path]:
    """base ← snap1 ← snap2 copied into `directory`, each pointing at its copied parent."""
    directory.mkdir(parents=True, exist_ok=True)
    base, snap1, snap2 = directory / "base.qcow2", directory / "snap1.qcow2", directory / "snap2.qcow2"
    for src, dst in ((lab.seed.base, base), (lab.seed.snap1, snap1), (lab.seed.snap2, snap2)):
        run("cp", "--sparse=always", src, dst)
    run("qemu-img", "rebase", "-u", "-f", "qcow2", "-b", base, "-F", "qcow2", snap1)
    run("qemu-img", "rebase", "-u", "-f", "qcow2", "-b", snap1, "-F", "qcow2", snap2)
    return [snap2, snap1, base]


class DomainFactory:
    def __init__(self, lab, root: Path):
        self.lab = lab
        self.root = root
        self.names: list[str] = []

    def _name(self, label: str) -> str:
        return f"{self.lab.prefix}{label}-{uuid.uuid4().hex[:6]}"

    def seed(self, label: str = "seedvm", persistent: bool = True) -> TestDomain:
        name = self._name(label)
        directory = self.root / name
        chain = copy_seed_chain(self.lab, directory)
        backups = directory / "backups"
        backups.mkdir()
        disks = [Disk("vda", chain[0])]
        self.names.append(name)
        return TestDomain(name, define_and_start(name, disks, self.lab.virt_type, persistent), directory, backups, disks)

    def images(self, label: str, disks: list[tuple[str, str, int, str | None]], persistent: bool = True) -> TestDomain:
        """disks: (target, format, size, qemu-io write command or None)."""
        name = self._name(label)
        directory = self.root / name
        directory.mkdir(parents=True)
        backups = directory / "backups"
        backups.mkdir()
        made = []
        for target, fmt, size, write in disks:
            path = directory / f"{target}.{fmt}"
            run("qemu-img", "create", "-q", "-f", fmt, path, str(size))
            if write:
                run("qemu-io", "-f", fmt, "-c", write, path)
            made.append(Disk(target, path, fmt))
        self.names.append(name)
        return TestDomain(name, define_and_start(name, made, self.lab.virt_type, persistent), directory, backups, made)

    def prepared(self, label: str, build, persistent: bool = True) -> TestDomain:
        """A domain on images that `build(directory)` makes (returning its Disks) before the
        domain starts, for tests that need their own chain or data layout."""
        name = self._name(label)
        directory = self.root / name
        directory.mkdir(parents=True)
        backups = directory / "backups"
        backups.mkdir()
        self.names.append(name)
        made = build(directory)
        return TestDomain(name, define_and_start(name, made, self.lab.virt_type, persistent), directory, backups, made)

    def cleanup(self) -> None:
        for name in self.names:
            for job_disk in ("vda", "vdb"):
                virsh("blockjob", name, job_disk, "--abort", check=False)
            destroy_and_undefine(name)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def domains(lab):
    root = Path("/var/tmp") / f"blockmig-engine-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    factory = DomainFactory(lab, root)
    yield factory
    factory.cleanup()


# -- worker process -------------------------------------------------------------------------


class WorkerProcess:
    def __init__(self, log_dir: Path, extra_env: dict | None = None):
        self.log_dir = log_dir
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen | None = None
        self.count = 0

    def start(self) -> WorkerProcess:
        db = connection.settings_dict["NAME"]
        env = {
            **os.environ,
            **WORKER_ENV,
            **self.extra_env,
            "DATABASE_URL": f"sqlite:///{db}",
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        }
        self.count += 1
        self.log_path = self.log_dir / f"worker-{os.getpid()}-{self.count}.log"
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "run_worker", "-v", "1"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def worker(transactional_db):
    logs = Path("/var/tmp/blockmig-worker-logs")
    logs.mkdir(exist_ok=True)
    process = WorkerProcess(logs).start()
    yield process
    process.stop()


# -- people, host -----------------------------------------------------------------------------


@pytest.fixture
def people(transactional_db) -> dict[str, User]:
    """username → user holding its role (the admin is also a superuser)."""
    roles = (
        ("operator", "operator"),
        ("operator2", "operator"),
        ("approver", "approver"),
        ("approver2", "approver"),
        ("viewer", "viewer"),
        ("admin", "admin"),
    )
    return {name: make_user(name, role, is_superuser=name == "admin") for name, role in roles}


def make_hypervisor(roots: list[Path], name: str = "lab") -> Hypervisor:
    return Hypervisor.objects.create(name=name, uri=URI, allowed_roots=[str(r) for r in roots])


def audit_trail(migration: Migration) -> list[tuple[str, str, str]]:
    return [(e.event_type, e.to_state, e.actor_name) for e in AuditEvent.objects.filter(migration=migration)]


def chain_paths(path) -> list[str]:
    from hosts.lab.seed import qemu_img_info_chain

    return [layer["filename"] for layer in qemu_img_info_chain(path)]


def has_block_job(name: str, target: str) -> bool:
    done = subprocess.run(["virsh", "-c", URI, "blockjob", name, target, "--info"], capture_output=True, text=True)
    return "No current block job" not in done.stdout + done.stderr
