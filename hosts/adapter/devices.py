"""Block devices as copy destinations: one device by path (its size, identity, and whether
the kernel holds it), and the storage pools whose volumes are block devices, for the
request form to offer."""

from __future__ import annotations

import errno
import os
import stat
import xml.etree.ElementTree as ET

import libvirt

from hosts.adapter.errors import LibvirtFailure
from hosts.adapter.files import HostFiles
from hosts.records import BlockDevice, BlockPool, StorageVolume

# Storage pool types whose volumes are block devices, in the order the form offers them.
BLOCK_POOL_TYPES = ("logical", "disk", "iscsi", "scsi", "mpath")


def _device_size(path: str) -> int | None:
    """A block device's size in bytes: the end of the device, as a seek finds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def _device_busy(path: str) -> str:
    """Why the kernel holds a local block device, or "". An exclusive open fails with EBUSY
    while the device is mounted, swapped on, or part of an LVM, md or dm device; a QEMU
    that has it open does not hold it that way (users_of and the inventory see those)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.EBUSY:
            return "the kernel holds it (mounted, swap, or part of an LVM, md or device-mapper device)"
        return ""
    os.close(fd)
    return ""


class BlockDevices(HostFiles):
    """What a connection can tell about the block devices on its host."""

    def block_device(self, path: str) -> BlockDevice | None:
        """The block device at `path` (links followed, as for /dev/<vg>/<lv> → ../dm-3), or
        None when the path names something else or nothing. Locally: its size, its device
        number as identity, and whether the kernel holds it (mounted, an LVM or md member);
        remotely: a storage volume of block type that a pool reports."""
        if self.is_local:
            try:
                st = os.stat(path)
            except OSError:
                return None
            if not stat.S_ISBLK(st.st_mode):
                return None
            return BlockDevice(
                path=path,
                size=_device_size(path),
                identity=f"rdev:{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}",
                busy=_device_busy(path),
            )
        try:
            volume = self.open_conn.storageVolLookupByPath(path)
            kind, capacity, _allocation = volume.info()
            key = volume.key()
        except libvirt.libvirtError:
            return None
        if kind != libvirt.VIR_STORAGE_VOL_BLOCK:
            return None
        return BlockDevice(path=path, size=int(capacity), identity=f"volume:{key}")

    def block_pools(self) -> list[BlockPool]:
        """Active storage pools whose volumes are block devices (volume groups first), each
        with its volumes, for the request form to offer. Pools that cannot be read are left out."""
        pools = []
        try:
            listed = self._call(self.open_conn.listAllStoragePools, libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
        except LibvirtFailure:
            return []  # a driver without storage pools
        for pool in listed:
            try:
                root = ET.fromstring(self._call(pool.XMLDesc, 0))
                kind = root.get("type", "")
                if kind not in BLOCK_POOL_TYPES:
                    continue
                self._call(pool.refresh, 0)  # volumes made outside libvirt (lvcreate) show up too
                volumes = []
                for volume in self._call(pool.listAllVolumes, 0):
                    _type, capacity, _allocation = self._call(volume.info)
                    volumes.append(StorageVolume(volume.name(), volume.path(), int(capacity), volume.key()))
                _state, capacity, _allocation, available = self._call(pool.info)
            except (LibvirtFailure, ET.ParseError):
                continue
            source = root.findtext("./source/name") or (root.find("./source/device") or ET.Element("d")).get("path") or ""
            pools.append(
                BlockPool(
                    name=pool.name(),
                    type=kind,
                    source=source,
                    target=root.findtext("./target/path", ""),
                    capacity=int(capacity),
                    available=int(available),
                    volumes=tuple(sorted(volumes, key=lambda v: v.path)),
                )
            )
        return sorted(pools, key=lambda p: (BLOCK_POOL_TYPES.index(p.type), p.name))
