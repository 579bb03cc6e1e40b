"""What blockmig can learn about an NBD export without libvirt: its size.

An export (qemu-nbd serving an image over TCP) has no identity a client can ask for, only a
size, which `qemu-img info` reads over the NBD protocol from this machine. qemu-nbd serves
one client at a time unless started with --shared, so this is asked before the copy, never
while QEMU holds the export.
"""

from __future__ import annotations

import json
import subprocess


class NbdUnreadable(Exception):
    """The export could not be read; the message says what qemu-img reported."""


def nbd_export_size(url: str, timeout: float) -> int:
    """The export's size in bytes, as `qemu-img info` reads it over NBD."""
    try:
        done = subprocess.run(
            ["qemu-img", "info", "--output=json", url], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise NbdUnreadable(
            f"no answer within {timeout:g} s; qemu-nbd serves one client at a time unless started with --shared, "
            "so another client may hold it"
        ) from None
    except OSError as error:
        raise NbdUnreadable(f"qemu-img could not run: {error}") from None
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        raise NbdUnreadable(lines[-1] if lines else f"qemu-img exited with {done.returncode}")
    try:
        return int(json.loads(done.stdout)["virtual-size"])
    except (ValueError, KeyError, TypeError):
        raise NbdUnreadable("qemu-img gave no size for it") from None
