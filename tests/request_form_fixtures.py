"""What the request form tests share: a remote host with two roots, testvm with vda (a chain)
and vdb in the inventory, the disk and domain form URLs, a guard that fails the test if a
request reaches the lifecycle (`no_lifecycle`), and posting the disk form.

Test modules import the fixtures they use by name. A valid request handed to the real
lifecycle, against a running guest, is in tests/lab/test_migration_form_lab.py."""

import pytest
from django.urls import reverse

from blockmig import lifecycle
from hosts.models import ChainLayer, Disk, Domain, Hypervisor

ROOT = "/srv/images"
UUID = "6f1c2d3e-0000-4000-8000-000000000001"


@pytest.fixture
def host(db):
    return Hypervisor.objects.create(name="kvm01", uri="qemu+ssh://root@kvm01/system", allowed_roots=[ROOT, "/backups"])


@pytest.fixture
def domain(host):
    domain = Domain.objects.create(hypervisor=host, uuid=UUID, name="testvm", state="running")
    for target, source in (("vda", f"{ROOT}/snap2.qcow2"), ("vdb", f"{ROOT}/data.raw")):
        disk = Disk.objects.create(domain=domain, target=target, format="qcow2", source=source)
        ChainLayer.objects.create(disk=disk, depth=0, path=source, format="qcow2")
    ChainLayer.objects.create(disk=Disk.objects.get(target="vda"), depth=1, path=f"{ROOT}/snap1.qcow2", format="qcow2")
    return domain


@pytest.fixture
def disk_url(domain):
    return reverse("migration_new_disk", args=[domain.hypervisor.name, domain.uuid, "vda"])


@pytest.fixture
def domain_url(domain):
    return reverse("migration_new_domain", args=[domain.hypervisor.name, domain.uuid])


@pytest.fixture
def no_lifecycle(monkeypatch):
    """Fail the test if the form lets a request through to the lifecycle."""

    def refuse_call(**kwargs):
        raise AssertionError(f"lifecycle.migration_request was called with {kwargs}")

    monkeypatch.setattr(lifecycle, "migration_request", refuse_call)


def post_disk(client, url, **fields):
    data = {"destination": f"{ROOT}/copy.qcow2", "mode": "shallow", "dest_format": "qcow2", "bandwidth_mib": "0"}
    data.update(fields)
    return client.post(url, data)


def field_errors(response, name):
    return response.context["form"].errors.get(name, [])
