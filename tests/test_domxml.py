"""Domain XML and backing-chain parsing (unit: no libvirt, no database)."""

from hosts.domxml import domain_identity, merge_block_stats, parse_disks, stats_signature
from hosts.records import ChainLayer


def domain(disks: str, name: str = "vm", uuid: str = "11111111-2222-3333-4444-555555555555") -> str:
    return f"<domain type='kvm'><name>{name}</name><uuid>{uuid}</uuid><devices>{disks}</devices></domain>"


QCOW2_CHAIN_OF_3 = """
<disk type='file' device='disk'>
  <driver name='qemu' type='qcow2'/>
  <source file='/lab/snap2.qcow2' index='3'/>
  <backingStore type='file' index='2'>
    <format type='qcow2'/>
    <source file='/lab/snap1.qcow2'/>
    <backingStore type='file' index='1'>
      <format type='qcow2'/>
      <source file='/lab/base.qcow2'/>
      <backingStore/>
    </backingStore>
  </backingStore>
  <target dev='vda' bus='virtio'/>
</disk>"""


def only_disk(disks_xml: str):
    (disk,) = parse_disks(domain(disks_xml))
    return disk


def test_file_disk_raw_has_one_layer_and_no_job():
    disk = only_disk(
        "<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
        "<source file='/var/lib/images/data.img'/><target dev='vdb' bus='virtio'/></disk>"
    )
    assert (disk.target, disk.bus, disk.device, disk.type, disk.format) == ("vdb", "virtio", "disk", "file", "raw")
    assert disk.source == "/var/lib/images/data.img"
    assert disk.chain == (ChainLayer(depth=0, path="/var/lib/images/data.img", format="raw", type="file"),)
    assert disk.job is None


def test_block_disk_source_is_the_device():
    disk = only_disk(
        "<disk type='block' device='disk'><driver name='qemu' type='raw'/>"
        "<source dev='/dev/mapper/vg-root'/><target dev='sda' bus='scsi'/><readonly/></disk>"
    )
    assert (disk.type, disk.source, disk.bus, disk.readonly) == ("block", "/dev/mapper/vg-root", "scsi", True)
    assert [(layer.path, layer.type) for layer in disk.chain] == [("/dev/mapper/vg-root", "block")]


def test_network_disk_source_names_protocol_host_and_image():
    disk = only_disk(
        "<disk type='network' device='disk'><driver name='qemu' type='raw'/>"
        "<source protocol='rbd' name='pool/image-1'><host name='mon1.example.org' port='6789'/></source>"
        "<target dev='vdc' bus='virtio'/></disk>"
    )
    assert disk.type == "network"
    assert disk.source == "rbd://mon1.example.org:6789/pool/image-1"
    assert disk.chain[0].type == "network"


def test_qcow2_without_backing_is_a_chain_of_one():
    disk = only_disk(
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        "<source file='/lab/alone.qcow2'/><backingStore/><target dev='vda' bus='virtio'/></disk>"
    )
    assert [(layer.depth, layer.path, layer.format) for layer in disk.chain] == [(0, "/lab/alone.qcow2", "qcow2")]


def test_qcow2_with_one_backing_file():
    disk = only_disk(
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/lab/top.qcow2'/>"
        "<backingStore type='file'><format type='raw'/><source file='/lab/base.raw'/><backingStore/></backingStore>"
        "<target dev='vda' bus='virtio'/></disk>"
    )
    assert [(layer.path, layer.format) for layer in disk.chain] == [("/lab/top.qcow2", "qcow2"), ("/lab/base.raw", "raw")]


def test_chain_of_three_is_active_first_base_last():
    disk = only_disk(QCOW2_CHAIN_OF_3)
    assert [(layer.depth, layer.path, layer.format, layer.missing) for layer in disk.chain] == [
        (0, "/lab/snap2.qcow2", "qcow2", False),
        (1, "/lab/snap1.qcow2", "qcow2", False),
        (2, "/lab/base.qcow2", "qcow2", False),
    ]


def test_middle_layer_without_source_is_marked_missing_and_the_chain_continues():
    disk = only_disk(
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/lab/top.qcow2'/>"
        "<backingStore type='file'><format type='qcow2'/>"
        "<backingStore type='file'><format type='qcow2'/><source file='/lab/base.qcow2'/><backingStore/></backingStore>"
        "</backingStore><target dev='vda' bus='virtio'/></disk>"
    )
    assert [(layer.depth, layer.path, layer.missing) for layer in disk.chain] == [
        (0, "/lab/top.qcow2", False),
        (1, "", True),
        (2, "/lab/base.qcow2", False),
    ]


def test_disk_without_source_has_no_chain():
    disk = only_disk(
        "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/><target dev='sdb' bus='sata'/><readonly/></disk>"
    )
    assert (disk.device, disk.source, disk.chain) == ("cdrom", "", ())


def test_disk_without_target_is_skipped():
    assert parse_disks(domain("<disk type='file'><source file='/x.img'/></disk>")) == ()


def test_spaces_and_unicode_survive_in_paths_and_domain_names():
    path = "/srv/VM images/Ärger über Größe/disk 1 — ✓.qcow2"
    xml = domain(
        f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{path}'/>"
        "<backingStore type='file'><format type='qcow2'/><source file='/srv/VM images/базовый образ.qcow2'/>"
        "<backingStore/></backingStore><target dev='vda' bus='virtio'/></disk>",
        name="web server ünïcødé 01",
        uuid="aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    )
    (disk,) = parse_disks(xml)
    assert disk.source == path
    assert [layer.path for layer in disk.chain] == [path, "/srv/VM images/базовый образ.qcow2"]
    assert domain_identity(xml) == ("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "web server ünïcødé 01")


# ---- odd chains ---------------------------------------------------------------------------


def test_inactive_xml_without_any_backing_store_is_a_chain_of_one():
    """The inactive definition names no <backingStore> at all (libvirt probes it at start)."""
    disk = only_disk(
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        "<source file='/lab/snap2.qcow2'/><target dev='vda' bus='virtio'/></disk>"
    )
    assert disk.chain == (ChainLayer(depth=0, path="/lab/snap2.qcow2", format="qcow2", type="file"),)


def test_network_layer_in_the_chain_is_named_by_protocol_host_and_export():
    disk = only_disk(
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/lab/top.qcow2'/>"
        "<backingStore type='network'><format type='raw'/>"
        "<source protocol='nbd' name='golden'><host name='nbd1.example.org' port='10809'/></source>"
        "<backingStore/></backingStore><target dev='vda' bus='virtio'/></disk>"
    )
    assert [(layer.path, layer.type, layer.format, layer.missing) for layer in disk.chain] == [
        ("/lab/top.qcow2", "file", "qcow2", False),
        ("nbd://nbd1.example.org:10809/golden", "network", "raw", False),
    ]


def test_network_source_without_port_or_host():
    with_host = only_disk(
        "<disk type='network' device='disk'><driver name='qemu' type='raw'/>"
        "<source protocol='nbd' name='export'><host name='nbd1'/></source><target dev='vdb'/></disk>"
    )
    hostless = only_disk(
        "<disk type='network' device='disk'><driver name='qemu' type='raw'/>"
        "<source protocol='rbd' name='pool/img'/><target dev='vdc'/></disk>"
    )
    assert with_host.source == "nbd://nbd1/export"
    assert hostless.source == "rbd:///pool/img"  # ceph.conf names the monitors


def test_block_layer_in_the_chain_is_its_device():
    disk = only_disk(
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/lab/overlay.qcow2'/>"
        "<backingStore type='block'><format type='raw'/><source dev='/dev/vg0/golden'/><backingStore/></backingStore>"
        "<target dev='vda' bus='virtio'/></disk>"
    )
    assert [(layer.depth, layer.path, layer.type) for layer in disk.chain] == [
        (0, "/lab/overlay.qcow2", "file"),
        (1, "/dev/vg0/golden", "block"),
    ]


def test_layer_whose_source_names_no_file_is_missing_at_the_end_too():
    disk = only_disk(
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/lab/top.qcow2'/>"
        "<backingStore type='file'><format type='qcow2'/><source/><backingStore/></backingStore>"
        "<target dev='vda' bus='virtio'/></disk>"
    )
    assert [(layer.depth, layer.path, layer.missing) for layer in disk.chain] == [
        (0, "/lab/top.qcow2", False),
        (1, "", True),
    ]


def test_volume_source_in_a_pool_is_named_by_its_volume():
    disk = only_disk(
        "<disk type='volume' device='disk'><driver name='qemu' type='qcow2'/>"
        "<source pool='images' volume='vm1.qcow2'/><target dev='vda' bus='virtio'/></disk>"
    )
    assert (disk.type, disk.source, disk.chain[0].type) == ("volume", "vm1.qcow2", "volume")


def test_mirror_does_not_join_the_chain():
    """During a copy the live XML carries <mirror> beside the chain: the copy's own backing
    store describes the destination, not a layer of the disk."""
    disk = only_disk(
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/lab/snap2.qcow2'/>"
        "<backingStore type='file'><format type='qcow2'/><source file='/lab/snap1.qcow2'/><backingStore/></backingStore>"
        "<mirror type='file' job='copy' ready='yes'><format type='qcow2'/><source file='/b/copy.qcow2'/>"
        "<backingStore type='file'><format type='qcow2'/><source file='/lab/snap1.qcow2'/><backingStore/></backingStore>"
        "</mirror><target dev='vda' bus='virtio'/></disk>"
    )
    assert [layer.path for layer in disk.chain] == ["/lab/snap2.qcow2", "/lab/snap1.qcow2"]
    assert (disk.job.mirror_path, disk.job.ready) == ("/b/copy.qcow2", True)


def test_mirror_to_a_block_device():
    job = only_disk(
        "<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/lab/a.raw'/>"
        "<mirror type='block' job='copy' ready='no'><format type='raw'/><source dev='/dev/vg1/a'/></mirror>"
        "<target dev='vda' bus='virtio'/></disk>"
    ).job
    assert (job.mirror_path, job.mirror_format, job.ready) == ("/dev/vg1/a", "raw", False)


def test_active_commit_mirror_names_its_job():
    job = only_disk(
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/lab/snap2.qcow2'/>"
        "<mirror type='file' job='active-commit' ready='yes'><format type='qcow2'/><source file='/lab/snap1.qcow2'/></mirror>"
        "<target dev='vda' bus='virtio'/></disk>"
    ).job
    assert (job.type, job.mirror_path, job.ready) == ("active-commit", "/lab/snap1.qcow2", True)


def test_a_mirror_being_pivoted_or_aborted_is_not_ready():
    """Invariant 1: only ready='yes' is ready; libvirt writes 'pivot' and 'abort' while it
    is ending the job, and neither may be approved."""
    for ready in ("pivot", "abort", ""):
        assert only_disk(mirror_disk(ready)).job.ready is False


def mirror_disk(ready: str) -> str:
    return (
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/lab/snap2.qcow2'/>"
        f"<mirror type='file' job='copy' ready='{ready}'><format type='qcow2'/>"
        "<source file='/lab/backups/copy.qcow2'/><backingStore/></mirror>"
        "<target dev='vda' bus='virtio'/></disk>"
    )


def test_mirror_ready_yes_is_a_ready_copy_job_with_its_destination():
    job = only_disk(mirror_disk("yes")).job
    assert (job.type, job.mirror_path, job.mirror_format, job.ready) == ("copy", "/lab/backups/copy.qcow2", "qcow2", True)


def test_mirror_ready_no_is_not_ready():
    job = only_disk(mirror_disk("no")).job
    assert job.type == "copy" and job.mirror_path == "/lab/backups/copy.qcow2"
    assert job.ready is False


def test_mirror_in_old_attribute_form():
    job = only_disk(
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/a.qcow2'/>"
        "<mirror file='/b.qcow2' format='raw' job='copy'/><target dev='vda' bus='virtio'/></disk>"
    ).job
    assert (job.mirror_path, job.mirror_format, job.ready) == ("/b.qcow2", "raw", False)


def test_merge_block_stats_adds_capacity_and_allocation_per_layer():
    disks = parse_disks(domain(QCOW2_CHAIN_OF_3))
    gib = 1 << 30
    stats = {
        "block.count": 3,
        "block.0.name": "vda",
        "block.0.path": "/lab/snap2.qcow2",
        "block.0.capacity": gib,
        "block.0.allocation": 200_704,
        "block.1.name": "vda",
        "block.1.path": "/lab/snap1.qcow2",
        "block.1.backingIndex": 2,
        "block.1.capacity": gib,
        "block.1.allocation": 397_312,
        "block.2.name": "vda",
        "block.2.path": "/lab/base.qcow2",
        "block.2.backingIndex": 1,
        "block.2.capacity": gib,
    }
    (disk,) = merge_block_stats(disks, stats)
    assert [(layer.capacity, layer.allocation) for layer in disk.chain] == [(gib, 200_704), (gib, 397_312), (gib, None)]
    assert [layer.path for layer in disk.chain] == ["/lab/snap2.qcow2", "/lab/snap1.qcow2", "/lab/base.qcow2"]


def test_merge_block_stats_prefers_the_size_on_the_host_to_the_highest_written_offset():
    """What libvirt 9 reports for the seed chain: allocation 0 on every layer, physical real."""
    (disk,) = merge_block_stats(
        parse_disks(domain(QCOW2_CHAIN_OF_3)),
        {
            "block.count": 2,
            "block.0.name": "vda",
            "block.0.path": "/lab/snap2.qcow2",
            "block.0.allocation": 0,
            "block.0.physical": 528_384,
            "block.1.name": "vda",
            "block.1.path": "/lab/snap1.qcow2",
            "block.1.allocation": 0,
            "block.1.physical": 528_384,
        },
    )
    assert [layer.allocation for layer in disk.chain] == [528_384, 528_384, None]


def test_merge_block_stats_leaves_layers_it_has_no_stats_for():
    disks = parse_disks(domain(QCOW2_CHAIN_OF_3))
    assert merge_block_stats(disks, {"block.count": 0}) == disks


def test_stats_signature_changes_when_a_disk_path_or_state_changes():
    stats = {"state.state": 1, "block.count": 1, "block.0.name": "vda", "block.0.path": "/lab/snap2.qcow2"}
    assert stats_signature(stats) == stats_signature(dict(stats))
    assert stats_signature(stats) != stats_signature({**stats, "block.0.path": "/backups/copy.qcow2"})
    assert stats_signature(stats) != stats_signature({**stats, "state.state": 3})
