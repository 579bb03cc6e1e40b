"""The copy's numbers and options: bandwidth, granularity, buffer size, mode and format.
The request form, the API and the limits form show these messages; nothing else encodes
the ranges."""

from __future__ import annotations

import math

from blockmig.errors import Refused

DEST_FORMATS = ("qcow2", "raw")
MODES = ("shallow", "full")


# The limits libvirt and the database put on the numbers. Bandwidth is stored as a
# PositiveIntegerField (PostgreSQL integer) and libvirt takes MiB/s up to 2^43 - 1.
MAX_BANDWIDTH_MIB = 2**31 - 1
MIN_GRANULARITY = 512
MAX_GRANULARITY = 64 * 2**20
MAX_BUF_SIZE = 2**31 - 1  # libvirt's buf-size is an unsigned int of bytes


def check_bandwidth(bandwidth_mib: object) -> int:
    try:
        # Any input (form, API, stored row): what float() cannot read is refused below.
        value = float(bandwidth_mib)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise Refused("Bandwidth must be a whole number of MiB/s (0 = unlimited).", "bandwidth_mib") from None
    if not math.isfinite(value) or value != int(value) or isinstance(bandwidth_mib, bool):
        raise Refused("Bandwidth must be a whole number of MiB/s (0 = unlimited).", "bandwidth_mib")
    if value < 0:
        raise Refused("Bandwidth cannot be negative; use 0 for unlimited.", "bandwidth_mib")
    if value > MAX_BANDWIDTH_MIB:
        raise Refused(f"Bandwidth can be at most {MAX_BANDWIDTH_MIB} MiB/s; use 0 for unlimited.", "bandwidth_mib")
    return int(value)


def check_granularity(granularity: object) -> None:
    if granularity is None:
        return
    if (
        not isinstance(granularity, int)
        or not MIN_GRANULARITY <= granularity <= MAX_GRANULARITY
        or granularity & (granularity - 1)
    ):
        raise Refused("Granularity must be a power of two from 512 B to 64 MiB (512, 1024, … 67108864).", "granularity")


def check_buf_size(buf_size: object) -> None:
    if buf_size is not None and (not isinstance(buf_size, int) or not 1 <= buf_size <= MAX_BUF_SIZE):
        raise Refused(f"Buffer size must be from 1 to {MAX_BUF_SIZE} bytes.", "buf_size")


def check_options(*, mode: str, dest_format: str, granularity: object, buf_size: object) -> None:
    if mode not in MODES:
        raise Refused(f"Mode must be one of {', '.join(MODES)}.", "mode")
    if dest_format not in DEST_FORMATS:
        raise Refused(f"Destination format must be one of {', '.join(DEST_FORMATS)}.", "dest_format")
    check_granularity(granularity)
    check_buf_size(buf_size)
