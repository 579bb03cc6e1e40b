"""The checks that need no host: who asks, the options, the disk list and each
destination's shape (a path under an allowed root or an NBD URL). Cheap, and testable
without libvirt; they run before preflight opens a connection."""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING

from blockmig.errors import Refused
from blockmig.preflight.files import check_path_text, is_inside
from blockmig.preflight.nbd import is_url, parse_nbd_url
from blockmig.preflight.options import check_bandwidth, check_options
from blockmig.preflight.records import DiskRequest
from hosts.models import Hypervisor

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User


def check_permission(user: User | AnonymousUser) -> None:
    if not user.has_perm("blockmig.add_migration"):
        raise Refused("You need the operator role to start a migration.")


def check_destination_shape(destination: str, allowed_roots: list[str], source: str = "") -> str:
    """The normalised destination, if it is an absolute file path under an allowed root or
    an NBD export (nbd://host:port/export). The one place these rules live: the request
    form shows these messages as field errors."""
    if is_url((destination or "").strip()):
        return parse_nbd_url(destination.strip()).url
    check_path_text(destination or "")
    destination = (destination or "").strip()
    if not destination:
        raise Refused("Give the destination file's path.", "destination")
    if not destination.startswith("/"):
        raise Refused("Give an absolute path (starting with /) inside one of the allowed roots.", "destination")
    if ".." in destination.split("/"):
        raise Refused("The path may not contain “..”: name the directory directly.", "destination")
    if destination.endswith("/"):
        raise Refused("Give a file name, not a directory.", "destination")
    path = posixpath.normpath(destination)
    roots = [posixpath.normpath(r) for r in allowed_roots if r]
    if not roots:
        raise Refused("This host has no allowed storage roots yet; an admin must add one to the hypervisor.", "destination")
    if not any(is_inside(path, root) for root in roots):
        raise Refused(f"{path} is outside the allowed roots ({', '.join(roots)}).", "destination")
    if source and path == posixpath.normpath(source):
        raise Refused("The destination is the disk's current source; choose a new file.", "destination")
    return path


def check_disk_list(disks: list[DiskRequest]) -> None:
    if not disks:
        raise Refused("Choose at least one disk to migrate.", "disks")
    targets = [d.target for d in disks]
    if len(set(targets)) != len(targets):
        raise Refused("Each disk can appear only once in a migration.", "disks")
    destinations = [posixpath.normpath(d.destination) for d in disks if d.destination]
    if len(set(destinations)) != len(destinations):
        raise Refused("Two disks cannot be copied to the same destination.", "destination")


def check_request_shape(
    *,
    user: User | AnonymousUser,
    hypervisor: Hypervisor,
    disks: list[DiskRequest],
    mode: str,
    dest_format: str,
    bandwidth_mib: object,
    granularity: object,
    buf_size: object,
) -> list[DiskRequest]:
    check_permission(user)
    check_bandwidth(bandwidth_mib)
    check_options(mode=mode, dest_format=dest_format, granularity=granularity, buf_size=buf_size)
    check_disk_list(disks)
    if not hypervisor.enabled:
        raise Refused(f"{hypervisor.name} is disabled: an admin must enable it first.")
    return [DiskRequest(d.target, check_destination_shape(d.destination, hypervisor.allowed_roots)) for d in disks]
