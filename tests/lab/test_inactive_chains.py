"""True chains of stopped domains, on the real libvirtd with real qcow2 chains.

libvirt writes no <backingStore> into a shut-off domain's XML: these tests define (never
start) domains on a 60-layer chain and on a chain whose middle file was deleted, and check
what the inventory stores and the disk page shows. Domains are named `bmtest-<pid>-…`
(tests/lab/conftest.py removes those of dead sessions) and undefined at the end.
"""

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.urls import reverse

from hosts.adapter import HostConnection
from hosts.inactive_chains import local_images
from hosts.lab.domains import destroy_and_undefine, virsh
from hosts.lab.services import SYSTEM_URI, ensure_libvirtd
from hosts.models import Disk, Domain, Hypervisor
from hosts.sync.hypervisor import hypervisor_sync

pytestmark = [pytest.mark.lab, pytest.mark.django_db]

PREFIX = f"bmtest-{os.getpid()}-"
MiB = 1 << 20


def make_chain(directory: Path, length: int) -> list[str]:
    """l1.qcow2 (base) ← … ← l{length}.qcow2, each naming its parent by a relative name."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(1, length + 1):
        command = ["qemu-img", "create", "-q", "-f", "qcow2"]
        if i > 1:
            command += ["-b", f"l{i - 1}.qcow2", "-F", "qcow2"]
        subprocess.run([*command, f"l{i}.qcow2", "64M"], check=True, cwd=directory)
        paths.append(str(directory / f"l{i}.qcow2"))
    return paths


def define_stopped(name: str, top: str) -> None:
    xml = (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64'>hvm</type></os><devices>"
        f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{top}'/>"
        "<target dev='vda' bus='virtio'/></disk></devices></domain>"
    )
    definition = Path(top).parent / f"{name}.xml"
    definition.write_text(xml)
    virsh("define", str(definition))


@pytest.fixture(scope="module")
def stopped() -> Iterator[dict]:
    if os.geteuid() != 0 or shutil.which("virsh") is None:
        pytest.fail("the lab tier needs root and libvirt (make services)")
    ensure_libvirtd()
    root = Path(f"/var/tmp/blockmig-test-inactive-{os.getpid()}")
    names = {"long": PREFIX + "chain60", "broken": PREFIX + "brokenchain", "later": PREFIX + "laterbroken"}
    try:
        long_chain = make_chain(root / "long", 60)
        broken_chain = make_chain(root / "broken", 5)
        os.unlink(broken_chain[2])  # l3, the middle layer
        define_stopped(names["long"], long_chain[-1])
        define_stopped(names["broken"], broken_chain[-1])
        later_chain = make_chain(root / "later", 4)
        define_stopped(names["later"], later_chain[-1])
        yield {"names": names, "long": long_chain, "broken": broken_chain, "later": later_chain, "root": root}
    finally:
        for name in names.values():
            destroy_and_undefine(name)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def system_host(stopped) -> Hypervisor:
    hypervisor = Hypervisor.objects.create(name="lab", uri=SYSTEM_URI)
    result = hypervisor_sync(hypervisor)
    assert result.ok, result.error
    return hypervisor


def vda_of(hypervisor: Hypervisor, name: str) -> Disk:
    return Disk.objects.get(domain__hypervisor=hypervisor, domain__name=name, target="vda")


def test_a_stopped_domain_on_a_60_layer_chain_shows_all_60_layers(stopped, system_host):
    assert Domain.objects.get(hypervisor=system_host, name=stopped["names"]["long"]).state == "shutoff"
    vda = vda_of(system_host, stopped["names"]["long"])

    layers = list(vda.layers.all())
    assert [layer.path for layer in layers] == stopped["long"][::-1]
    assert [layer.depth for layer in layers] == list(range(60))
    assert all(layer.format == "qcow2" and layer.capacity == 64 * MiB for layer in layers)
    assert all(layer.allocation and layer.allocation > 0 for layer in layers)
    assert not any(layer.missing for layer in layers)
    assert (vda.chain_known, vda.chain_note) == (True, "")


def test_a_deleted_middle_layer_is_stored_as_missing_not_as_a_standalone_image(stopped, system_host):
    vda = vda_of(system_host, stopped["names"]["broken"])
    broken = stopped["broken"]

    assert [(layer.path, layer.missing) for layer in vda.layers.all()] == [
        (broken[4], False),
        (broken[3], False),
        (broken[2], True),
    ]
    assert vda.chain_known
    assert vda.chain_note == f"missing: {broken[2]} (deleted or moved)"


def test_the_disk_page_draws_the_missing_layer_and_says_what_happened(stopped, system_host, client_for):
    vda = vda_of(system_host, stopped["names"]["broken"])
    url = reverse("disk_detail", args=["lab", vda.domain.uuid, "vda"])

    html = client_for("viewer").get(url).content.decode()

    assert f"missing: {stopped['broken'][2]} (deleted or moved)" in html
    assert html.count('data-kind="missing"') == 1
    assert "missing: deleted or moved" in html  # the missing box's own line


def test_a_resync_reads_no_image_again_while_the_files_are_unchanged(stopped, system_host):
    runs_before = local_images.runs

    forced = hypervisor_sync(system_host, force=True)  # every domain's XML and chain read again

    assert forced.ok, forced.error
    assert local_images.runs == runs_before
    assert vda_of(system_host, stopped["names"]["long"]).layers.count() == 60


def test_the_storage_pool_view_of_a_chain_walks_volume_xml_layer_by_layer(stopped):
    """What a remote host with a storage pool gives: here a transient dir pool on the real libvirtd."""
    pools = {}
    try:
        for which in ("long", "broken"):
            pools[which] = f"{PREFIX}{which}-pool"
            virsh("pool-create-as", pools[which], "dir", "--target", str(stopped["root"] / which))
        with HostConnection(SYSTEM_URI) as host:
            long_chain = host.pool_chain(stopped["long"][-1], "qcow2")
            broken_chain = host.pool_chain(stopped["broken"][-1], "qcow2")
            outside = host.pool_chain("/var/tmp/no-pool-here/vm.qcow2", "qcow2")
    finally:
        for name in pools.values():
            virsh("pool-destroy", name, check=False)

    assert [layer.path for layer in long_chain.layers] == stopped["long"][::-1]
    assert long_chain.known and all(layer.capacity == 64 * MiB for layer in long_chain.layers)
    assert [(layer.path, layer.missing) for layer in broken_chain.layers][-1] == (stopped["broken"][2], True)
    assert broken_chain.note == f"missing: {stopped['broken'][2]} (deleted or moved)"
    assert not outside.known and outside.note.startswith("Chain unknown while stopped below /var/tmp/no-pool-here/vm.qcow2")


def test_a_layer_deleted_while_the_domain_is_off_shows_as_missing_at_the_next_plain_sync(stopped, system_host):
    later = stopped["later"]
    assert not any(layer.missing for layer in vda_of(system_host, stopped["names"]["later"]).layers.all())
    runs_before = local_images.runs
    assert hypervisor_sync(system_host).ok  # nothing changed: no image is read again
    assert local_images.runs == runs_before

    os.unlink(later[1])  # l2, below two layers that still exist
    result = hypervisor_sync(system_host)  # not forced: the files' fingerprint changed

    assert result.ok, result.error
    vda = vda_of(system_host, stopped["names"]["later"])
    assert [(layer.path, layer.missing) for layer in vda.layers.all()][-1] == (later[1], True)
    assert vda.chain_note == f"missing: {later[1]} (deleted or moved)"
