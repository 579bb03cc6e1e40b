"""Preflight refusals that need the real host: each refuses clearly and changes nothing."""

import pytest

from blockmig.errors import Refused
from blockmig.lifecycle import DiskRequest, migration_request
from blockmig.models import Migration
from tests.lab.engine_helpers import has_block_job, make_hypervisor, run

pytestmark = pytest.mark.lab
MiB = 2**20


def request(vm, user, host, target="vda", destination=None, **kwargs):
    destination = destination or str(vm.backups / "copy.qcow2")
    return migration_request(user=user, hypervisor=host, domain_uuid=vm.uuid, disks=[DiskRequest(target, destination)], **kwargs)


def test_domain_not_running_refused(domains, people):
    vm = domains.images("off", [("vda", "qcow2", 16 * MiB, None)])
    run("virsh", "-c", "qemu:///system", "destroy", vm.name)
    with pytest.raises(Refused, match="not running"):
        request(vm, people["operator"], make_hypervisor([vm.backups]))
    assert Migration.objects.count() == 0


def test_unknown_disk_refused(domains, people):
    vm = domains.seed()
    with pytest.raises(Refused, match="has no disk vdz") as refused:
        request(vm, people["operator"], make_hypervisor([vm.backups]), target="vdz")
    assert refused.value.field == "disks"


def test_job_started_by_plain_virsh_refused_and_left_alone(domains, people):
    vm = domains.images("virshjob", [("vda", "qcow2", 64 * MiB, "write -P 0x5a 0 32M")])
    other = vm.directory / "virsh-copy.qcow2"
    run("virsh", "-c", "qemu:///system", "blockcopy", vm.name, "vda", str(other), "--transient-job", "--bandwidth", "1")
    with pytest.raises(Refused, match="already running"):
        request(vm, people["operator"], make_hypervisor([vm.backups]))
    assert has_block_job(vm.name, "vda")
    assert Migration.objects.count() == 0


def test_second_migration_of_same_disk_refused(domains, people):
    vm = domains.seed()
    host = make_hypervisor([vm.backups])
    first = request(vm, people["operator"], host)  # no worker: stays requested
    with pytest.raises(Refused, match=f"#{first.pk} is already moving"):
        request(vm, people["operator"], host, destination=str(vm.backups / "other.qcow2"))
    assert Migration.objects.count() == 1


def test_destination_exists_refused_without_reuse(domains, people):
    vm = domains.seed()
    (vm.backups / "copy.qcow2").write_bytes(b"x")
    with pytest.raises(Refused, match="already exists"):
        request(vm, people["operator"], make_hypervisor([vm.backups]))


def test_destination_directory_missing_refused(domains, people):
    vm = domains.seed()
    with pytest.raises(Refused, match="does not exist"):
        request(vm, people["operator"], make_hypervisor([vm.backups]), destination=str(vm.backups / "nope" / "c.qcow2"))


def test_destination_equal_to_a_chain_layer_refused(domains, people):
    vm = domains.seed()
    host = make_hypervisor([vm.directory])
    with pytest.raises(Refused, match="current source"):
        request(vm, people["operator"], host, destination=str(vm.disks[0].path))
    with pytest.raises(Refused, match="backing chain"):
        request(vm, people["operator"], host, destination=str(vm.directory / "snap1.qcow2"))


def test_symlink_out_of_allowed_root_refused(domains, people):
    vm = domains.seed()
    (vm.backups / "escape").symlink_to("/tmp")
    with pytest.raises(Refused, match="outside the allowed storage"):
        request(vm, people["operator"], make_hypervisor([vm.backups]), destination=str(vm.backups / "escape" / "c.qcow2"))


def test_unreachable_host_refused(domains, people, settings):
    settings.BLOCKMIG_CONNECT_TIMEOUT = 3
    vm = domains.seed()
    host = make_hypervisor([vm.backups])
    host.uri = "qemu+tcp://127.0.0.1:1/system"
    host.save()
    with pytest.raises(Refused, match="unreachable"):
        request(vm, people["operator"], host)
    assert Migration.objects.count() == 0


def test_symlinked_destination_file_out_of_allowed_root_refused_with_reuse(domains, people, tmp_path):
    vm = domains.seed()
    outside = tmp_path / "outside.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", outside, str(1024 * MiB))
    (vm.backups / "copy.qcow2").symlink_to(outside)
    with pytest.raises(Refused, match="link that leads outside the allowed storage") as refused:
        request(vm, people["operator"], make_hypervisor([vm.backups]), reuse_destination=True)
    assert str(outside) in refused.value.message
    assert Migration.objects.count() == 0


def test_destination_that_is_another_domains_disk_refused(domains, people):
    """The other domain's disk sits inside the allowed root and is known to the inventory."""
    from hosts.sync.hypervisor import hypervisor_sync

    vm = domains.seed()
    other = domains.images("neighbour", [("vda", "qcow2", 16 * MiB, None)])
    host = make_hypervisor([vm.backups, other.directory])
    hypervisor_sync(host)
    with pytest.raises(Refused, match=f"in use by {other.name}/vda") as refused:
        request(vm, people["operator"], host, destination=str(other.disks[0].path), reuse_destination=True)
    assert refused.value.field == "destination"
    assert Migration.objects.count() == 0
    assert other.sources()["vda"] == str(other.disks[0].path)
