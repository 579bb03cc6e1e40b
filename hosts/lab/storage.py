"""Destinations beyond files for the lab: block devices in a volume group, NBD exports.

    storage = StorageLab.create(pid)            # /var/tmp/blockmig-test-storage-<pid>
    vg = storage.volume_group(256 * MiB)        # loop device → PV → VG → libvirt `logical` pool
    device = storage.block_device("lv0", GiB)   # an LV, or a loop device where LVs cannot exist
    server = storage.nbd_export("vm1", image, "raw")   # qemu-nbd on 127.0.0.1:<free port>
    storage.teardown()

Device-mapper: LVM needs it to create or activate a logical volume. Where the kernel has
none (this lab machine's does not: /dev/mapper/control cannot be opened), the physical
volume, the volume group and libvirt's logical pool over it still work, but no LV can be
made, so `block_device` gives a loop device of its own over a sparse file instead, linked
as /dev/bmtest-<pid>-blk/<name> the way udev links /dev/<vg>/<lv> to /dev/dm-N. To QEMU,
libvirt and blockmig both are block devices reached through a link in an allowed root.

Pure subprocess (losetup, lvm, virsh, qemu-nbd); no Django, no libvirt bindings. Everything
a session makes carries its pid, so `remove_stale_storage` can clean up after a session
that died without tearing down.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1024**2
GiB = 1024**3
STORAGE_ROOT = Path("/var/tmp")
DEVICE_ROOT = Path("/dev")
# LVM as it works in a container: no devices file, no udev to wait for.
LVM_CONFIG = "devices { use_devicesfile=0 } activation { udev_sync=0 udev_rules=0 }"
_PID_DIR = re.compile(r"^blockmig-test-storage-(\d+)$")
_PID_NAME = re.compile(r"^bmtest-(\d+)-(vg|blk)$")


class StorageError(RuntimeError):
    pass


def _run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise StorageError(f"{' '.join(map(str, args))}: {(done.stderr or done.stdout).strip()}")
    return done


def _lvm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    # LVM warns about every inherited descriptor (pytest's, the worker's): close them.
    done = subprocess.run(
        ["lvm", args[0], "--config", LVM_CONFIG, *args[1:]],
        capture_output=True,
        text=True,
        close_fds=True,
        env={**os.environ, "LVM_SUPPRESS_FD_WARNINGS": "1"},
    )
    if check and done.returncode != 0:
        raise StorageError(f"lvm {' '.join(args)}: {done.stderr.strip()}")
    return done


def device_mapper_available() -> bool:
    """True when LVM could create and activate logical volumes here."""
    try:
        fd = os.open("/dev/mapper/control", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def loop_attach(backing: Path) -> Path:
    return Path(_run("losetup", "--find", "--show", backing).stdout.strip())


def loop_detach(device: Path) -> None:
    _run("losetup", "--detach", device, check=False)


def loops_backed_by(directory: Path) -> list[Path]:
    """Loop devices whose backing file lies in `directory`."""
    listed = _run("losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE", check=False).stdout
    found = []
    for line in listed.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[1].strip().startswith(str(directory) + "/"):
            found.append(Path(parts[0]))
    return found


def sparse_file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(size)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _pid_of(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_qemu_nbd(pid: int) -> bool:
    """A live qemu-nbd has this pid. A forked server that exited stays a zombie until its
    parent (often a pid 1 that does not reap, in containers) collects it: that counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    name = stat[stat.find("(") + 1 : stat.rfind(")")]
    state = stat[stat.rfind(")") + 2 : stat.rfind(")") + 3]
    return name == "qemu-nbd" and state not in ("Z", "X")


def stop_nbd(pidfile: Path, timeout: float = 10) -> None:
    """Stop the qemu-nbd that wrote `pidfile` (and only a qemu-nbd: pids get reused)."""
    pid = _pid_of(pidfile)
    if pid is None or not _is_qemu_nbd(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _is_qemu_nbd(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    pidfile.unlink(missing_ok=True)


@dataclass(frozen=True)
class NbdServer:
    export: str
    port: int
    image: Path
    format: str
    pidfile: Path

    @property
    def url(self) -> str:
        return f"nbd://127.0.0.1:{self.port}/{self.export}"

    def stop(self) -> None:
        stop_nbd(self.pidfile)


@dataclass(frozen=True)
class VolumeGroup:
    name: str  # also the libvirt pool's name
    pv: Path  # the loop device under it
    target: Path  # /dev/<vg>


@dataclass
class StorageLab:
    pid: int
    directory: Path
    device_dir: Path  # /dev/bmtest-<pid>-blk: the block devices' links (an allowed root)
    loops: list[Path] = field(default_factory=list)
    groups: list[VolumeGroup] = field(default_factory=list)
    servers: list[NbdServer] = field(default_factory=list)

    @classmethod
    def create(cls, pid: int | None = None) -> StorageLab:
        for tool in ("losetup", "lvm", "qemu-nbd", "virsh"):
            if shutil.which(tool) is None:
                raise StorageError(f"{tool} is missing: install lvm2, qemu-utils and libvirt-clients (make packages).")
        pid = pid or os.getpid()
        directory = STORAGE_ROOT / f"blockmig-test-storage-{pid}"
        directory.mkdir(parents=True, exist_ok=True)
        device_dir = DEVICE_ROOT / f"bmtest-{pid}-blk"
        device_dir.mkdir(exist_ok=True)
        return cls(pid, directory, device_dir)

    @property
    def vg_name(self) -> str:
        return f"bmtest-{self.pid}-vg"

    # -- a volume group and libvirt's logical pool over it --------------------------------

    def volume_group(self, size: int) -> VolumeGroup:
        """A VG on a loop device over a sparse file, and a (transient) libvirt `logical`
        pool of the same name over it."""
        loop = loop_attach(sparse_file(self.directory / "pv.img", size))
        self.loops.append(loop)
        _lvm("pvcreate", "--yes", str(loop))
        _lvm("vgcreate", "--yes", self.vg_name, str(loop))
        group = VolumeGroup(self.vg_name, loop, DEVICE_ROOT / self.vg_name)
        self.groups.append(group)
        _run(
            "virsh", "-q", "-c", "qemu:///system", "pool-create-as", group.name, "logical",
            "--source-name", group.name, "--target", group.target,
        )  # fmt: skip
        return group

    # -- block devices ----------------------------------------------------------------------

    def block_device(self, name: str, size: int) -> Path:
        """A block device of exactly `size` bytes, reached as a link in `device_dir`: a
        logical volume of the session's VG where device-mapper works, else a loop device."""
        link = self.device_dir / name
        if self.groups and device_mapper_available():
            group = self.groups[0]
            _lvm("lvcreate", "--yes", "--wipesignatures", "n", "-L", f"{size}b", "-n", name, group.name)
            _run("virsh", "-q", "-c", "qemu:///system", "pool-refresh", group.name)
            target = group.target / name
        else:
            target = loop_attach(sparse_file(self.directory / f"{name}.img", size))
            self.loops.append(target)
        link.symlink_to(target)
        return link

    # -- NBD exports --------------------------------------------------------------------------

    def nbd_export(self, export: str, image: Path, fmt: str) -> NbdServer:
        """qemu-nbd serving `image` as `export` on 127.0.0.1, kept serving across clients."""
        pidfile = self.directory / f"nbd-{export}.pid"
        for _attempt in range(5):
            port = free_port()
            done = _run(
                "qemu-nbd", "--persistent", "--fork", "--pid-file", pidfile, "-f", fmt, "-x", export,
                "-p", str(port), "--bind", "127.0.0.1", image, check=False,
            )  # fmt: skip
            if done.returncode == 0:
                server = NbdServer(export, port, image, fmt, pidfile)
                self.servers.append(server)
                return server
            if "Address already in use" not in done.stderr:
                raise StorageError(f"qemu-nbd could not serve {image}: {done.stderr.strip()}")
        raise StorageError("qemu-nbd found no free port in five tries")

    # -- teardown ---------------------------------------------------------------------------

    def teardown(self) -> None:
        for server in self.servers:
            server.stop()
        _remove_storage(self.pid, self.directory)


def _remove_storage(pid: int, directory: Path) -> None:
    """Everything a session with this pid made: NBD servers, its pool and VG, its loop
    devices and links, its files. Safe to run twice."""
    for pidfile in directory.glob("nbd-*.pid"):
        stop_nbd(pidfile)
    vg = f"bmtest-{pid}-vg"
    _run("virsh", "-q", "-c", "qemu:///system", "pool-destroy", vg, check=False)
    _lvm("vgremove", "--yes", "--force", vg, check=False)
    for loop in loops_backed_by(directory):
        _lvm("pvremove", "--yes", "--force", str(loop), check=False)
        loop_detach(loop)
    shutil.rmtree(DEVICE_ROOT / f"bmtest-{pid}-blk", ignore_errors=True)
    shutil.rmtree(directory, ignore_errors=True)


def remove_stale_storage(alive: Callable[[int], bool]) -> list[int]:
    """Clean up after test sessions that died without tearing down; returns their pids."""
    pids = set()
    for path in STORAGE_ROOT.glob("blockmig-test-storage-*"):
        match = _PID_DIR.match(path.name)
        if match:
            pids.add(int(match.group(1)))
    for path in DEVICE_ROOT.glob("bmtest-*"):
        match = _PID_NAME.match(path.name)
        if match:
            pids.add(int(match.group(1)))
    stale = sorted(pid for pid in pids if not alive(pid))
    for pid in stale:
        _remove_storage(pid, STORAGE_ROOT / f"blockmig-test-storage-{pid}")
    return stale
