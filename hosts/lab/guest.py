"""A tiny Linux guest for the lab: Debian's cloud kernel + a busybox-static initramfs.

Direct kernel boot, serial console only. What the guest does is chosen on the kernel command
line (see `guest_cmdline`):

- always: prints `BLOCKMIG-GUEST-UP` once the virtio disks are there;
- `blockmig.mount=vda`: mounts /dev/vda read-only every few seconds and prints
  `BLOCKMIG-LS <n>: bar baz foo lost+found` (unmounting and dropping caches in between, so a
  listing after a pivot really reads the new disk);
- `blockmig.write=vdb` (or `vda,vdb`): overwrites each listed disk with random data in
  `blockmig.write_mb` MiB chunks, looping over the whole disk forever, pausing
  `blockmig.write_pause_ms` between chunks, and prints `BLOCKMIG-WRITE vdb started size_mb=64`,
  then `BLOCKMIG-WRITE vdb pass=P mb=M` every 16 chunks;
- `blockmig.ackwrite=vdb`: writes sequence-numbered records to the raw disk, record n being the
  4 KiB block at offset n*4096 filled with the line `BMACK %08d` (see `ack_record`), each with
  O_DIRECT and an fsync (a FLUSH to the virtual disk), and prints `BLOCKMIG-ACK <n>` only after
  that write returned success: every ACK on the console is a write the disk acknowledged as
  durable. Starts with `BLOCKMIG-ACKWRITE vdb started blocks=B`, pauses
  `blockmig.ackwrite_pause_ms` (default 0) between records, prints
  `BLOCKMIG-ACKWRITE vdb error n=N` and retries the same record when a write fails, and stops
  with `BLOCKMIG-ACKWRITE vdb done n=B` once the disk is full (records are never overwritten);
- otherwise it idles.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import re
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

MARKER_UP = "BLOCKMIG-GUEST-UP"
MARKER_LS = "BLOCKMIG-LS"
MARKER_WRITE = "BLOCKMIG-WRITE"
MARKER_ACK = "BLOCKMIG-ACK "  # trailing space: not BLOCKMIG-ACKWRITE
MARKER_ACKWRITE = "BLOCKMIG-ACKWRITE"
ACK_BLOCK = 4096
ACK_LINE = re.compile(r"^BLOCKMIG-ACK (\d+)\r?\n", re.MULTILINE)
# The order DESIGN measured; modules.dep (when present) decides the real order and extras.
VIRTIO_MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "virtio_blk",
)
WANTED_MODULES = ("virtio_pci", "virtio_blk")
BUSYBOX = Path("/bin/busybox")
# Bump when _write_initramfs changes what goes into the archive, so cached guests are rebuilt.
INITRAMFS_LAYOUT = 3

INIT_SCRIPT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /mnt /tmp /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec 0</dev/console 1>/dev/console 2>&1

for m in $(cat /etc/blockmig-modules); do
    insmod "/lib/modules/$m.ko" || echo "blockmig: insmod $m failed"
done

MOUNT=""; WRITE=""; WRITE_MB=1; PAUSE_MS=500; LS_EVERY=5; ACKWRITE=""; ACK_PAUSE_MS=0
for opt in $(cat /proc/cmdline); do
    case "$opt" in
        blockmig.mount=*) MOUNT="${opt#*=}" ;;
        blockmig.write=*) WRITE="$(echo "${opt#*=}" | tr ',' ' ')" ;;
        blockmig.write_mb=*) WRITE_MB="${opt#*=}" ;;
        blockmig.write_pause_ms=*) PAUSE_MS="${opt#*=}" ;;
        blockmig.ls_every=*) LS_EVERY="${opt#*=}" ;;
        blockmig.ackwrite=*) ACKWRITE="$(echo "${opt#*=}" | tr ',' ' ')" ;;
        blockmig.ackwrite_pause_ms=*) ACK_PAUSE_MS="${opt#*=}" ;;
    esac
done

# Wait (up to 10 s) for the disks the command line names.
for dev in $MOUNT $WRITE $ACKWRITE; do
    i=0
    while [ ! -b "/dev/$dev" ] && [ $i -lt 100 ]; do usleep 100000; i=$((i + 1)); done
done

echo "BLOCKMIG-GUEST-UP disks: $(cd /sys/block && ls -d vd* 2>/dev/null | tr '\n' ' ')"

writer() {
    dev="$1"
    size_mb=$(( $(cat /sys/block/$dev/size) / 2048 ))
    echo "BLOCKMIG-WRITE $dev started size_mb=$size_mb"
    pass=0
    while true; do
        mb=0; chunk=0
        while [ $mb -lt $size_mb ]; do
            dd if=/dev/urandom of=/dev/$dev bs=1M count=$WRITE_MB seek=$mb conv=fsync 2>/dev/null \
                || echo "BLOCKMIG-WRITE $dev error at mb=$mb"
            mb=$((mb + WRITE_MB)); chunk=$((chunk + 1))
            [ $((chunk % 16)) -eq 0 ] && echo "BLOCKMIG-WRITE $dev pass=$pass mb=$mb"
            [ "$PAUSE_MS" -gt 0 ] && usleep $((PAUSE_MS * 1000))
        done
        pass=$((pass + 1))
        echo "BLOCKMIG-WRITE $dev pass=$pass mb=0"
    done
}

# Record n: block n (4 KiB) filled with "BMACK %08d\n" lines, written with O_DIRECT and
# fsync (busybox dd has no oflag=sync; conv=fsync makes the kernel send a FLUSH). The ACK is
# printed only after dd succeeded, so every ACK on the console is a durable write.
ackwriter() {
    dev="$1"
    blocks=$(( $(cat /sys/block/$dev/size) / 8 ))
    record="/tmp/ack-$dev"
    echo "BLOCKMIG-ACKWRITE $dev started blocks=$blocks"
    n=0
    while [ $n -lt $blocks ]; do
        yes "BMACK $(printf %08d $n)" | head -c 4096 > "$record"
        if dd if="$record" of="/dev/$dev" bs=4096 seek=$n count=1 oflag=direct conv=fsync,notrunc 2>/dev/null; then
            echo "BLOCKMIG-ACK $n"
            n=$((n + 1))
        else
            echo "BLOCKMIG-ACKWRITE $dev error n=$n"
            usleep 100000
        fi
        [ "$ACK_PAUSE_MS" -gt 0 ] && usleep $((ACK_PAUSE_MS * 1000))
    done
    echo "BLOCKMIG-ACKWRITE $dev done n=$n"
}

for dev in $WRITE; do
    if [ -b "/dev/$dev" ]; then writer "$dev" & else echo "BLOCKMIG-WRITE $dev missing"; fi
done

for dev in $ACKWRITE; do
    if [ -b "/dev/$dev" ]; then ackwriter "$dev" & else echo "BLOCKMIG-ACKWRITE $dev missing"; fi
done

if [ -n "$MOUNT" ]; then
    n=0
    while true; do
        n=$((n + 1))
        if mount -t ext4 -o ro,noload "/dev/$MOUNT" /mnt; then
            echo "BLOCKMIG-LS $n: $(ls /mnt | tr '\n' ' ')"
            umount /mnt
        else
            echo "BLOCKMIG-LS $n: mount of /dev/$MOUNT failed"
        fi
        echo 3 > /proc/sys/vm/drop_caches
        sleep "$LS_EVERY"
    done
fi

while true; do sleep 3600; done
"""


@dataclass(frozen=True)
class GuestBoot:
    kernel: Path
    initrd: Path
    kernel_version: str
    modules: tuple[str, ...]


def guest_cmdline(
    mount: str | None = None,
    write: tuple[str, ...] | list[str] = (),
    write_mb: int = 1,
    write_pause_ms: int = 500,
    ls_every: int = 5,
    ackwrite: tuple[str, ...] | list[str] = (),
    ackwrite_pause_ms: int = 0,
) -> str:
    """Kernel command line for the lab guest (serial console on ttyS0)."""
    parts = ["console=ttyS0", "loglevel=4", "panic=0"]
    if mount:
        parts += [f"blockmig.mount={mount}", f"blockmig.ls_every={ls_every}"]
    if write:
        parts += [
            f"blockmig.write={','.join(write)}",
            f"blockmig.write_mb={write_mb}",
            f"blockmig.write_pause_ms={write_pause_ms}",
        ]
    if ackwrite:
        parts += [f"blockmig.ackwrite={','.join(ackwrite)}", f"blockmig.ackwrite_pause_ms={ackwrite_pause_ms}"]
    return " ".join(parts)


def ack_record(n: int) -> bytes:
    """The 4 KiB block the `ackwrite` guest writes at offset n*4096 (what `yes | head -c` makes)."""
    line = f"BMACK {n:08d}\n".encode()
    return (line * (ACK_BLOCK // len(line) + 1))[:ACK_BLOCK]


def acked_records(serial_text: str) -> list[int]:
    """The n of every complete `BLOCKMIG-ACK <n>` line (a line cut off by a destroy is skipped)."""
    return [int(n) for n in ACK_LINE.findall(serial_text)]


def find_kernel() -> tuple[Path, str]:
    """Debian's cloud kernel (newest if several) and its version."""
    kernels = sorted(Path("/boot").glob("vmlinuz-*-cloud-amd64"))
    if not kernels:
        raise RuntimeError("no /boot/vmlinuz-*-cloud-amd64: apt-get install linux-image-cloud-amd64")
    kernel = kernels[-1]
    return kernel, kernel.name.removeprefix("vmlinuz-")


def _module_files(version: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in (Path("/lib/modules") / version / "kernel").rglob("*.ko*"):
        name = path.name.split(".ko")[0].replace("-", "_")
        found.setdefault(name, path)
    return found


def module_load_order(version: str) -> list[tuple[str, Path]]:
    """Modules needed for virtio block disks, dependencies first, with their files."""
    files = _module_files(version)
    deps: dict[str, list[str]] = {}
    dep_file = Path("/lib/modules") / version / "modules.dep"
    if dep_file.exists():
        for line in dep_file.read_text().splitlines():
            target, _, rest = line.partition(":")
            name = Path(target).name.split(".ko")[0].replace("-", "_")
            deps[name] = [Path(d).name.split(".ko")[0].replace("-", "_") for d in rest.split()]
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        for dep in reversed(deps.get(name, [])):  # modules.dep lists the deepest dependency last
            visit(dep)
        order.append(name)

    if deps:
        for wanted in WANTED_MODULES:
            visit(wanted)
    else:
        order = list(VIRTIO_MODULES)
    # Built-in modules (no file) need no loading.
    return [(name, files[name]) for name in order if name in files]


def _stamp(version: str, modules: list[tuple[str, Path]]) -> str:
    digest = hashlib.sha256(f"{INITRAMFS_LAYOUT}\n{INIT_SCRIPT}".encode())
    digest.update(version.encode())
    for name, path in modules:
        digest.update(f"{name}:{path}:{path.stat().st_size}".encode())
    digest.update(str(BUSYBOX.stat().st_size).encode())
    return digest.hexdigest()[:16]


def _write_initramfs(modules: list[tuple[str, Path]], target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="blockmig-initramfs-") as tmp:
        root = Path(tmp)
        for sub in ("bin", "dev", "proc", "sys", "mnt", "etc", "lib/modules"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        try:
            # So the kernel can give init a console before devtmpfs is mounted.
            os.mknod(root / "dev" / "console", 0o600 | stat.S_IFCHR, os.makedev(5, 1))
        except PermissionError:
            pass  # not root: init re-opens /dev/console after mounting devtmpfs
        shutil.copy2(BUSYBOX, root / "bin" / "busybox")
        os.symlink("busybox", root / "bin" / "sh")
        init = root / "init"
        init.write_text(INIT_SCRIPT)
        init.chmod(0o755)
        for name, path in modules:
            data = path.read_bytes()
            if path.name.endswith(".xz"):
                data = lzma.decompress(data)  # busybox insmod may not read xz
            elif path.name.endswith(".gz"):
                data = gzip.decompress(data)
            elif path.name.endswith(".zst"):
                data = subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
            (root / "lib" / "modules" / f"{name}.ko").write_bytes(data)
        (root / "etc" / "blockmig-modules").write_text("\n".join(name for name, _ in modules) + "\n")
        listing = subprocess.run(["find", ".", "-print0"], cwd=root, capture_output=True, check=True).stdout
        archive = subprocess.run(
            ["cpio", "--null", "--create", "--format=newc", "--owner=0:0", "--quiet"],
            cwd=root,
            input=listing,
            capture_output=True,
            check=True,
        ).stdout
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(gzip.compress(archive, compresslevel=6))
        os.replace(partial, target)


def build_guest(directory: Path) -> GuestBoot:
    """Kernel + initramfs in `directory`, rebuilt only when the kernel or init script changed.

    The kernel is copied so a kernel upgrade on the host does not pull it from under a guest.
    """
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    source_kernel, version = find_kernel()
    modules = module_load_order(version)
    kernel = directory / "vmlinuz"
    initrd = directory / "initrd.gz"
    stamp_file = directory / "stamp"
    stamp = _stamp(version, modules)
    if not (kernel.exists() and initrd.exists() and stamp_file.exists() and stamp_file.read_text() == stamp):
        partial = kernel.with_name("vmlinuz.partial")
        shutil.copyfile(source_kernel, partial)
        os.replace(partial, kernel)
        _write_initramfs(modules, initrd)
        stamp_file.write_text(stamp)
    return GuestBoot(kernel=kernel, initrd=initrd, kernel_version=version, modules=tuple(n for n, _ in modules))
