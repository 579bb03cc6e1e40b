"""Destinations beyond files: the preflight rules for NBD URLs, block devices and their
options, sizes and kinds, and the destination XML libvirt is given. Unit tier: no libvirt
connection (the lab tier, tests/lab/test_migration_block_nbd.py, copies onto both)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from blockmig.errors import Refused
from blockmig.preflight.block import check_destination_size
from blockmig.preflight.kinds import check_kind_options, destination_kind
from blockmig.preflight.nbd import NbdExport, parse_nbd_url
from blockmig.preflight.shape import check_destination_shape
from hosts.adapter import BlockJobHost, disk_source_xml, retarget_definition
from hosts.domxml import parse_disks

ROOTS = ["/srv/backups", "/dev/vg0"]
GiB = 1024**3
MiB = 1024**2


# -- NBD URLs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "export"),
    [
        ("nbd://10.0.0.5:10809/vm1-vda", NbdExport("10.0.0.5", 10809, "vm1-vda")),
        ("nbd://store.example.org/vm1", NbdExport("store.example.org", 10809, "vm1")),  # the IANA port
        ("NBD://Store.Example.org:2000/a/b", NbdExport("store.example.org", 2000, "a/b")),
    ],
)
def test_nbd_url_parsed_and_normalised(text, export):
    assert parse_nbd_url(text) == export
    assert check_destination_shape(text, ROOTS) == export.url


def test_normalised_url_is_the_form_libvirt_reads_back():
    """The stored destination must compare equal to the live XML's source after the pivot."""
    url = parse_nbd_url("nbd://127.0.0.1/exp").url
    disk = ET.fromstring(disk_source_xml(url, "raw", "network"))
    ET.SubElement(disk, "target", dev="vda")
    domain = ET.Element("domain")
    ET.SubElement(domain, "devices").append(disk)
    (record,) = parse_disks(ET.tostring(domain, encoding="unicode"))
    assert record.source == url == "nbd://127.0.0.1:10809/exp"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("nbds://10.0.0.5/vm1", "Only NBD exports over TCP"),
        ("nbd+unix:///vm1?socket=/run/nbd.sock", "Only NBD exports over TCP"),
        ("https://10.0.0.5/vm1", "“https://” is not one"),
        ("nbd://10.0.0.5:0/vm1", "must be a number from 1 to 65535"),
        ("nbd://10.0.0.5:70000/vm1", "must be a number from 1 to 65535"),
        ("nbd://10.0.0.5:port/vm1", "must be a number from 1 to 65535"),
        ("nbd://10.0.0.5:10809", "Name the export after the port: nbd://10.0.0.5:10809/EXPORT"),
        ("nbd://10.0.0.5:10809/", "Name the export after the port"),
        ("nbd:///vm1", "Name the NBD server's host"),
        ("nbd://[::1]:10809/vm1", "IPv6 literals are not supported"),
        ("nbd://bad_host!/vm1", "is not a host name or IPv4 address"),
        ("nbd://user:secret@10.0.0.5/vm1", "no user names or passwords"),
        ("nbd://10.0.0.5/vm1?tls=on", "options such as TLS are not supported"),
        ("nbd://10.0.0.5/vm1#x", "Remove the “?…” or “#…” part"),
        ("nbd://10.0.0.5/my%20disk", "has a character blockmig does not pass on"),
        ("nbd://10.0.0.5/" + "x" * 1010, "at most 1024 characters"),
    ],
)
def test_bad_nbd_url_refused_with_what_to_change(text, words):
    with pytest.raises(Refused) as refused:
        check_destination_shape(text, ROOTS)
    assert words in refused.value.message
    assert refused.value.field == "destination"


def test_control_character_in_url_refused_before_parsing():
    with pytest.raises(Refused, match="control character"):
        check_destination_shape("nbd://10.0.0.5/vm\n1", ROOTS)


def test_file_paths_keep_their_rules():
    assert check_destination_shape("/dev/vg0/lv1", ROOTS) == "/dev/vg0/lv1"
    with pytest.raises(Refused, match="outside the allowed roots"):
        check_destination_shape("/dev/sda", ROOTS)


# -- options and sizes -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["block", "network"])
def test_block_and_network_need_raw_full_and_reuse(kind):
    ok = {"mode": "full", "dest_format": "raw", "reuse": True}
    check_kind_options(kind, "X", **ok)
    with pytest.raises(Refused, match="choose the raw format") as refused:
        check_kind_options(kind, "X", **{**ok, "dest_format": "qcow2"})
    assert refused.value.field == "dest_format"
    with pytest.raises(Refused, match="must be full") as refused:
        check_kind_options(kind, "X", **{**ok, "mode": "shallow"})
    assert refused.value.field == "mode"
    with pytest.raises(Refused, match="tick “reuse”") as refused:
        check_kind_options(kind, "X", **{**ok, "reuse": False})
    assert refused.value.field == "reuse_destination"


def test_file_destinations_take_any_option():
    check_kind_options("file", "/srv/backups/c.qcow2", mode="shallow", dest_format="qcow2", reuse=False)


def test_too_small_destination_named_with_both_sizes():
    with pytest.raises(Refused) as refused:
        check_destination_size("/dev/vg0/lv1", 512 * MiB, GiB, "testvm/vda")
    assert refused.value.message == (
        "/dev/vg0/lv1 is too small: it holds 536870912 bytes (512.0 MiB) and testvm/vda has a virtual size of "
        "1073741824 bytes (1.0 GiB). Give one of exactly 1073741824 bytes."
    )


def test_bigger_destination_refused_because_qemu_needs_the_same_size():
    with pytest.raises(Refused, match="QEMU mirrors only onto a target of the same size"):
        check_destination_size("/dev/vg0/lv1", GiB + 4 * MiB, GiB, "testvm/vda")
    check_destination_size("/dev/vg0/lv1", GiB, GiB, "testvm/vda")


# -- kinds, on this machine's own files (no libvirt call is made for them) -------------------


def local_host() -> BlockJobHost:
    return BlockJobHost("qemu:///system")  # never opened: local kinds need only stat


def test_nbd_url_is_a_network_destination():
    assert destination_kind(local_host(), "nbd://10.0.0.5:10809/vm1") == "network"


def test_regular_file_is_a_file_destination(tmp_path: Path):
    image = tmp_path / "copy.qcow2"
    assert destination_kind(local_host(), str(image)) == "file"
    image.write_bytes(b"")
    assert destination_kind(local_host(), str(image)) == "file"


def test_nothing_but_a_block_device_under_dev():
    """/dev/null is a character device: never a destination, and never a file to create."""
    for path in ("/dev/null", "/dev/bmtest-none/lv0"):
        with pytest.raises(Refused, match=f"There is no block device {path} on the host: create the logical volume"):
            destination_kind(local_host(), path)


# -- the destination XML ----------------------------------------------------------------------


def test_block_destination_xml():
    disk = ET.fromstring(disk_source_xml("/dev/vg0/lv1", "raw", "block"))
    assert disk.get("type") == "block"
    assert disk.find("driver").attrib == {"name": "qemu", "type": "raw"}
    assert disk.find("source").attrib == {"dev": "/dev/vg0/lv1"}


def test_network_destination_xml():
    disk = ET.fromstring(disk_source_xml("nbd://10.0.0.5:2000/vm1-vda", "raw", "network"))
    assert disk.get("type") == "network"
    source = disk.find("source")
    assert source.attrib == {"protocol": "nbd", "name": "vm1-vda"}
    assert source.find("host").attrib == {"name": "10.0.0.5", "port": "2000"}


def test_file_destination_xml_unchanged():
    disk = ET.fromstring(disk_source_xml("/srv/backups/c.qcow2", "qcow2"))
    assert (disk.get("type"), disk.find("source").attrib) == ("file", {"file": "/srv/backups/c.qcow2"})


SAVED = """<domain type='kvm'><name>vm</name><uuid>6f1c2d3e-0000-4000-8000-000000000001</uuid><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/lab/snap2.qcow2'/>
<backingStore type='file'><format type='qcow2'/><source file='/lab/snap1.qcow2'/></backingStore>
<target dev='vda' bus='virtio'/></disk>
<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/lab/data.raw'/>
<target dev='vdb' bus='virtio'/></disk></devices></domain>"""


def test_saved_definition_pointed_at_a_block_device_and_an_export():
    moved = retarget_definition(
        SAVED, {"vda": ("/dev/vg0/lv1", "raw", "block"), "vdb": ("nbd://10.0.0.5:10809/vdb", "raw", "network")}
    )
    disks = {d.target: d for d in parse_disks(moved)}
    assert (disks["vda"].type, disks["vda"].source, disks["vda"].format) == ("block", "/dev/vg0/lv1", "raw")
    assert [layer.path for layer in disks["vda"].chain] == ["/dev/vg0/lv1"]  # the old backing chain is gone
    assert (disks["vdb"].type, disks["vdb"].source) == ("network", "nbd://10.0.0.5:10809/vdb")
    # Everything else of each <disk> stays: the target and bus.
    assert (disks["vda"].bus, disks["vdb"].bus) == ("virtio", "virtio")
