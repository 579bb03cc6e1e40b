"""The request form shows the real lifecycle's refusals: beside the field a refusal names, or
above the form; the host is a libvirt test:/// node (preflight asks it), or disabled (refused
before libvirt), and the refused start is audited."""

import pytest

from blockmig.models import AuditEvent, Migration
from hosts.testnode import FakeDomain, node_uri, node_xml
from tests.request_form_fixtures import ROOT, UUID, disk_url, domain, field_errors, host, post_disk


@pytest.fixture
def host_says(host, tmp_path):
    """host_says("shutoff") → the host becomes a libvirt test:/// node on which testvm is in
    that state, whatever the stored inventory says: the real lifecycle asks it (preflight)."""

    def make(state: str = "running"):
        disks = "".join(
            f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{ROOT}/{name}'/>"
            f"<target dev='{target}' bus='virtio'/></disk>"
            for target, name in (("vda", "snap2.qcow2"), ("vdb", "data.raw"))
        )
        node = tmp_path / "kvm01.xml"
        node.write_text(node_xml([FakeDomain(UUID, "testvm", state, True, disks, 1, 2)]), encoding="utf-8")
        host.uri = node_uri(node)
        host.save()
        return host

    return make


def test_lifecycle_refusal_with_a_field_shows_beside_that_field(client_for, host_says, disk_url):
    # The inventory says the host can write synchronously, so the form offers it; the host
    # itself (libvirt's test driver) cannot, and preflight refuses beside that box.
    host = host_says("running")
    host.supports_sync_writes = True
    host.save()
    response = post_disk(client_for("operator"), disk_url, synchronous_writes="on")
    message = "kvm01 cannot do synchronous writes (needs libvirt ≥ 8.0 and QEMU ≥ 3.0)."
    assert response.status_code == 200
    assert field_errors(response, "synchronous_writes") == [message]
    assert 'id="id_synchronous_writes_error"' in response.content.decode()
    assert not Migration.objects.exists()
    assert AuditEvent.objects.get().details["reason"] == message


def test_lifecycle_refusal_without_a_field_shows_above_the_form(client_for, host_says, disk_url):
    # The inventory (last sync) says running; the host says shut off.
    host_says("shutoff")
    response = post_disk(client_for("operator"), disk_url)
    assert response.context["form"].non_field_errors() == ["testvm is shutoff, not running: a block copy needs a running domain."]
    assert 'role="alert"' in response.content.decode()
    assert not Migration.objects.exists()


def test_real_lifecycle_refuses_a_disabled_host_before_libvirt(client_for, host, disk_url):
    host.enabled = False
    host.save()
    response = post_disk(client_for("operator"), disk_url)
    assert response.context["form"].non_field_errors() == ["kvm01 is disabled: an admin must enable it first."]
    assert not Migration.objects.exists()
    # The refused start is in the audit trail, with who, where and why.
    event = AuditEvent.objects.get()
    assert (event.event_type, event.actor_name, event.hypervisor_name, event.migration) == ("refused", "operator", "kvm01", None)
    assert event.details["reason"] == "kvm01 is disabled: an admin must enable it first."
