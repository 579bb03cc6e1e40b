"""Destinations beyond files, end to end: the seed disk copied onto a block device and onto
an NBD export, pivoted, and the guest's files read back from where it now runs; the
refusals that keep the guest on its source.

The block devices come from hosts.lab.storage: a logical volume where the kernel has
device-mapper, else a loop device linked into /dev/bmtest-<pid>-blk/ like /dev/<vg>/<lv>
(this lab machine has no device-mapper; the module docstring there says what that means).
"""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.urls import reverse

from blockmig.errors import Refused
from blockmig.lifecycle import DiskRequest, migration_abort, migration_approve, migration_request
from blockmig.models import AuditEvent, Migration, MigrationDisk
from hosts.adapter import open_block_jobs
from hosts.lab.seed import SEED_SIZE, list_files_in_image
from hosts.lab.storage import MiB, StorageLab, remove_stale_storage
from hosts.sync.hypervisor import hypervisor_sync
from tests.helpers import wait_for_state
from tests.lab.engine_helpers import URI, make_hypervisor
from tests.pids import pid_alive

pytestmark = pytest.mark.lab

SEED_FILES = ["bar", "baz", "foo"]


@pytest.fixture(scope="module")
def storage(lab) -> Iterator[StorageLab]:
    remove_stale_storage(pid_alive)
    made = StorageLab.create(os.getpid())
    made.volume_group(256 * MiB)
    try:
        yield made
    finally:
        made.teardown()


def live_disk(xml: str, target: str = "vda") -> tuple[str, dict[str, str], dict[str, str]]:
    """(disk type, <source> attributes, <host> attributes) of one disk."""
    for disk in ET.fromstring(xml).findall("./devices/disk"):
        if disk.find(f"target[@dev='{target}']") is not None:
            source = disk.find("source")
            host = source.find("host") if source is not None else None
            return (
                disk.get("type", "file"),
                dict(source.attrib) if source is not None else {},
                dict(host.attrib) if host is not None else {},
            )
    raise AssertionError(f"no disk {target}")


def request(people, host, vm, destination: str, **options) -> Migration:
    return migration_request(
        user=people["operator"],
        hypervisor=host,
        domain_uuid=vm.uuid,
        disks=[DiskRequest("vda", destination)],
        **{"mode": "full", "dest_format": "raw", "reuse_destination": True, **options},
    )


def requested_kinds(migration: Migration) -> dict[str, str]:
    """What preflight took each destination for, as the request's audit event records it."""
    requested = AuditEvent.objects.get(migration=migration, event_type="requested")
    return {target: disk["kind"] for target, disk in requested.details["disks"].items()}


def approve_and_complete(migration: Migration, people) -> Migration:
    wait_for_state(migration, "ready", timeout=120)
    migration_approve(migration=migration, user=people["approver"])
    migration = wait_for_state(migration, ["completed", "failed"], timeout=120)
    assert migration.state == "completed", migration.failure_reason
    return migration


def test_seed_copied_onto_a_block_device_and_pivoted(domains, people, worker, storage):
    vm = domains.seed()
    device = storage.block_device("seed-lv", SEED_SIZE)
    host = make_hypervisor([vm.backups, storage.device_dir])
    assert hypervisor_sync(host).ok

    migration = request(people, host, vm, str(device))
    disk = MigrationDisk.objects.get(migration=migration)
    assert requested_kinds(migration) == {"vda": "block"}
    migration = approve_and_complete(migration, people)

    assert live_disk(vm.live_xml())[:2] == ("block", {"dev": str(device), "index": live_disk(vm.live_xml())[1]["index"]})
    assert live_disk(vm.inactive_xml())[:2] == ("block", {"dev": str(device)})
    assert list_files_in_image(device) == SEED_FILES
    # Identity was the device number of what the link leads to, and the device is still there.
    rdev = os.stat(device).st_rdev
    disk.refresh_from_db()
    assert disk.dest_identity == f"rdev:{os.major(rdev)}:{os.minor(rdev)}"
    assert not disk.created_destination
    events = [e.event_type for e in AuditEvent.objects.filter(migration=migration)]
    for expected in ("requested", "copying", "ready", "approved", "verified", "completed"):
        assert expected in events, events


def test_seed_copied_onto_an_nbd_export_and_pivoted(domains, people, worker, storage):
    vm = domains.seed()
    image = storage.directory / "seed-export.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), str(SEED_SIZE)], check=True)
    server = storage.nbd_export("seed", image, "qcow2")
    host = make_hypervisor([vm.backups])
    assert hypervisor_sync(host).ok

    migration = request(people, host, vm, server.url)
    disk = MigrationDisk.objects.get(migration=migration)
    assert disk.destination == server.url
    assert requested_kinds(migration) == {"vda": "network"}
    migration = approve_and_complete(migration, people)

    kind, source, where = live_disk(vm.live_xml())
    assert (kind, source["protocol"], source["name"], where) == (
        "network",
        "nbd",
        "seed",
        {"name": "127.0.0.1", "port": str(server.port)},
    )
    assert live_disk(vm.inactive_xml())[0] == "network"
    # The guest now writes through qemu-nbd into the image it serves: its files are there.
    assert list_files_in_image(image) == SEED_FILES
    disk.refresh_from_db()
    assert disk.dest_identity == ""  # an export has no identity to check; the page says so


def test_abort_leaves_the_given_block_device_in_place(domains, people, worker, storage):
    vm = domains.seed()
    device = storage.block_device("abort-lv", SEED_SIZE)
    target = device.resolve()
    host = make_hypervisor([vm.backups, storage.device_dir])
    assert hypervisor_sync(host).ok

    migration = request(people, host, vm, str(device))
    wait_for_state(migration, "ready", timeout=120)
    migration_abort(migration=migration, user=people["operator"])
    migration = wait_for_state(migration, ["aborted", "failed"], timeout=60)
    assert migration.state == "aborted", migration.failure_reason
    assert vm.sources()["vda"] == str(vm.disks[0].path)
    assert device.is_symlink() and device.resolve() == target and target.is_block_device()
    aborted = AuditEvent.objects.filter(migration=migration, event_type="aborted").get()
    assert aborted.details["removed"] == []


def refused(people, host, vm, destination: str, **options) -> str:
    with pytest.raises(Refused) as caught:
        request(people, host, vm, destination, **options)
    assert not Migration.objects.filter(domain_uuid=vm.uuid).exists()
    assert vm.sources()["vda"] == str(vm.disks[0].path)  # the guest stays on its source
    return caught.value.message


def test_too_small_block_device_refused_with_both_sizes(domains, people, storage):
    vm = domains.seed()
    small = storage.block_device("small-lv", 512 * MiB)
    host = make_hypervisor([vm.backups, storage.device_dir])
    message = refused(people, host, vm, str(small))
    assert f"{small} is too small" in message
    assert "536870912 bytes (512.0 MiB)" in message and "1073741824 bytes (1.0 GiB)" in message


def test_bigger_block_device_refused(domains, people, storage):
    vm = domains.seed()
    big = storage.block_device("big-lv", SEED_SIZE + 64 * MiB)
    host = make_hypervisor([vm.backups, storage.device_dir])
    message = refused(people, host, vm, str(big))
    assert "QEMU mirrors only onto a target of the same size" in message
    assert "exactly 1073741824 bytes" in message


def test_block_device_outside_allowed_roots_refused(domains, people, storage):
    vm = domains.seed()
    device = storage.block_device("elsewhere-lv", SEED_SIZE)
    host = make_hypervisor([vm.backups])
    message = refused(people, host, vm, str(device))
    assert message == f"{device} is outside the allowed roots ({vm.backups})."
    # The device itself, named directly, is outside too.
    message = refused(people, host, vm, str(device.resolve()))
    assert "outside the allowed roots" in message


def test_missing_device_under_dev_refused(domains, people, storage):
    vm = domains.seed()
    host = make_hypervisor([vm.backups, storage.device_dir])
    message = refused(people, host, vm, str(storage.device_dir / "no-such-lv"))
    assert message.startswith(f"There is no block device {storage.device_dir}/no-such-lv on the host: create the logical")


def test_block_device_needs_raw_full_and_reuse(domains, people, storage):
    vm = domains.seed()
    device = storage.block_device("options-lv", SEED_SIZE)
    host = make_hypervisor([vm.backups, storage.device_dir])
    assert "choose the raw format" in refused(people, host, vm, str(device), dest_format="qcow2")
    assert "must be full" in refused(people, host, vm, str(device), mode="shallow")
    assert "tick “reuse”" in refused(people, host, vm, str(device), reuse_destination=False)


def test_nbd_refusals_bad_url_unreachable_and_wrong_size(domains, people, storage):
    vm = domains.seed()
    host = make_hypervisor([vm.backups])
    assert "Only NBD exports over TCP" in refused(people, host, vm, "nbd+unix:///seed?socket=/tmp/s")
    assert "must be a number from 1 to 65535" in refused(people, host, vm, "nbd://127.0.0.1:99999/seed")
    assert "Name the export after the port" in refused(people, host, vm, "nbd://127.0.0.1:10809")

    # Nothing listens on a port just freed: qemu-img cannot connect.
    from hosts.lab.storage import free_port

    message = refused(people, host, vm, f"nbd://127.0.0.1:{free_port()}/seed")
    assert "blockmig could not read the export" in message and "Connection refused" in message

    image = storage.directory / "small-export.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(image), str(256 * MiB)], check=True)
    server = storage.nbd_export("small", image, "raw")
    message = refused(people, host, vm, server.url)
    assert f"{server.url} is too small" in message and "268435456 bytes" in message


def test_the_session_volume_group_is_reported_as_a_logical_pool(storage):
    with open_block_jobs(URI) as host:
        pools = {pool.name: pool for pool in host.block_pools()}
    group = pools[storage.vg_name]
    assert (group.type, group.source, group.target) == ("logical", storage.vg_name, f"/dev/{storage.vg_name}")
    assert 200 * MiB < group.capacity <= 256 * MiB
    assert Path(group.target).name == storage.vg_name


def test_request_form_offers_the_volume_group(client, domains, people, storage):
    vm = domains.seed()
    vg_dir = f"/dev/{storage.vg_name}"
    host = make_hypervisor([vm.backups, vg_dir])
    assert hypervisor_sync(host).ok
    client.force_login(people["operator"])
    page = client.get(reverse("migration_new_disk", args=[host.name, vm.uuid, "vda"])).content.decode()
    assert f'volume group <span class="mono">{storage.vg_name}</span>' in page
    assert (
        f"no logical volumes yet: create one of the disk's exact virtual size (lvcreate -L SIZEb -n NAME {storage.vg_name})"
        in page
    )


def test_detail_page_says_an_export_cannot_be_identified_before_approval(client, domains, people, worker, storage):
    vm = domains.seed()
    image = storage.directory / "page-export.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(image), str(SEED_SIZE)], check=True)
    server = storage.nbd_export("page", image, "raw")
    host = make_hypervisor([vm.backups])
    assert hypervisor_sync(host).ok
    migration = request(people, host, vm, server.url)
    wait_for_state(migration, "ready", timeout=120)
    client.force_login(people["approver"])
    page = client.get(reverse("migration_detail", args=[migration.pk])).content.decode()
    assert f"{server.url} is an NBD export: an export reports no identity" in page
    assert "Check the NBD server before approving." in page
    migration_abort(migration=migration, user=people["operator"])
    assert wait_for_state(migration, ["aborted", "failed"], timeout=60).state == "aborted"
    assert vm.sources()["vda"] == str(vm.disks[0].path)


def test_pivot_refused_when_the_link_now_leads_to_another_device(domains, people, worker, storage):
    """Invariant 9 for devices: the path must still lead to the device the copy began on
    (QEMU keeps writing the one it opened; the definition would name the other)."""
    vm = domains.seed()
    device = storage.block_device("swap-lv", SEED_SIZE)
    other = storage.block_device("swap-other", SEED_SIZE).resolve()
    host = make_hypervisor([vm.backups, storage.device_dir])
    assert hypervisor_sync(host).ok

    migration = request(people, host, vm, str(device))
    wait_for_state(migration, "ready", timeout=120)
    first = device.resolve()
    device.unlink()
    device.symlink_to(other)
    migration_approve(migration=migration, user=people["approver"])
    migration = wait_for_state(migration, ["completed", "failed"], timeout=120)
    assert migration.state == "failed"
    assert "another device now has its name" in migration.failure_reason
    assert f"the guest stays on {vm.disks[0].path}" in migration.failure_reason
    assert vm.sources()["vda"] == str(vm.disks[0].path)
    assert first.is_block_device() and other.is_block_device()  # neither device was touched


def test_undefine_procedure_redefines_the_domain_on_the_device(domains, people, worker, storage):
    """The older undefine/copy/redefine path writes <disk type='block'> into the saved definition."""
    vm = domains.seed()
    device = storage.block_device("undefine-lv", SEED_SIZE)
    host = make_hypervisor([vm.backups, storage.device_dir])
    assert hypervisor_sync(host).ok

    migration = request(people, host, vm, str(device), force_undefine=True)
    migration = approve_and_complete(migration, people)
    assert migration.definition_strategy == "undefine"
    assert vm.is_persistent()
    assert live_disk(vm.inactive_xml())[:2] == ("block", {"dev": str(device)})
    restored = AuditEvent.objects.get(migration=migration, event_type="definition_restored")
    assert restored.details["points_to"] == {"vda": str(device)}
    assert list_files_in_image(device) == SEED_FILES


def test_what_a_dead_session_left_is_cleaned_up(lab):
    """A session killed before its teardown leaves loop devices, a VG, a pool, links and an
    NBD server: the next session's remove_stale_storage takes them all away."""
    dead = 2**22 + 17  # above the highest pid Linux can give (2^22): no process has it
    assert not pid_alive(dead)
    left = StorageLab.create(dead)
    group = left.volume_group(64 * MiB)
    device = left.block_device("left-lv", 8 * MiB)
    loop = device.resolve()
    image = left.directory / "left.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(image), str(8 * MiB)], check=True)
    server = left.nbd_export("left", image, "raw")
    server_pid = int(server.pidfile.read_text())

    assert dead in remove_stale_storage(pid_alive)

    assert not left.directory.exists() and not left.device_dir.exists()
    listed = subprocess.run(["losetup", "--list", "--noheadings", "--output", "NAME"], capture_output=True, text=True)
    assert str(loop) not in listed.stdout.split() and str(group.pv) not in listed.stdout.split()
    pools = subprocess.run(["virsh", "-q", "-c", URI, "pool-list", "--all", "--name"], capture_output=True, text=True)
    assert group.name not in pools.stdout.split()
    state = (
        Path(f"/proc/{server_pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if Path(f"/proc/{server_pid}").exists()
        else "gone"
    )
    assert state in ("gone", "Z", "X")  # exited (a zombie until its parent reaps it)
