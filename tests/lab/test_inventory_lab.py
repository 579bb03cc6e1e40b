"""Inventory through the app against the real libvirtd + QEMU lab.

Only this session's `bmtest-<pid>-…` domains are asserted on: the demo lab and other
sessions may have domains on the same libvirtd.
"""

import os
import time

import pytest

from hosts.lab.domains import virsh
from hosts.models import Disk, Domain, Hypervisor
from hosts.sync.hypervisor import hypervisor_sync

pytestmark = [pytest.mark.lab, pytest.mark.django_db]

GiB = 1 << 30
MiB = 1 << 20


@pytest.fixture
def system_host(lab) -> Hypervisor:
    return Hypervisor.objects.create(name="lab", uri=lab.uri, allowed_roots=[str(lab.backups)])


def synced(hypervisor: Hypervisor, **kwargs) -> Hypervisor:
    result = hypervisor_sync(hypervisor, **kwargs)
    assert result.ok, result.error
    return hypervisor


def test_testvm_vda_chain_is_snap2_snap1_base_all_qcow2_of_1_gib(lab, system_host):
    synced(system_host)

    testvm = Domain.objects.get(hypervisor=system_host, name=lab.testvm)
    assert (testvm.state, testvm.persistent) == ("running", True)
    vda = testvm.disks.get(target="vda")
    assert (vda.bus, vda.type, vda.format, vda.source) == ("virtio", "file", "qcow2", str(lab.seed.snap2))
    layers = list(vda.layers.all())
    assert [layer.path for layer in layers] == [str(lab.seed.snap2), str(lab.seed.snap1), str(lab.seed.base)]
    assert [layer.format for layer in layers] == ["qcow2"] * 3
    assert [layer.capacity for layer in layers] == [GiB] * 3
    assert not any(layer.missing for layer in layers)
    assert vda.job_type == ""


def test_reread_names_a_domain_whose_stats_did_not_change(lab, system_host):
    """The engine's refresh after it started a copy: one domain's XML, whatever its stats say."""
    synced(system_host)
    testvm = Domain.objects.get(hypervisor=system_host, name=lab.testvm)
    Disk.objects.filter(domain=testvm, target="vda").update(source="/stale/path.qcow2")

    synced(system_host)  # unchanged stats: the stored disks are kept as they are
    assert testvm.disks.get(target="vda").source == "/stale/path.qcow2"

    synced(system_host, reread=[testvm.uuid])
    assert testvm.disks.get(target="vda").source == str(lab.seed.snap2)


def test_twodisk_has_a_qcow2_overlay_on_its_base_and_a_raw_disk(lab, system_host):
    synced(system_host)

    twodisk = Domain.objects.get(hypervisor=system_host, name=lab.twodisk)
    vda, vdb = twodisk.disks.order_by("target")
    assert [(layer.path, layer.format) for layer in vda.layers.all()] == [
        (str(lab.twodisk_vda), "qcow2"),
        (str(lab.twodisk_base), "qcow2"),
    ]
    assert (vdb.format, [layer.path for layer in vdb.layers.all()]) == ("raw", [str(lab.twodisk_vdb)])


def test_host_facts_of_the_real_libvirtd(lab, system_host):
    synced(system_host)

    system_host.refresh_from_db()
    assert system_host.driver == "QEMU"
    assert system_host.virt_type in ("kvm", "qemu")
    assert system_host.libvirt_version.startswith("9.") or int(system_host.libvirt_version.split(".")[0]) > 9
    assert system_host.supports_transient_job is True
    assert system_host.health == "ok"


@pytest.fixture
def transient_domain(lab, tmp_path):
    """A tiny domain made with plain `virsh create` (transient), destroyed whatever happens."""
    name = f"bmtest-{os.getpid()}-inv-transient"
    disk = tmp_path / "tiny disk.raw"
    with open(disk, "wb") as handle:
        handle.truncate(64 * MiB)
    xml = tmp_path / "domain.xml"
    xml.write_text(
        f"<domain type='{lab.virt_type}'><name>{name}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64'>hvm</type></os><devices>"
        f"<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{disk}'/>"
        "<target dev='vda' bus='virtio'/></disk></devices></domain>"
    )
    virsh("create", str(xml))
    try:
        yield name, disk, tmp_path
    finally:
        virsh("destroy", name, check=False)


def test_a_domain_made_with_plain_virsh_appears_after_a_sync_and_goes_after_destroy(system_host, transient_domain):
    name, disk, _ = transient_domain

    synced(system_host)
    domain = Domain.objects.get(hypervisor=system_host, name=name)
    assert (domain.state, domain.persistent, domain.autostart) == ("running", False, False)
    vda = domain.disks.get()
    assert (vda.target, vda.format, vda.source) == ("vda", "raw", str(disk))
    assert [(layer.path, layer.capacity) for layer in vda.layers.all()] == [(str(disk), 64 * MiB)]

    virsh("destroy", name)
    synced(system_host)
    assert not Domain.objects.filter(hypervisor=system_host, name=name).exists()
    assert not Disk.objects.filter(source=str(disk)).exists()


def wait_for_ready_mirror(name: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "ready='yes'" in virsh("dumpxml", name).stdout:
            return
        time.sleep(0.1)
    pytest.fail(f"the mirror on {name} did not become ready within {timeout} s")


def test_a_blockcopy_started_with_plain_virsh_shows_as_the_disks_job_until_it_ends(system_host, transient_domain):
    name, _, directory = transient_domain
    destination = directory / "outside copy.raw"
    synced(system_host)

    # 1 MiB/s keeps the mirror from becoming ready before the first look.
    virsh("blockcopy", name, "vda", str(destination), "--bandwidth", "1")
    try:
        synced(system_host)
        vda = Disk.objects.get(domain__name=name, target="vda")
        assert (vda.job_type, vda.job_mirror_path, vda.job_ready) == ("copy", str(destination), False)
        assert vda.job_end == 64 * MiB

        virsh("blockjob", name, "vda", "--bandwidth", "0")
        wait_for_ready_mirror(name)
        result = hypervisor_sync(system_host)  # not forced: domains with a job are re-read anyway
        vda.refresh_from_db()
        assert vda.job_ready is True and vda.job_cur == vda.job_end == 64 * MiB
        assert result.domains_reread >= 1
    finally:
        virsh("blockjob", name, "vda", "--abort", check=False)

    synced(system_host)
    vda = Disk.objects.get(domain__name=name, target="vda")
    assert (vda.job_type, vda.job_mirror_path, vda.job_ready) == ("", "", False)
