"""Admins set a host's copy limits (blockmig.limits.setting), audited with what changed;
refusals audited and changing nothing; the limits form on the policy page, admins only."""

from __future__ import annotations

import pytest
from django.urls import reverse

from blockmig.errors import Refused
from blockmig.limits import setting
from blockmig.models import AuditEvent
from tests.limits_fixtures import ROOT_A, ROOT_B, host


def test_admin_sets_limits_audited_with_what_changed(host, users):
    setting.hypervisor_set_limits(hypervisor=host, user=users["admin"], max_copies=4, roots={ROOT_A: (1, 200), ROOT_B: (2, 0)})
    host.refresh_from_db()
    assert host.max_copies == 4 and host.root_limit(ROOT_A) == (1, 200) and host.root_limit(ROOT_B) == (2, 0)
    event = AuditEvent.objects.get(event_type="limits_changed")
    assert event.actor_name == "admin" and event.hypervisor_name == "local"
    assert event.details["changed"] == {
        "max_copies": {"from": 2, "to": 4},
        ROOT_A: {"from": {"max_copies": 2, "bandwidth_mib": 0}, "to": {"max_copies": 1, "bandwidth_mib": 200}},
    }


@pytest.mark.parametrize(
    ("role", "max_copies", "roots", "message"),
    [
        ("operator", 3, {}, "Only an admin can change a host's copy limits."),
        ("admin", -1, {}, "Copies at once on the host must be a whole number from 0 (no limit) to 1000."),
        ("admin", 2, {"/elsewhere": (1, 0)}, "/elsewhere is not an allowed root of local: add it to the host first."),
        ("admin", 2, {ROOT_A: (1, -5)}, f"The bandwidth total of {ROOT_A} must be a whole number of MiB/s"),
    ],
)
def test_refused_limit_changes_are_audited_and_change_nothing(host, users, role, max_copies, roots, message):
    with pytest.raises(Refused, match=message.replace("(", r"\(").replace(")", r"\)")):
        setting.hypervisor_set_limits(hypervisor=host, user=users[role], max_copies=max_copies, roots=roots)
    host.refresh_from_db()
    assert (host.max_copies, host.root_limits) == (2, {})
    event = AuditEvent.objects.get(event_type="refused")
    assert event.details["action"] == "set_limits" and event.details["reason"].startswith(message)


def test_policy_page_offers_the_limits_form_to_an_admin_only(host, client_for):
    admin_page = client_for("admin").get(reverse("hypervisor_policy", args=[host.name])).content.decode()
    assert 'action="/hosts/local/limits/"' in admin_page and f'aria-label="Copies at once into {ROOT_A}"' in admin_page
    viewer_page = client_for("viewer").get(reverse("hypervisor_policy", args=[host.name])).content.decode()
    assert "Copy limits" in viewer_page and "Save limits" not in viewer_page
    assert "Only an admin can change them." in viewer_page


def test_policy_page_saves_limits_and_the_host_page_shows_them(host, client_for):
    admin = client_for("admin")
    data = {"max_copies": "3", "root_0_copies": "1", "root_0_bandwidth": "120", "root_1_copies": "2", "root_1_bandwidth": "0"}
    response = admin.post(reverse("hypervisor_limits", args=[host.name]), data)
    assert response.status_code == 302
    host.refresh_from_db()
    assert host.max_copies == 3 and host.root_limit(ROOT_A) == (1, 120)
    page = admin.get(reverse("hypervisor_detail", args=[host.name])).content.decode()
    assert "3 at once on the host" in page and "1 at once, 120 MiB/s shared" in page


def test_policy_page_shows_field_errors_and_keeps_the_limits(host, client_for):
    data = {"max_copies": "-2", "root_0_copies": "x", "root_0_bandwidth": "0", "root_1_copies": "2", "root_1_bandwidth": "0"}
    response = client_for("admin").post(reverse("hypervisor_limits", args=[host.name]), data)
    assert response.status_code == 400
    page = response.content.decode()
    assert "Copies cannot be negative; use 0 for no limit." in page and "Give a whole number of copies" in page
    host.refresh_from_db()
    assert host.max_copies == 2


def test_non_admin_cannot_post_limits(host, client_for):
    data = {"max_copies": "9", "root_0_copies": "9", "root_0_bandwidth": "0", "root_1_copies": "9", "root_1_bandwidth": "0"}
    response = client_for("operator").post(reverse("hypervisor_limits", args=[host.name]), data)
    assert response.status_code == 403
    host.refresh_from_db()
    assert host.max_copies == 2
    assert AuditEvent.objects.get(event_type="refused").details["action"] == "set_limits"
