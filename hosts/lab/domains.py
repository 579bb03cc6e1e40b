"""Lab domains through the `virsh` CLI: XML for the tiny guest, define/start, tear down.

No libvirt bindings here on purpose: the adapter in hosts/ is the one module that imports
`libvirt`; the lab only needs to put guests in place, and virsh is enough for that.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from hosts.lab.guest import MARKER_UP, GuestBoot, guest_cmdline

SYSTEM_URI = "qemu:///system"
MEMORY_MIB = 256
VIRT_TYPE_FILE = "virt_type"
PROBE_TIMEOUT = 20.0


@dataclass(frozen=True)
class DiskSpec:
    path: Path
    target: str  # vda, vdb, ...
    format: str = "qcow2"  # or "raw"
    readonly: bool = False


class VirshError(RuntimeError):
    pass


def virsh(*args: str, uri: str = SYSTEM_URI, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["virsh", "-q", "-c", uri, *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise VirshError(f"virsh {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done


def domain_xml(
    name: str,
    disks: list[DiskSpec],
    kernel: Path,
    initrd: Path,
    cmdline: str,
    serial_log: Path,
    virt_type: str = "qemu",
) -> str:
    """A direct-kernel-boot guest: 256 MiB, 1 vCPU, virtio disks, serial console to a file."""
    domain = ET.Element("domain", type=virt_type)
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "memory", unit="MiB").text = str(MEMORY_MIB)
    ET.SubElement(domain, "vcpu").text = "1"
    os_ = ET.SubElement(domain, "os")
    ET.SubElement(os_, "type", arch="x86_64").text = "hvm"
    ET.SubElement(os_, "kernel").text = str(kernel)
    ET.SubElement(os_, "initrd").text = str(initrd)
    ET.SubElement(os_, "cmdline").text = cmdline
    features = ET.SubElement(domain, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    if virt_type == "kvm":
        ET.SubElement(domain, "cpu", mode="host-passthrough")
    ET.SubElement(domain, "on_poweroff").text = "destroy"
    ET.SubElement(domain, "on_reboot").text = "restart"
    ET.SubElement(domain, "on_crash").text = "destroy"
    devices = ET.SubElement(domain, "devices")
    for disk in disks:
        element = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(element, "driver", name="qemu", type=disk.format)
        ET.SubElement(element, "source", file=str(Path(disk.path).resolve()))
        ET.SubElement(element, "target", dev=disk.target, bus="virtio")
        if disk.readonly:
            ET.SubElement(element, "readonly")
    ET.SubElement(devices, "controller", type="usb", model="none")
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=str(serial_log))
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(devices, "console", type="file")
    ET.SubElement(console, "source", path=str(serial_log))
    ET.SubElement(console, "target", type="serial", port="0")
    ET.SubElement(devices, "memballoon", model="none")
    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode") + "\n"


def domain_state(name: str, uri: str = SYSTEM_URI) -> str | None:
    """`running`, `shut off`, `paused`, ... or None when no such domain exists."""
    done = virsh("domstate", name, uri=uri, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def domain_id(name: str, uri: str = SYSTEM_URI) -> int | None:
    done = virsh("domid", name, uri=uri, check=False)
    value = done.stdout.strip()
    return int(value) if done.returncode == 0 and value.isdigit() else None


def define_and_start(xml: str, uri: str = SYSTEM_URI) -> str:
    """Define (if not yet defined) and start (if not running) the domain; returns its name.

    An existing definition is kept as it is, even if `xml` differs: a migration may have
    moved its disk, and the lab must not undo that.
    """
    name = ET.fromstring(xml).findtext("name", "")
    state = domain_state(name, uri)
    if state is None:
        with tempfile.NamedTemporaryFile("w", suffix=".xml", prefix=f"{name}-") as handle:
            handle.write(xml)
            handle.flush()
            virsh("define", handle.name, uri=uri)
        state = domain_state(name, uri)
    if state == "paused":
        virsh("resume", name, uri=uri)
    elif state != "running":
        virsh("start", name, uri=uri)
    return name


def destroy_and_undefine(name: str, uri: str = SYSTEM_URI) -> None:
    """Stop and forget the domain; no error when it is already gone."""
    state = domain_state(name, uri)
    if state is None:
        return
    if state != "shut off":
        virsh("destroy", name, uri=uri, check=False)
    done = virsh("undefine", name, uri=uri, check=False)
    if done.returncode != 0 and domain_state(name, uri) is not None:
        # A transient domain vanishes on destroy; a persistent one must be gone now.
        raise VirshError(f"virsh undefine {name}: {done.stderr.strip()}")


def wait_for_serial(log: Path, marker: str, timeout: float = 30.0, offset: int = 0) -> str:
    """Wait until a line containing `marker` appears in the serial log; return that line.

    `offset` skips the first bytes of the log: take `log.stat().st_size` before an action to
    wait for a line printed after it.
    """
    log = Path(log)
    deadline = time.monotonic() + timeout
    text = ""
    while True:
        try:
            with open(log, "rb") as handle:
                handle.seek(offset)
                text = handle.read().decode(errors="replace")
        except FileNotFoundError:
            text = ""
        for line in text.splitlines():
            if marker in line:
                return line.strip()
        if time.monotonic() >= deadline:
            tail = "\n".join(text.splitlines()[-15:])
            raise TimeoutError(f"{marker!r} not in {log} after {timeout:.0f} s; last lines:\n{tail}")
        time.sleep(0.1)


def probe_kvm(
    guest: GuestBoot, work_dir: Path, name: str = "blockmig-kvm-probe", uri: str = SYSTEM_URI, timeout: float = PROBE_TIMEOUT
) -> bool:
    """Boot the lab guest once under KVM (transient, no disks) and see if it comes up."""
    work_dir.mkdir(parents=True, exist_ok=True)
    log = work_dir / f"{name}.serial.log"
    log.unlink(missing_ok=True)
    destroy_and_undefine(name, uri)
    xml = domain_xml(name, [], guest.kernel, guest.initrd, guest_cmdline(), log, virt_type="kvm")
    with tempfile.NamedTemporaryFile("w", suffix=".xml", prefix=f"{name}-") as handle:
        handle.write(xml)
        handle.flush()
        if virsh("create", handle.name, uri=uri, check=False).returncode != 0:
            return False
    try:
        wait_for_serial(log, MARKER_UP, timeout)
        return True
    except TimeoutError:
        return False
    finally:
        destroy_and_undefine(name, uri)


def detect_virt_type(guest: GuestBoot, lab_dir: Path, uri: str = SYSTEM_URI, probe_name: str = "blockmig-kvm-probe") -> str:
    """`kvm` when /dev/kvm opens and the lab guest really boots under it, else `qemu` (TCG).

    DESIGN measured a Linux guest that printed nothing under KVM on this kind of machine while
    TCG booted it in about a second, so the verdict comes from an actual boot. It is cached in
    `lab_dir/virt_type`; delete that file to probe again.
    """
    # Imported here so that `python -m hosts.lab.services` does not load itself twice via the package.
    from hosts.lab.services import kvm_usable

    cache = Path(lab_dir) / VIRT_TYPE_FILE
    if cache.exists() and cache.read_text().strip() in ("kvm", "qemu"):
        return cache.read_text().strip()
    verdict = "kvm" if kvm_usable() and probe_kvm(guest, Path(lab_dir) / "logs", probe_name, uri) else "qemu"
    cache.write_text(verdict + "\n")
    return verdict
