"""A host's pivot policy (auto pivot): an admin sets it, audited; anyone else is refused,
audited; the list offers the toggle to admins only."""

from django.urls import reverse

from blockmig.models import AuditEvent
from tests.migration_page_fixtures import host


def test_admin_sets_auto_pivot_and_it_is_audited(client_for, users, host):
    response = client_for("admin").post(reverse("hypervisor_policy", args=[host.name]), {"auto_pivot": "on"}, follow=True)
    assert "pivots automatically when ready" in response.content.decode()
    host.refresh_from_db()
    assert host.auto_pivot is True
    event = AuditEvent.objects.get(event_type="policy_changed")
    assert event.actor == users["admin"] and event.hypervisor_name == "kvm01" and event.details["auto_pivot"] is True


def test_operator_cannot_set_auto_pivot_and_the_refusal_is_audited(client_for, users, host):
    response = client_for("operator").post(reverse("hypervisor_policy", args=[host.name]), {"auto_pivot": "on"})
    assert response.status_code == 403 and "admin role" in response.content.decode()
    host.refresh_from_db()
    assert host.auto_pivot is False and not AuditEvent.objects.filter(event_type="policy_changed").exists()
    event = AuditEvent.objects.get()
    assert (event.event_type, event.actor, event.hypervisor_name) == ("refused", users["operator"], "kvm01")
    assert event.details["action"] == "set_auto_pivot" and event.details["auto_pivot"] is True
    assert event.details["reason"] == "Only an admin can change a host's pivot policy."


def test_policy_toggles_on_the_list_only_for_admins(client_for, host):
    url = f'action="{reverse("hypervisor_policy", args=[host.name])}"'
    assert url in client_for("admin").get(reverse("migration_list")).content.decode()
    assert url not in client_for("operator").get(reverse("migration_list")).content.decode()
