"""What the host socket reads per render of the hypervisor, domain and disk pages is bounded,
whatever the size of the host."""

from __future__ import annotations

import pytest

from hosts.models import ChainLayer, Disk, Domain
from tests.live_sockets import add_chain, people, private_channel_layer, seed

pytestmark = pytest.mark.django_db(transaction=True)


def test_inventory_page_renders_do_not_grow_with_disks_or_domains(seed, people):
    """What a host socket reads per render is bounded whatever the size of the host."""
    from django.db import connection
    from django.test import RequestFactory
    from django.test.utils import CaptureQueriesContext

    from blockmig.live.disk import disk_pages
    from blockmig.live.domain import domain_page
    from blockmig.live.hypervisor import hypervisor_page

    host, domain, disk = seed["host"], seed["domain"], seed["disk"]
    request = RequestFactory().get("/hosts/lab/")
    request.user = people["operator"]
    request.user.has_perm("hosts.view_disk")  # warm the permission cache, as a socket's user is

    def count(render) -> int:
        with CaptureQueriesContext(connection) as captured:
            render()
        return len(captured)

    def renders():
        return (
            count(lambda: hypervisor_page(request, host.pk, "", "1")),
            count(lambda: domain_page(request, host.pk, domain.uuid)),
            count(lambda: disk_pages(request, host.pk, [disk.pk], {})),
        )

    small = renders()
    for i in range(30):
        extra = Disk.objects.create(domain=domain, target=f"vd{i:02d}", source=f"/srv/lab/x{i}.qcow2")
        add_chain(extra, [f"x{i}-{n}" for n in range(5)])
    Domain.objects.bulk_create(
        Domain(hypervisor=host, uuid=f"20000000-0000-4000-8000-{i:012d}", name=f"vm-{i:03d}", state="running") for i in range(120)
    )
    for depth in range(3, 12):
        ChainLayer.objects.create(disk=disk, depth=depth, path=f"/srv/lab/more-{depth}.qcow2", format="qcow2")
    assert renders() == small
    assert max(small) <= 8
