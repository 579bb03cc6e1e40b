"""Inventory sync on libvirt's test driver: correctness and cost at 1,000 domains."""

import socket

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from hosts.adapter import HostConnection
from hosts.models import ChainLayer, Disk, Domain, Hypervisor
from hosts.sync.hypervisor import hypervisor_sync
from hosts.testnode import fake_domain, fake_uuid, node_uri, write_node

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    """Node files shared by the tests here: writing 1,000 domains once is enough."""
    directory = tmp_path_factory.mktemp("nodes")
    files = {}
    for count in (100, 1000):
        files[count] = directory / f"node-{count}.xml"
        write_node(files[count], count)
    files["1000-minus-7"] = directory / "node-1000-minus-7.xml"
    write_node(files["1000-minus-7"], 1000, skip=frozenset({7}))
    return files


def host_for(path, name: str = "fake") -> Hypervisor:
    return Hypervisor.objects.create(name=name, uri=node_uri(path))


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_1000_domains_are_stored_with_their_disks_and_chains(nodes):
    hypervisor = host_for(nodes[1000])

    result = hypervisor_sync(hypervisor)

    assert result.ok and result.error == ""
    assert (result.domains_seen, result.domains_reread) == (1000, 1000)
    expected = [fake_domain(i) for i in range(1000)]
    assert Domain.objects.filter(hypervisor=hypervisor).count() == 1000
    assert Disk.objects.filter(domain__hypervisor=hypervisor).count() == sum(d.disk_count for d in expected)
    # vda's chain plus one layer for every other (single-layer) disk.
    assert ChainLayer.objects.count() == sum(d.chain_length + d.disk_count - 1 for d in expected)
    assert Domain.objects.filter(state="running").count() == 500
    assert Domain.objects.filter(state="paused").count() == 250
    assert Domain.objects.filter(state="shutoff").count() == 250
    assert Domain.objects.filter(persistent=False).count() == 250


def test_a_sample_domain_has_its_unicode_name_disks_and_chain_in_order(nodes):
    hypervisor_sync(host_for(nodes[1000]))

    domain = Domain.objects.get(uuid=fake_uuid(420))
    assert (domain.name, domain.state, domain.persistent, domain.autostart) == ("vm 00420 ünïcødé", "running", True, False)
    vda, vdb = domain.disks.all()
    assert (vda.target, vda.bus, vda.type, vda.format) == ("vda", "virtio", "file", "qcow2")
    assert vda.source == "/srv/images/host 004/vm00420-3.qcow2"
    assert [(layer.depth, layer.path, layer.format) for layer in vda.layers.all()] == [
        (0, "/srv/images/host 004/vm00420-3.qcow2", "qcow2"),
        (1, "/srv/images/host 004/vm00420-2.qcow2", "qcow2"),
        (2, "/srv/images/host 004/vm00420-1.qcow2", "qcow2"),
    ]
    assert (vdb.format, [layer.path for layer in vdb.layers.all()]) == ("raw", ["/srv/images/host 004/vm00420-data.raw"])
    assert vda.job_type == "" and not vda.job_ready


def test_paused_transient_and_block_disks_are_stored_as_libvirt_reports_them(nodes):
    hypervisor_sync(host_for(nodes[100]))

    paused = Domain.objects.get(uuid=fake_uuid(2))
    assert (paused.state, paused.persistent) == ("paused", True)
    sda = paused.disks.get(target="sda")
    assert (sda.type, sda.source, sda.bus) == ("block", "/dev/mapper/vg-vm00002", "scsi")
    transient = Domain.objects.get(uuid=fake_uuid(1))
    assert (transient.state, transient.persistent) == ("running", False)


def test_host_facts_are_stored_and_the_host_is_healthy(nodes):
    hypervisor = host_for(nodes[100])

    hypervisor_sync(hypervisor)

    hypervisor.refresh_from_db()
    assert (hypervisor.driver, hypervisor.virt_type) == ("TEST", "test")
    assert hypervisor.libvirt_version.count(".") == 2 and hypervisor.hostname
    assert hypervisor.last_sync_ok_at == hypervisor.last_sync_attempt_at
    assert (hypervisor.last_sync_error, hypervisor.health) == ("", "ok")


def sync_twice(path, name):
    hypervisor = host_for(path, name)
    first = hypervisor_sync(hypervisor)
    steady = hypervisor_sync(hypervisor)
    return first, steady


def test_libvirt_calls_are_constant_in_steady_state_and_first_sync_adds_one_xml_read_per_domain(nodes):
    first_100, steady_100 = sync_twice(nodes[100], "small")
    first_1000, steady_1000 = sync_twice(nodes[1000], "large")

    assert steady_100.libvirt_calls == steady_1000.libvirt_calls
    assert steady_1000.domains_reread == 0
    # Beyond one XML read per domain, the stopped domains' chains cost one look at the
    # host's storage pools per sync (none of these paths is in a pool), whatever their number.
    extra_100 = first_100.libvirt_calls - steady_100.libvirt_calls - 100
    extra_1000 = first_1000.libvirt_calls - steady_1000.libvirt_calls - 1000
    assert extra_100 == extra_1000 == 1


def test_a_stopped_domain_on_a_host_that_cannot_read_its_files_has_its_chain_unknown(nodes):
    hypervisor_sync(host_for(nodes[100]))

    # fake_domain(3) is shut off; the test driver is not this machine and has no pools.
    vda = Disk.objects.get(domain__uuid=fake_uuid(3), target="vda")
    assert [layer.path for layer in vda.layers.all()] == ["/srv/images/host 000/vm00003-1.qcow2"]
    assert vda.chain_known is False
    assert vda.chain_note.startswith("Chain unknown while stopped below /srv/images/host 000/vm00003-1.qcow2: ")
    assert "no storage pool on test://" in vda.chain_note
    # Running and paused domains keep the chain libvirt wrote into their live XML.
    running = Disk.objects.get(domain__uuid=fake_uuid(0), target="vda")
    assert (running.chain_known, running.chain_note, running.layers.count()) == (True, "", 3)


def test_the_disk_page_of_such_a_disk_says_the_chain_is_unknown_instead_of_drawing_a_base(nodes, client_for):
    hypervisor = host_for(nodes[100])
    hypervisor_sync(hypervisor)

    url = reverse("disk_detail", args=[hypervisor.name, fake_uuid(3), "vda"])
    html = client_for("viewer").get(url).content.decode()

    assert 'data-kind="unknown"' in html and "? chain unknown while stopped" in html
    assert "Chain unknown while stopped below /srv/images/host 000/vm00003-1.qcow2: " in html


def count_queries(hypervisor, force=False) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert hypervisor_sync(hypervisor, force=force).ok
    return len(queries)


def test_sql_queries_of_a_sync_do_not_grow_with_the_number_of_domains(nodes):
    small, large = host_for(nodes[100], "small"), host_for(nodes[1000], "large")

    first = (count_queries(small), count_queries(large))
    steady = (count_queries(small), count_queries(large))
    forced = (count_queries(small, force=True), count_queries(large, force=True))

    assert first[0] == first[1] <= 12
    assert steady[0] == steady[1] <= 8
    assert forced[0] == forced[1] <= 12


def test_forced_resync_rereads_every_domain_and_keeps_disk_ids(nodes):
    hypervisor = host_for(nodes[100])
    hypervisor_sync(hypervisor)
    ids_before = set(Disk.objects.values_list("id", flat=True))
    layers_before = ChainLayer.objects.count()

    result = hypervisor_sync(hypervisor, force=True)

    assert result.domains_reread == 100
    assert set(Disk.objects.values_list("id", flat=True)) == ids_before
    assert ChainLayer.objects.count() == layers_before


def test_a_domain_removed_from_the_host_disappears_after_a_sync(nodes):
    hypervisor = host_for(nodes[1000])
    hypervisor_sync(hypervisor)
    assert Domain.objects.filter(uuid=fake_uuid(7)).exists()

    hypervisor.uri = node_uri(nodes["1000-minus-7"])
    hypervisor.save()
    result = hypervisor_sync(hypervisor)

    assert result.ok and result.domains_seen == 999 and result.domains_reread == 0
    assert not Domain.objects.filter(uuid=fake_uuid(7)).exists()
    assert not Disk.objects.filter(domain__uuid=fake_uuid(7)).exists()
    assert not ChainLayer.objects.filter(path__contains="vm00007").exists()
    assert Domain.objects.count() == 999


def test_an_unreachable_host_keeps_its_last_known_data_marked_stale(nodes):
    hypervisor = host_for(nodes[100])
    hypervisor_sync(hypervisor)
    hypervisor.refresh_from_db()
    good_sync_at = hypervisor.last_sync_ok_at

    port = closed_port()
    hypervisor.uri = f"qemu+tcp://127.0.0.1:{port}/system"
    hypervisor.save()
    result = hypervisor_sync(hypervisor)

    assert not result.ok
    assert f"Cannot reach qemu+tcp://127.0.0.1:{port}/system" in result.error
    hypervisor.refresh_from_db()
    assert hypervisor.last_sync_error == result.error
    assert hypervisor.last_sync_ok_at == good_sync_at
    assert hypervisor.last_sync_attempt_at > good_sync_at
    assert (hypervisor.is_stale, hypervisor.health) == (True, "stale")
    assert (hypervisor.driver, hypervisor.virt_type) == ("TEST", "test")
    assert Domain.objects.filter(hypervisor=hypervisor).count() == 100
    assert Disk.objects.get(domain__uuid=fake_uuid(0), target="vda").layers.count() == 3


def test_state_and_autostart_changes_are_picked_up_by_the_next_sync():
    # test:///default is one shared host per process, so a connection held here changes
    # what the sync's own connection sees (custom node files are private per connection).
    hypervisor = Hypervisor.objects.create(name="default", uri="test:///default")
    hypervisor_sync(hypervisor)
    assert Domain.objects.get(name="test").state == "running"
    with HostConnection("test:///default") as host:
        guest = host.conn.lookupByName("test")
        guest.suspend()
        guest.setAutostart(1)
        try:
            result = hypervisor_sync(hypervisor)
        finally:
            guest.resume()
            guest.setAutostart(0)

    stored = Domain.objects.get(name="test")
    assert (stored.state, stored.autostart) == ("paused", True)
    assert result.domains_reread == 1  # the state changed the stats signature
