"""Functions the browser tests run inside the live site (conftest's `site.call`), on its
database and Redis channels, as a web or worker process would. Module-level and importable
without pytest, because the call server imports them by name."""

from __future__ import annotations

from pathlib import Path

PASSWORD = "pw-browser-tier"


def create_people() -> None:
    from tests.helpers import make_people

    make_people([("operator", "operator"), ("approver", "approver"), ("viewer", "viewer")], password=PASSWORD)


def register_domain(hypervisor_name: str, domain_uuid: str, allowed_root: str) -> dict:
    """A hypervisor for qemu:///system whose allowed root is the domain's backups dir, synced
    once so that the domain and disk pages exist."""
    from hosts.models import Disk, Hypervisor
    from hosts.sync.hypervisor import hypervisor_sync

    hypervisor = Hypervisor.objects.create(name=hypervisor_name, uri="qemu:///system", allowed_roots=[allowed_root])
    hypervisor_sync(hypervisor, force=True)
    disk = Disk.objects.get(domain__hypervisor=hypervisor, domain__uuid=domain_uuid, target="vda")
    return {"hypervisor": hypervisor.name, "disk_pk": disk.pk}


def request_migration(hypervisor_name: str, domain_uuid: str, destination: str, bandwidth_mib: int) -> int:
    from django.contrib.auth.models import User

    from blockmig.lifecycle import DiskRequest, migration_request
    from hosts.models import Hypervisor

    migration = migration_request(
        user=User.objects.get(username="operator"),
        hypervisor=Hypervisor.objects.get(name=hypervisor_name),
        domain_uuid=domain_uuid,
        disks=[DiskRequest("vda", destination)],
        mode="shallow",
        bandwidth_mib=bandwidth_mib,
    )
    return migration.pk


def approve(migration_id: int) -> None:
    from django.contrib.auth.models import User

    from blockmig.lifecycle import migration_approve
    from blockmig.models import Migration

    migration_approve(migration=Migration.objects.get(pk=migration_id), user=User.objects.get(username="approver"))


def abort_if_active(migration_id: int) -> None:
    from django.contrib.auth.models import User

    from blockmig.lifecycle import migration_abort
    from blockmig.models import Migration

    migration = Migration.objects.get(pk=migration_id)
    if migration.is_active:
        migration_abort(migration=migration, user=User.objects.get(username="operator"))


def sync_test_host(hypervisor_name: str, domains: list[str]) -> dict:
    """The host is libvirt's test driver on a node file holding `domains` (running, one raw
    disk each; a name keeps its uuid from one call to the next), and the real sync reads it,
    stores it and publishes the change (hosts.sync). Name → uuid of its domains afterwards."""
    import uuid

    from django.conf import settings

    from hosts.models import Domain, Hypervisor
    from hosts.sync.hypervisor import hypervisor_sync
    from hosts.testnode import FakeDomain, node_uri, node_xml

    directory = Path(settings.BLOCKMIG_TEST_DRIVER_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    node = directory / f"{hypervisor_name}.xml"
    fakes = []
    for name in domains:
        disk = (
            f"<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
            f"<source file='/srv/images/{name}.raw'/><target dev='vda' bus='virtio'/></disk>"
        )
        fakes.append(
            FakeDomain(str(uuid.uuid5(uuid.NAMESPACE_URL, f"{hypervisor_name}/{name}")), name, "running", True, disk, 1, 1)
        )
    node.write_text(node_xml(fakes), encoding="utf-8")
    hypervisor, _ = Hypervisor.objects.get_or_create(name=hypervisor_name, defaults={"uri": node_uri(node)})
    result = hypervisor_sync(hypervisor, force=True)
    assert result.ok, result.error
    return dict(Domain.objects.filter(hypervisor=hypervisor).values_list("name", "uuid"))


def lose_test_host(hypervisor_name: str) -> str:
    """The host's node file goes away (the host is gone); the real sync fails, keeps the
    last-known rows and publishes the stale state. Returns the error the pages show."""
    from django.conf import settings

    from hosts.models import Hypervisor
    from hosts.sync.hypervisor import hypervisor_sync

    (Path(settings.BLOCKMIG_TEST_DRIVER_DIR) / f"{hypervisor_name}.xml").unlink()
    result = hypervisor_sync(Hypervisor.objects.get(name=hypervisor_name))
    assert not result.ok
    return result.error
