"""Files on a host as a migration needs them: whether a path or directory exists, which
file a path is now, its size, the free space where a copy would be written, and removing
a destination blockmig made. Locally through the filesystem; remotely through the host's
storage pools and volumes (all a remote host lets blockmig see)."""

from __future__ import annotations

import os
import posixpath
import stat
import xml.etree.ElementTree as ET

import libvirt

from hosts.adapter.connection import Connection, uri_is_local
from hosts.adapter.errors import LibvirtFailure


class HostFiles(Connection):
    """What a connection can tell and do about the files on its host."""

    @property
    def is_local(self) -> bool:
        return uri_is_local(self.uri)

    def path_exists(self, path: str) -> bool | None:
        """Whether a file exists on the host. Local hosts: the filesystem; remote hosts: a
        storage volume with that path; None when a remote host cannot tell."""
        if self.is_local:
            return os.path.lexists(path)
        try:
            self.open_conn.storageVolLookupByPath(path)
            return True
        except libvirt.libvirtError:
            return None

    def directory_exists(self, path: str) -> bool | None:
        """Whether a directory exists on the host; for remote hosts only when a storage pool
        targets it, else None (unknown)."""
        if self.is_local:
            return os.path.isdir(path)
        for pool in self._call(self.open_conn.listAllStoragePools, 0):
            try:
                target = ET.fromstring(pool.XMLDesc(0)).findtext("./target/path", "")
            except libvirt.libvirtError:
                continue
            if posixpath.normpath(target) == posixpath.normpath(path):
                return True
        return None

    def file_identity(self, path: str) -> str:
        """Which file `path` is now: "dev:inode" locally, the storage volume's key remotely,
        "" when the host cannot tell (no pool holds the path). Raises FileNotFoundError
        when a local path names nothing."""
        if self.is_local:
            st = os.stat(path)
            return f"{st.st_dev}:{st.st_ino}"
        try:
            return "volume:" + self.open_conn.storageVolLookupByPath(path).key()
        except libvirt.libvirtError:
            return ""

    def file_size(self, path: str) -> int | None:
        """Bytes on the host (local only; None where the host cannot tell)."""
        if not self.is_local:
            return None
        return os.stat(path).st_size

    def free_space(self, path: str) -> tuple[int, int] | None:
        """(free, total) bytes where `path` would be written: the local filesystem's statvfs,
        or on a remote host the libvirt storage pool whose target holds it (None when no
        pool does)."""
        if not self.is_local:
            return self._pool_space(path)
        try:
            st = os.statvfs(path if os.path.isdir(path) else os.path.dirname(path))
        except OSError:
            return None
        return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize

    def _pool_space(self, path: str) -> tuple[int, int] | None:
        wanted = posixpath.normpath(path)
        best: tuple[int, libvirt.virStoragePool] | None = None
        for pool in self._call(self.open_conn.listAllStoragePools, 0):
            try:
                target = posixpath.normpath(ET.fromstring(pool.XMLDesc(0)).findtext("./target/path", "") or "/nonexistent")
            except libvirt.libvirtError:
                continue
            if (wanted == target or wanted.startswith(target.rstrip("/") + "/")) and (best is None or len(target) > best[0]):
                best = (len(target), pool)
        if best is None:
            return None
        try:
            _state, capacity, _allocation, available = best[1].info()
        except libvirt.libvirtError:
            return None
        return int(available), int(capacity)

    def remove_file(self, path: str) -> None:
        """Delete a destination blockmig created (local: unlink; remote: its storage volume).
        Never a device: blockmig only copies onto block devices someone else made."""
        if self.is_local:
            try:
                if stat.S_ISBLK(os.stat(path).st_mode):
                    raise LibvirtFailure(f"{path} is a block device: blockmig never removes one.")
                os.unlink(path)
            except FileNotFoundError:
                pass
            return
        try:
            self.open_conn.storageVolLookupByPath(path).delete(0)
        except libvirt.libvirtError as error:
            raise LibvirtFailure(f"Could not remove {path}: {error.get_error_message()}") from error
