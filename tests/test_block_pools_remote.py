"""Block destinations on a host that is not this machine: what its libvirt storage pools
report decides (a volume group's LVs, their sizes and keys). Test-driver tier: libvirt's
test:/// driver stands in for a remote host's pools (it has no block jobs, so nothing is
copied here; the lab tier copies onto real devices)."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse

from blockmig.errors import Refused
from blockmig.preflight.block import check_block_destination
from blockmig.preflight.kinds import destination_kind
from hosts.adapter import open_block_jobs
from hosts.models import Hypervisor
from hosts.sync.hypervisor import hypervisor_sync
from hosts.testnode import node_uri

GiB = 1024**3
UUID = "b10c0000-0000-4000-8000-000000000001"
# The test driver reports every disk's capacity as this (virDomainGetBlockInfo).
TEST_DRIVER_CAPACITY = 1099506450432

NODE = f"""<node>
  <cpu><mode>custom</mode><model>i686</model></cpu>
  <memory>1048576</memory>
  <domain type='test'>
    <name>vm1</name><uuid>{UUID}</uuid><memory>65536</memory><os><type>hvm</type></os>
    <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='/guests/vm1.qcow2'/><target dev='vda' bus='virtio'/></disk></devices>
  </domain>
  <pool type='logical'>
    <name>vg0</name><uuid>35bb2ad9-388a-cdfe-461a-b8907f6e53fe</uuid>
    <source><name>vg0</name><device path='/dev/sdb'/></source>
    <capacity>107374182400</capacity><allocation>2147483648</allocation><available>105226698752</available>
    <target><path>/dev/vg0</path></target>
    <volume type='block'><name>lv1</name><key>LV-UUID-1</key><capacity>{GiB}</capacity>
      <allocation>{GiB}</allocation><target><path>/dev/vg0/lv1</path></target></volume>
    <volume type='block'><name>big</name><key>LV-UUID-2</key><capacity>{TEST_DRIVER_CAPACITY}</capacity>
      <allocation>{TEST_DRIVER_CAPACITY}</allocation><target><path>/dev/vg0/big</path></target></volume>
  </pool>
</node>
"""


@pytest.fixture
def node(tmp_path: Path) -> str:
    path = tmp_path / "vg-node.xml"
    path.write_text(NODE)
    return node_uri(path)


@pytest.fixture
def host(db, node) -> Hypervisor:
    hypervisor = Hypervisor.objects.create(name="remote", uri=node, allowed_roots=["/dev/vg0", "/srv/backups"])
    assert hypervisor_sync(hypervisor).ok
    return hypervisor


def test_volume_group_reported_with_its_logical_volumes(node):
    with open_block_jobs(node) as host:
        (pool,) = host.block_pools()
    assert (pool.name, pool.type, pool.source, pool.target) == ("vg0", "logical", "vg0", "/dev/vg0")
    assert [(v.path, v.capacity, v.key) for v in pool.volumes] == [
        ("/dev/vg0/big", TEST_DRIVER_CAPACITY, "LV-UUID-2"),
        ("/dev/vg0/lv1", GiB, "LV-UUID-1"),
    ]


def test_remote_device_known_by_its_pool_volume(node):
    with open_block_jobs(node) as host:
        assert not host.is_local
        device = host.block_device("/dev/vg0/lv1")
        assert host.block_device("/dev/vg0/none") is None
    assert device is not None
    assert (device.size, device.identity, device.busy) == (GiB, "volume:LV-UUID-1", "")


def block_checks(uri: str, destination: str) -> str:
    """The block-destination part of preflight (check_on_host runs it after the block-job
    look-up, which the test driver lacks) against the test driver's pools."""
    with open_block_jobs(uri) as host:
        kind = destination_kind(host, destination)
        capacity = host.disk_capacity(UUID, "vda")
        assert capacity == TEST_DRIVER_CAPACITY
        check_block_destination(host, destination, ["/guests/vm1.qcow2"], capacity, "vm1/vda")
    return kind


def test_remote_lv_of_the_disks_size_passes(node):
    assert block_checks(node, "/dev/vg0/big") == "block"


def test_remote_lv_too_small_refused_with_both_sizes(node):
    with pytest.raises(Refused) as refused:
        block_checks(node, "/dev/vg0/lv1")
    assert refused.value.message.startswith("/dev/vg0/lv1 is too small: it holds 1073741824 bytes (1.0 GiB)")
    assert f"virtual size of {TEST_DRIVER_CAPACITY} bytes" in refused.value.message


def test_remote_path_no_pool_reports_refused(node):
    with pytest.raises(Refused, match="There is no block device /dev/vg0/lv9 on the host"):
        block_checks(node, "/dev/vg0/lv9")


def test_request_form_offers_the_remote_lvs(client_for, host):
    page = client_for("operator").get(reverse("migration_new_disk", args=[host.name, UUID, "vda"])).content.decode()
    assert 'volume group <span class="mono">vg0</span>' in page
    assert '<option value="/dev/vg0/lv1"></option>' in page
    assert '<span class="mono">/dev/vg0/lv1</span> <span class="muted">— 1073741824 bytes</span>' in page


def test_request_form_marks_a_volume_group_outside_the_roots(client_for, host):
    Hypervisor.objects.filter(pk=host.pk).update(allowed_roots=["/srv/backups"])
    page = client_for("operator").get(reverse("migration_new_disk", args=[host.name, UUID, "vda"])).content.decode()
    assert "not an allowed root: an admin can add /dev/vg0" in page
    assert '<option value="/dev/vg0/lv1">' not in page
