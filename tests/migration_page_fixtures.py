"""What the migration page tests share: a remote host that is never reached, migrations made
as rows in any state (`make`), the page's HTML and which action forms it holds.

Test modules import the fixtures they use by name; nothing here needs libvirt."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from blockmig.models import AuditEvent, Migration, MigrationDisk
from blockmig.states import State
from hosts.models import Hypervisor

GIB = 1024**3
MIB = 1024**2


@pytest.fixture
def host(db):
    return Hypervisor.objects.create(name="kvm01", uri="qemu+ssh://root@kvm01/system", allowed_roots=["/backups"])


@pytest.fixture
def make(host, users):
    """make(state, requested_by="operator", disks=("vda",), events=1, **fields) → Migration."""

    def build(state=State.COPYING, requested_by="operator", disks=("vda",), events=1, **fields):
        m = Migration.objects.create(
            hypervisor=host, domain_uuid="uuid-1", domain_name="testvm", state=state,
            requested_by=users[requested_by], **fields,
        )  # fmt: skip
        for target in disks:
            MigrationDisk.objects.create(
                migration=m, hypervisor=host, domain_uuid=f"uuid-{m.pk}", target=target,
                source_path=f"/images/{target}.qcow2", destination=f"/backups/{target}-copy.qcow2",
                cur=GIB // 4, end=GIB, active=state not in (State.COMPLETED, State.ABORTED, State.FAILED),
            )  # fmt: skip
        for i in range(events):
            AuditEvent.objects.create(
                event_type="requested" if i == 0 else "copying", migration=m, actor=users[requested_by] if i == 0 else None,
                actor_name=requested_by if i == 0 else "blockmig", hypervisor_name=host.name, domain_name="testvm",
                to_state="requested" if i == 0 else "copying", from_state="" if i == 0 else "requested",
                created_at=timezone.now() - timedelta(minutes=events - i),
            )  # fmt: skip
        return m

    return build


def page(client, m):
    return client.get(reverse("migration_detail", args=[m.pk])).content.decode()


def action_urls(m):
    return {name: reverse(f"migration_{name}", args=[m.pk]) for name in ("approve", "abort", "bandwidth")}


def buttons(html, m):
    return {name for name, url in action_urls(m).items() if f'action="{url}"' in html}
