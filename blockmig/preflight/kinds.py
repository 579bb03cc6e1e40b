"""Which kind of destination a request names (file, block device or NBD export) and the
options each kind takes."""

from __future__ import annotations

from blockmig.errors import Refused
from blockmig.preflight.nbd import is_network_destination
from hosts.adapter import BlockJobHost

# -- destinations beyond files: block devices and NBD exports ---------------------------
#
# A block device (an LVM logical volume, a partition, a LUN) or an NBD export is the disk
# itself: the copy is raw and full, onto a device or export that exists already (libvirt's
# REUSE_EXT), of exactly the source's virtual size: QEMU's mirror cannot grow a device, and
# refused a bigger one too in the lab (QEMU 7.2). blockmig never creates or removes either.

DEVICE_DIRECTORY = "/dev/"  # nothing under it is ever a regular file a copy may create


def destination_medium(host: BlockJobHost, destination: str) -> str:
    """file, block or network, as the host sees the destination now."""
    if is_network_destination(destination):
        return "network"
    if host.block_device(destination) is not None:
        return "block"
    return "file"


def destination_kind(host: BlockJobHost, destination: str) -> str:
    """file, block or network, for a request. A path under /dev/ must be a block device the
    host reports: a copy never creates a regular file there (blockmig makes no LVs)."""
    kind = destination_medium(host, destination)
    if kind == "file" and destination.startswith(DEVICE_DIRECTORY):
        raise Refused(
            f"There is no block device {destination} on the host: create the logical volume first, of exactly the "
            "disk's virtual size (lvcreate -L SIZEb -n NAME VG), then tick “reuse”.",
            "destination",
        )
    return kind


def check_kind_options(kind: str, destination: str, *, mode: str, dest_format: str, reuse: bool) -> None:
    """A block device or an NBD export takes a raw, full copy onto what exists already."""
    if kind == "file":
        return
    what = "a block device" if kind == "block" else "an NBD export"
    if dest_format != "raw":
        raise Refused(
            f"{destination} is {what}: the copy is written onto it as raw, so choose the raw format (and a full copy).",
            "dest_format",
        )
    if mode != "full":
        raise Refused(
            f"A copy onto {what} must be full: raw {destination} cannot point at the backing chain. Choose a full copy.",
            "mode",
        )
    if not reuse:
        raise Refused(
            f"{destination} is {what} that exists already: tick “reuse” (blockmig copies onto it and never creates or "
            "removes it).",
            "reuse_destination",
        )
