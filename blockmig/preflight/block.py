"""A block device (an LVM logical volume, a partition, a LUN) as a destination: free, not
the disk's own, and of exactly the disk's virtual size (a rule NBD exports share)."""

from __future__ import annotations

import os

from blockmig.errors import Refused
from blockmig.progress import format_bytes
from hosts.adapter import BlockJobHost


def check_destination_size(destination: str, size: int, capacity: int, where: str) -> None:
    """The device or export must hold exactly the disk's virtual size."""
    if size < capacity:
        raise Refused(
            f"{destination} is too small: it holds {size} bytes ({format_bytes(size)}) and {where} has a virtual size of "
            f"{capacity} bytes ({format_bytes(capacity)}). Give one of exactly {capacity} bytes.",
            "destination",
        )
    if size > capacity:
        raise Refused(
            f"{destination} holds {size} bytes ({format_bytes(size)}), more than the virtual size of {where}, "
            f"{capacity} bytes ({format_bytes(capacity)}): QEMU mirrors only onto a target of the same size. Give one of "
            f"exactly {capacity} bytes.",
            "destination",
        )


def check_block_destination(host: BlockJobHost, destination: str, chain: list[str], capacity: int, where: str) -> None:
    device = host.block_device(destination)
    if device is None:
        raise Refused(f"{destination} is no longer a block device on the host.", "destination")
    if host.is_local:
        real = os.path.realpath(destination)
        if real in [os.path.realpath(p) for p in chain]:
            raise Refused(f"{destination} is {where}'s own device (or a layer of its chain): choose another.", "destination")
    elif destination in chain:
        raise Refused(f"{destination} is {where}'s own device (or a layer of its chain): choose another.", "destination")
    if device.busy:
        raise Refused(f"{destination} is in use on the host ({device.busy}): choose a free device.", "destination")
    if device.size is None:
        raise Refused(
            f"The host cannot tell the size of {destination}: put its volume group under a libvirt storage pool "
            "(type logical) so blockmig can check it.",
            "destination",
        )
    check_destination_size(destination, device.size, capacity, where)
