"""What the queue's browser test runs inside the live site (conftest's `site.call`), on its
database: one host holding several lab domains, its copy limit set by an admin. Module-level
and importable without pytest (the call server imports them by name)."""

from __future__ import annotations

from tests.browser.remote import PASSWORD


def host_with_copy_limit(hypervisor_name: str, domain_uuids: list[str], allowed_roots: list[str], max_copies: int) -> None:
    """A hypervisor for qemu:///system whose allowed roots hold every domain's backups dir,
    synced once (so the domains and disks exist), with `max_copies` copies at once set
    through the admin's audited write, as the host's policy page sets it."""
    from blockmig.limits.setting import hypervisor_set_limits
    from hosts.models import Disk, Hypervisor
    from hosts.sync.hypervisor import hypervisor_sync
    from tests.helpers import make_user

    hypervisor = Hypervisor.objects.create(name=hypervisor_name, uri="qemu:///system", allowed_roots=allowed_roots)
    result = hypervisor_sync(hypervisor, force=True)
    assert result.ok, result.error
    for domain_uuid in domain_uuids:
        assert Disk.objects.filter(domain__hypervisor=hypervisor, domain__uuid=domain_uuid, target="vda").exists()
    admin = make_user("admin", "admin", password=PASSWORD, is_superuser=True)
    hypervisor_set_limits(hypervisor=hypervisor, user=admin, max_copies=max_copies, roots={})
