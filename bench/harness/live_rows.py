"""Rows for the benches of the live pages (push, fan-out, handshake flood): a copying
migration on a test-driver host, and viewers logged in with a session cookie each."""

from __future__ import annotations


def copying_migration(domain_uuid: str, domain_name: str, bytes_done: int = 0) -> int:
    """The roles, an operator, a host `bench` (test:///default) and a migration of one 1 GiB
    disk copying on it, requested by the operator; the migration's id."""
    from django.contrib.auth.models import Group, User

    from blockmig.models import Migration, MigrationDisk
    from blockmig.states import State
    from hosts.models import Hypervisor
    from hosts.roles import setup_roles

    setup_roles()
    operator = User.objects.create_user("operator")
    operator.groups.add(Group.objects.get(name="operator"))
    host = Hypervisor.objects.create(name="bench", uri="test:///default")
    migration = Migration.objects.create(
        hypervisor=host, domain_uuid=domain_uuid, domain_name=domain_name,
        requested_by=operator, state=State.COPYING, bytes_total=1 << 30, bytes_done=bytes_done,
    )  # fmt: skip
    MigrationDisk.objects.create(
        migration=migration, hypervisor=host, domain_uuid=migration.domain_uuid, target="vda",
        source_path="/srv/a.qcow2", destination="/srv/b.qcow2", end=1 << 30,
    )  # fmt: skip
    return migration.pk


def viewer_cookie(username: str) -> str:
    """A new user in the viewer group, logged in: the `sessionid=…` cookie of its session."""
    from django.contrib.auth.models import Group, User
    from django.test import Client

    user = User.objects.create_user(username)
    user.groups.add(Group.objects.get(name="viewer"))
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"
