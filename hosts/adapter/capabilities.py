"""Which block-copy flags a host supports, from its driver and its libvirt and QEMU versions."""

from __future__ import annotations

from typing import Self

from hosts.adapter.connection import Connection

# Flag availability by libvirt version (docs: virDomainBlockCopyFlags).
TRANSIENT_JOB_SINCE = 4_005_000
SYNCHRONOUS_WRITES_SINCE = 8_000_000
QEMU_WRITE_BLOCKING_SINCE = 3_000_000


class Capabilities(Connection):
    """What a connection can tell about the flags its host's block copies may use."""

    def __enter__(self) -> Self:
        self._versions_seen: tuple[str, int, int] | None = None
        return super().__enter__()

    def _versions(self) -> tuple[str, int, int]:
        """(driver, libvirt version, hypervisor version), asked once per connection: they
        cannot change while it is open, and a copy's start waits on every round trip."""
        seen = getattr(self, "_versions_seen", None)
        if seen is None:
            seen = self._versions_seen = (
                self._call(self.open_conn.getType),
                self._call(self.open_conn.getLibVersion),
                self._call(self.open_conn.getVersion),
            )
        return seen

    def supports_transient_job(self) -> bool:
        driver, lib_version, _hv = self._versions()
        return driver == "QEMU" and lib_version >= TRANSIENT_JOB_SINCE

    def supports_sync_writes(self) -> bool:
        driver, lib_version, hv_version = self._versions()
        return driver == "QEMU" and lib_version >= SYNCHRONOUS_WRITES_SINCE and hv_version >= QEMU_WRITE_BLOCKING_SINCE
