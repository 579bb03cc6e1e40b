"""The one seam to libvirt: only the modules of this package import it.

Everything that talks to a hypervisor goes through HostConnection (the inventory) or
BlockJobHost (block jobs, and what preflight asks about files and devices), which answer
with the plain records in hosts.records. Errors leave as ConnectFailure (could not reach or
log in) or LibvirtFailure (the host answered no), each with a message an operator can act on.

Callers import from here; the modules behind it, each about one thing:
  errors          the exceptions, and why an open failed
  opening         opening within a timeout, hung opens, keepalive, libvirt's event loop
  connection      one open connection: calls counted, libvirt errors translated
  inventory       HostConnection: a host's facts and all its domains (what hosts.sync stores)
  stopped_chains  backing chains of domains that are not running
  domains         one domain's handle, state, definitions and disks; who uses a file
  capabilities    which block-copy flags a host's versions allow
  files           existence, identity, size, free space and removal of files on a host
  devices         block devices and block-device storage pools as destinations
  definitions     the disk XML blockmig writes (copy destination, retargeted definition)
  block_jobs      BlockJobHost: start, watch, speed, cancel and pivot a copy
"""

from hosts.adapter.block_jobs import BlockJobHost, open_block_jobs
from hosts.adapter.connection import uri_is_local
from hosts.adapter.definitions import NBD_DEFAULT_PORT, disk_source_xml, retarget_definition
from hosts.adapter.errors import ConnectFailure, ConnectionLost, DomainGone, LibvirtFailure
from hosts.adapter.inventory import HostConnection
from hosts.adapter.opening import ensure_event_loop, hung_opens

__all__ = [
    "NBD_DEFAULT_PORT",
    "BlockJobHost",
    "ConnectFailure",
    "ConnectionLost",
    "DomainGone",
    "HostConnection",
    "LibvirtFailure",
    "disk_source_xml",
    "ensure_event_loop",
    "hung_opens",
    "open_block_jobs",
    "retarget_definition",
    "uri_is_local",
]
