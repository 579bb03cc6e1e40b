"""The local lab: libvirtd + QEMU running the seed chain and a guest that writes.

    info = build_lab(Path("var/lab"))          # idempotent; keeps existing images and VMs
    destroy_lab(info)                           # tests only: removes the domains

Pure Python + subprocess (virsh, qemu-img, debugfs); no Django and no libvirt bindings.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hosts.lab.domains import (
    SYSTEM_URI,
    DiskSpec,
    define_and_start,
    destroy_and_undefine,
    detect_virt_type,
    domain_xml,
    wait_for_serial,
)
from hosts.lab.guest import MARKER_UP, GuestBoot, build_guest, guest_cmdline
from hosts.lab.seed import SeedChain, build_seed_chain, list_files_in_image, qemu_img_info_chain

__all__ = [
    "LabInfo",
    "build_lab",
    "destroy_lab",
    "list_files_in_image",
    "qemu_img_info_chain",
    "wait_for_serial",
]

MiB = 1024**2
TWODISK_SIZE = 64 * MiB


@dataclass(frozen=True)
class LabInfo:
    lab_dir: Path
    uri: str
    prefix: str
    virt_type: str  # "kvm" or "qemu" (TCG)
    guest: GuestBoot
    seed: SeedChain
    backups: Path  # allowed destination root for migrations
    testvm: str  # runs seed.snap2 as vda, lists its files on the serial log
    testvm_serial: Path
    twodisk: str  # vda qcow2 overlay + vdb raw, the guest writes to both
    twodisk_base: Path
    twodisk_vda: Path
    twodisk_vdb: Path
    twodisk_serial: Path


def _run(*args: str | Path) -> None:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))}: {done.stderr.strip()}")


def _build_twodisk_images(directory: Path) -> tuple[Path, Path, Path]:
    """A 64 MiB qcow2 base with 8 MiB of data, an empty overlay on it, and a 64 MiB raw disk."""
    directory.mkdir(parents=True, exist_ok=True)
    base, vda, vdb = directory / "base.qcow2", directory / "vda.qcow2", directory / "vdb.raw"
    if not base.exists():
        partial = directory / "base.qcow2.partial"
        _run("qemu-img", "create", "-q", "-f", "qcow2", partial, str(TWODISK_SIZE))
        # Data in the base makes a shallow copy visibly smaller than a full one.
        _run("qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 8M", partial)
        os.replace(partial, base)
    if not vda.exists():
        partial = directory / "vda.qcow2.partial"
        _run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", partial)
        os.replace(partial, vda)
    if not vdb.exists():
        partial = directory / "vdb.raw.partial"
        with open(partial, "wb") as handle:
            handle.truncate(TWODISK_SIZE)
        os.replace(partial, vdb)
    return base, vda, vdb


def build_lab(lab_dir: Path, prefix: str = "", uri: str = SYSTEM_URI) -> LabInfo:
    """Build (or find) the seed chain, the guest and the two lab domains, all running.

    Existing images and domains are kept untouched: a second run only starts what is stopped.
    """
    lab_dir = Path(lab_dir).resolve()
    logs = lab_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    seed = build_seed_chain(lab_dir / "seed")
    guest = build_guest(lab_dir / "guest")
    virt_type = detect_virt_type(guest, lab_dir, uri, probe_name=f"{prefix}kvmprobe")
    twodisk_base, twodisk_vda, twodisk_vdb = _build_twodisk_images(lab_dir / "twodisk")

    info = LabInfo(
        lab_dir=lab_dir,
        uri=uri,
        prefix=prefix,
        virt_type=virt_type,
        guest=guest,
        seed=seed,
        backups=seed.backups,
        testvm=f"{prefix}testvm",
        testvm_serial=logs / f"{prefix}testvm.serial.log",
        twodisk=f"{prefix}twodisk",
        twodisk_base=twodisk_base,
        twodisk_vda=twodisk_vda,
        twodisk_vdb=twodisk_vdb,
        twodisk_serial=logs / f"{prefix}twodisk.serial.log",
    )
    define_and_start(
        domain_xml(
            info.testvm,
            [DiskSpec(seed.snap2, "vda", "qcow2")],
            guest.kernel,
            guest.initrd,
            guest_cmdline(mount="vda"),
            info.testvm_serial,
            virt_type,
        ),
        uri,
    )
    define_and_start(
        domain_xml(
            info.twodisk,
            [DiskSpec(twodisk_vda, "vda", "qcow2"), DiskSpec(twodisk_vdb, "vdb", "raw")],
            guest.kernel,
            guest.initrd,
            guest_cmdline(write=("vda", "vdb")),
            info.twodisk_serial,
            virt_type,
        ),
        uri,
    )
    return info


def wait_until_up(info: LabInfo, timeout: float = 60.0) -> None:
    """Block until both lab guests have printed BLOCKMIG-GUEST-UP."""
    wait_for_serial(info.testvm_serial, MARKER_UP, timeout)
    wait_for_serial(info.twodisk_serial, MARKER_UP, timeout)


def destroy_lab(info: LabInfo) -> None:
    """Remove the lab's domains (files stay). For tests; the demo lab is never torn down."""
    for name in (info.testvm, info.twodisk, f"{info.prefix}kvmprobe"):
        destroy_and_undefine(name, info.uri)
