"""What a disk's block job and its medium say: how far the job is, in words, and whether a
path is a file, a block device or a network export. Read by the layout and by the pages'
template tags alike, so they live apart from the geometry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hosts.records import BlockJobInfo

if TYPE_CHECKING:  # annotations only: nothing here touches the database
    from hosts.models import Disk


def job_percent(job: BlockJobInfo) -> int | None:
    """None before the job knows its size (end == 0)."""
    if not job.end:
        return None
    return min(100, int(job.cur * 100 / job.end))


def job_words(job: BlockJobInfo) -> str:
    percent = job_percent(job)
    if job.ready:
        return "ready to pivot"
    return "starting" if percent is None else f"copying {percent}%"


# What a layer's detail line starts with, by medium: a file needs no word.
MEDIUM_WORDS = {"file": "", "block": "block device · ", "network": "NBD export · "}


def medium_of(path: str, declared: str = "") -> str:
    """file, block or network: libvirt's disk type where known, else what the path says
    (a mirror target carries only its path: /dev/… is a device, nbd://… an export)."""
    if declared in ("block", "network"):
        return declared
    if "://" in path:
        return "network"
    if path.startswith("/dev/"):
        return "block"
    return "file"


def disk_job(disk: Disk) -> BlockJobInfo | None:
    """The block job stored on a hosts.models.Disk, as the plain record the layout reads."""
    if not disk.job_type:
        return None
    return BlockJobInfo(
        type=disk.job_type,
        cur=disk.job_cur,
        end=disk.job_end,
        mirror_path=disk.job_mirror_path,
        ready=disk.job_ready,
    )
