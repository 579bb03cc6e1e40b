"""The "Migrate" buttons on the inventory pages (a disk's, a domain's several disks): for
operators only, disabled with the reason when the domain is not running or a job runs."""

import pytest
from django.template.loader import render_to_string
from django.test import RequestFactory
from django.urls import reverse

from hosts.models import Disk, Domain
from tests.migration_page_fixtures import host


@pytest.fixture
def domain(host):
    domain = Domain.objects.create(hypervisor=host, uuid="uuid-1", name="testvm", state="running")
    Disk.objects.create(domain=domain, target="vda", source="/images/vda.qcow2", format="qcow2")
    return domain


def render_button(user, **context):
    request = RequestFactory().get("/")
    request.user = user
    return render_to_string("blockmig/_disk_actions.html", context, request=request)


def test_migrate_button_only_for_operators(users, host, domain):
    disk = domain.disks.get()
    url = reverse("migration_new_disk", args=[host.name, domain.uuid, "vda"])
    assert f'href="{url}"' in render_button(users["operator"], hypervisor=host, domain=domain, disk=disk)
    assert "Migrate" not in render_button(users["viewer"], hypervisor=host, domain=domain, disk=disk)
    assert "Migrate" not in render_button(users["approver"], hypervisor=host, domain=domain, disk=disk)


def test_migrate_button_disabled_when_domain_not_running(users, host, domain):
    domain.state = "shutoff"
    disk = domain.disks.get()
    html = render_button(users["operator"], hypervisor=host, domain=domain, disk=disk)
    assert 'aria-disabled="true"' in html and "The domain is shutoff" in html and "href=" not in html


def test_migrate_button_disabled_when_a_job_runs(users, host, domain):
    disk = domain.disks.get()
    disk.job_type = "copy"
    html = render_button(users["operator"], hypervisor=host, domain=domain, disk=disk)
    assert 'aria-disabled="true"' in html and "A copy block job already runs on vda" in html


def test_domain_page_offers_migrating_several_disks(users, host, domain):
    request = RequestFactory().get("/")
    request.user = users["operator"]
    html = render_to_string("blockmig/_domain_actions.html", {"hypervisor": host, "domain": domain}, request=request)
    assert reverse("migration_new_domain", args=[host.name, domain.uuid]) in html


def test_disk_page_shows_the_button(client_for, host, domain):
    response = client_for("operator").get(reverse("disk_detail", args=[host.name, domain.uuid, "vda"]))
    assert reverse("migration_new_disk", args=[host.name, domain.uuid, "vda"]) in response.content.decode()
