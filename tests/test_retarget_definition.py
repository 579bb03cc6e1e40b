"""The saved definition, pointed at the copies (hosts.adapter.retarget_definition): what the
engine defines again after an undefine/copy/redefine pivot, or after a failure once some
disks pivoted. Unit: XML strings in and out, no libvirt."""

import xml.etree.ElementTree as ET

from hosts.adapter import retarget_definition
from hosts.domxml import domain_identity, parse_disks

SAVED = """<domain type='kvm'>
  <name>testvm</name>
  <uuid>6f1c2d3e-0000-4000-8000-000000000001</uuid>
  <memory unit='KiB'>262144</memory>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none' discard='unmap'/>
      <source file='/lab/snap2.qcow2'/>
      <backingStore type='file'>
        <format type='qcow2'/>
        <source file='/lab/snap1.qcow2'/>
        <backingStore/>
      </backingStore>
      <target dev='vda' bus='virtio'/>
      <serial>root-disk</serial>
      <boot order='1'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw'/>
      <source dev='/dev/vg0/data'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/srv/iso/install.iso'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <interface type='network'><source network='default'/></interface>
  </devices>
</domain>"""


def disks_of(xml: str) -> dict:
    return {d.target: d for d in parse_disks(xml)}


def disk_element(xml: str, target: str) -> ET.Element:
    return next(d for d in ET.fromstring(xml).findall("./devices/disk") if d.find("target").get("dev") == target)


def test_moved_disk_points_at_its_copy_with_the_copys_format():
    out = disks_of(retarget_definition(SAVED, {"vda": ("/backups/copy.qcow2", "qcow2")}))
    assert (out["vda"].source, out["vda"].format, out["vda"].type) == ("/backups/copy.qcow2", "qcow2", "file")


def test_the_old_backing_chain_is_dropped_so_qemu_reads_it_from_the_copy():
    """A shallow copy's qcow2 header names its backing file; a stale <backingStore> would
    contradict it (and a full copy has none)."""
    out = retarget_definition(SAVED, {"vda": ("/backups/copy.qcow2", "qcow2")})
    assert disk_element(out, "vda").find("backingStore") is None
    assert [layer.path for layer in disks_of(out)["vda"].chain] == ["/backups/copy.qcow2"]


def test_a_block_disk_moved_to_a_file_becomes_a_file_disk():
    out = retarget_definition(SAVED, {"vdb": ("/backups/data.raw", "raw")})
    element = disk_element(out, "vdb")
    assert element.get("type") == "file"
    assert [(s.get("file"), s.get("dev")) for s in element.findall("source")] == [("/backups/data.raw", None)]


def test_the_source_follows_the_driver_and_the_rest_of_the_disk_is_kept():
    element = disk_element(retarget_definition(SAVED, {"vda": ("/backups/copy.raw", "raw")}), "vda")
    assert [child.tag for child in element] == ["driver", "source", "target", "serial", "boot", "address"]
    driver = element.find("driver")
    assert (driver.get("type"), driver.get("cache"), driver.get("discard")) == ("raw", "none", "unmap")
    assert element.find("address").get("slot") == "0x04" and element.find("boot").get("order") == "1"


def test_disks_not_moved_and_the_domain_are_left_as_they_were():
    out = retarget_definition(SAVED, {"vda": ("/backups/copy.qcow2", "qcow2")})
    before, after = disks_of(SAVED), disks_of(out)
    assert after["vdb"] == before["vdb"] and after["sda"] == before["sda"]
    assert domain_identity(out) == ("6f1c2d3e-0000-4000-8000-000000000001", "testvm")
    assert ET.fromstring(out).find("./devices/interface/source").get("network") == "default"


def test_no_moves_changes_no_disk():
    assert disks_of(retarget_definition(SAVED, {})) == disks_of(SAVED)


def test_several_disks_move_together():
    out = disks_of(retarget_definition(SAVED, {"vda": ("/b/a.qcow2", "qcow2"), "vdb": ("/b/b.raw", "raw")}))
    assert (out["vda"].source, out["vdb"].source) == ("/b/a.qcow2", "/b/b.raw")


def test_a_disk_without_a_driver_gets_one():
    saved = (
        "<domain><name>vm</name><devices><disk type='file' device='disk'><source file='/a.img'/>"
        "<target dev='vda'/></disk></devices></domain>"
    )
    element = disk_element(retarget_definition(saved, {"vda": ("/b/a.qcow2", "qcow2")}), "vda")
    assert [child.tag for child in element] == ["target", "driver", "source"]
    driver = element.find("driver")
    assert (driver.get("name"), driver.get("type")) == ("qemu", "qcow2")


def test_a_disk_without_a_target_is_skipped():
    saved = (
        "<domain><devices><disk type='file'><source file='/x.img'/></disk>"
        "<disk type='file'><source file='/y.img'/><target dev='vda'/></disk></devices></domain>"
    )
    out = ET.fromstring(retarget_definition(saved, {"vda": ("/b/y.qcow2", "qcow2")}))
    assert [d.find("source").get("file") for d in out.findall("./devices/disk")] == ["/x.img", "/b/y.qcow2"]


def test_paths_with_spaces_quotes_and_unicode_survive():
    path = '/srv/VM images/Größe "neu" & <alt>.qcow2'
    out = retarget_definition(SAVED, {"vda": (path, "qcow2")})
    assert disks_of(out)["vda"].source == path
