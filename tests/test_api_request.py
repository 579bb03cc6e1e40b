"""Requesting a migration through the REST API: the form's fields, rules and messages (the
page says the very same words), the lifecycle's refusals before libvirt, shape errors naming
the field, and bodies that are not JSON."""

from __future__ import annotations

import pytest
from django.urls import reverse

from blockmig.models import AuditEvent, Migration
from tests.api_fixtures import UUID, api, domain, error, host


def request_body(**overrides) -> dict:
    return {
        "hypervisor": "kvm01",
        "domain": "testvm",
        "disks": [{"target": "vda", "destination": "/backups/copy.qcow2"}],
        **overrides,
    }


def test_viewer_may_not_request(api, domain):
    err = error(response := api("viewer").post("/api/v1/migrations/", request_body()))
    assert response.status_code == 403 and err["message"] == "Starting a migration needs the operator role."


@pytest.mark.parametrize(
    ("destination", "message"),
    [
        ("backups/copy.qcow2", "Give an absolute path (starting with /) inside one of the allowed roots."),
        ("/etc/copy.qcow2", "/etc/copy.qcow2 is outside the allowed roots (/backups)."),
        ("/backups/../etc/c.qcow2", "The path may not contain “..”: name the directory directly."),
    ],
)
def test_destination_refused_with_the_forms_message(api, client_for, domain, destination, message):
    response = api("operator").post("/api/v1/migrations/", request_body(disks=[{"target": "vda", "destination": destination}]))
    assert response.status_code == 400
    err = error(response)
    assert err["code"] == "invalid" and err["message"] == message
    assert err["fields"] == {"disks.vda.destination": [message]}
    # The page says the very same words for the very same input.
    page = client_for("operator").post(
        reverse("migration_new_disk", args=["kvm01", UUID, "vda"]),
        {"destination": destination, "mode": "shallow", "dest_format": "qcow2", "bandwidth_mib": "0"},
    )
    assert message in page.content.decode().replace("&quot;", '"').replace("&#x27;", "'")
    assert Migration.objects.count() == 0
    refused = AuditEvent.objects.filter(event_type="refused", details__action="request").order_by("pk").first()
    assert refused.via.startswith("api token") and message in refused.details["reason"]


def test_shallow_raw_refused_with_the_forms_message(api, domain):
    err = error(api("operator").post("/api/v1/migrations/", request_body(dest_format="raw")))
    assert err["fields"] == {
        "dest_format": ["A shallow copy must be qcow2: raw cannot point at the backing chain. Choose qcow2, or a full copy."]
    }


def test_disabled_host_refused_by_the_lifecycle_before_libvirt(api, host, domain):
    host.enabled = False
    host.save()
    response = api("operator").post("/api/v1/migrations/", request_body())
    assert response.status_code == 409
    assert error(response) == {"code": "refused", "message": "kvm01 is disabled: an admin must enable it first.", "fields": {}}
    assert Migration.objects.count() == 0


def test_unreachable_host_refused_and_nothing_changes(api, domain):
    err = error(api("operator").post("/api/v1/migrations/", request_body()))
    assert err["code"] == "refused" and err["message"].startswith("kvm01 is unreachable")
    assert Migration.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [({"domain": "testvm", "disks": []}, "hypervisor"), (request_body(disks=[]), "disks"), (request_body(disks="vda"), "disks")],
)
def test_request_shape_errors_name_the_field(api, domain, body, field):
    err = error(response := api("operator").post("/api/v1/migrations/", body))
    assert response.status_code == 400 and field in err["fields"]


def test_request_for_an_unknown_disk_is_404(api, domain):
    err = error(api("operator").post("/api/v1/migrations/", request_body(disks=[{"target": "vdq", "destination": "/backups/x"}])))
    assert err["code"] == "not_found" and err["message"] == "testvm has no disk vdq (it has vda)."


def test_not_json_is_refused_clearly(api, domain):
    operator = api("operator")
    response = operator.client.post("/api/v1/migrations/", "{not json", content_type="application/json", headers=operator.headers)
    assert response.status_code == 400 and error(response)["code"] == "malformed_request"
    response = operator.client.post("/api/v1/migrations/", {"a": "b"}, headers=operator.headers)
    assert response.status_code == 415 and error(response)["code"] == "unsupported_media_type"
