"""Checks a migration request must pass before anything changes.

Each problem is a Refused with a message that says what to fix and the form field it
belongs to. The checks that need no host run first (cheap, and testable without libvirt);
then one connection answers the rest. The engine runs the host checks again before it
starts the copy, because time passes between a request and a worker picking it up.

The rules live in one module each: options (bandwidth, granularity, buffer size, mode,
format), files, block, nbd and kinds (destinations), shape (the checks without a host) and
host (the checks one connection answers). This package's preflight_request runs them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from blockmig.errors import Refused
from blockmig.preflight.host import check_on_host
from blockmig.preflight.records import DiskRequest, Plan
from blockmig.preflight.shape import check_request_shape
from hosts.adapter import ConnectFailure, LibvirtFailure, open_block_jobs
from hosts.models import Hypervisor

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User


def preflight_request(
    *,
    user: User | AnonymousUser,
    hypervisor: Hypervisor,
    domain_uuid: str,
    disks: list[DiskRequest],
    mode: str = "shallow",
    dest_format: str = "qcow2",
    reuse_destination: bool = False,
    bandwidth_mib: object = 0,
    synchronous_writes: bool = False,
    granularity: object = None,
    buf_size: object = None,
    timeout: float = 10.0,
) -> Plan:
    """Everything a request must pass. Raises Refused; never changes anything."""
    normalised = check_request_shape(
        user=user,
        hypervisor=hypervisor,
        disks=disks,
        mode=mode,
        dest_format=dest_format,
        bandwidth_mib=bandwidth_mib,
        granularity=granularity,
        buf_size=buf_size,
    )
    try:
        with open_block_jobs(hypervisor.uri, timeout) as host:
            return check_on_host(
                host,
                hypervisor=hypervisor,
                domain_uuid=domain_uuid,
                disks=normalised,
                reuse_destination=reuse_destination,
                synchronous_writes=synchronous_writes,
                allowed_roots=hypervisor.allowed_roots,
                mode=mode,
                dest_format=dest_format,
            )
    except ConnectFailure as failure:
        raise Refused(f"{hypervisor.name} is unreachable: {failure.message}") from None
    except LibvirtFailure as failure:
        raise Refused(f"{hypervisor.name} refused a preflight check: {failure}") from None
