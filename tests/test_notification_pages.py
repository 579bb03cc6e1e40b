"""The admin pages for notifications: who may see and change what, the audit of every change,
the dashboard's banner for admins when deliveries fail."""

from __future__ import annotations

import pytest

from blockmig.models import AuditEvent, Migration
from blockmig.notify.models import Delivery, Notification, WebhookEndpoint
from hosts.models import Hypervisor

PAGES = ["/notifications/deliveries/", "/notifications/webhooks/"]


@pytest.fixture
def delivery(users) -> Delivery:
    host = Hypervisor.objects.create(name="kvm01", uri="test:///default", allowed_roots=["/b"])
    m = Migration.objects.create(hypervisor=host, domain_uuid="u1", domain_name="vm1", requested_by=users["operator"])
    n = Notification.objects.create(event="failed", migration=m, payload={}, subject="s", text="t")
    return Delivery.objects.create(
        notification=n,
        channel="webhook",
        recipient="http://127.0.0.1:9/x",
        recipient_name="chat",
        status="failed",
        attempts=8,
        last_error="HTTP 503 Service Unavailable",
    )


@pytest.mark.parametrize("role", ["viewer", "operator", "approver"])
@pytest.mark.parametrize("url", PAGES)
def test_only_admins_see_the_notification_pages(client_for, role, url):
    response = client_for(role).get(url)
    assert response.status_code == 403
    assert "admin role" in response.content.decode()


@pytest.mark.parametrize("url", PAGES)
def test_anonymous_is_sent_to_the_login_page(client_for, url):
    response = client_for("anonymous").get(url)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_deliveries_page_lists_status_attempts_and_error(client_for, delivery):
    html = client_for("admin").get("/notifications/deliveries/").content.decode()
    assert f'id="delivery-{delivery.pk}"' in html
    assert "HTTP 503 Service Unavailable" in html and ">Failed<" in html and ">8<" in html
    assert "Retry" in html


def test_deliveries_page_filters_by_status(client_for, delivery):
    html = client_for("admin").get("/notifications/deliveries/?status=sent").content.decode()
    assert f'id="delivery-{delivery.pk}"' not in html
    assert "No delivery matches these filters" in html


def test_empty_deliveries_page_says_what_will_appear(client_for, users):
    html = client_for("admin").get("/notifications/deliveries/").content.decode()
    assert "Nothing sent yet" in html


def test_admin_adds_an_endpoint_with_a_generated_secret_and_it_is_audited(client_for, users):
    response = client_for("admin").post(
        "/notifications/webhooks/",
        {"name": "chat", "url": "https://chat.example.org/hook", "secret": "", "enabled": "on", "events": ["failed"]},
    )
    endpoint = WebhookEndpoint.objects.get(name="chat")
    assert response.status_code == 302 and response["Location"] == f"/notifications/webhooks/{endpoint.pk}/"
    assert len(endpoint.secret) >= 32 and endpoint.events == ["failed"] and endpoint.enabled
    added = AuditEvent.objects.get(event_type="webhook_added")
    assert added.actor_name == "admin" and added.details["url"] == "https://chat.example.org/hook"
    assert endpoint.secret not in str(added.details)  # the secret never goes into the trail
    page = client_for("admin").get(response["Location"]).content.decode()
    assert endpoint.secret in page  # shown to admins, behind a <details>


def test_endpoint_form_refuses_what_cannot_work_and_says_why(client_for, users):
    WebhookEndpoint.objects.create(name="chat", url="https://a.example.org/", secret="x" * 20)
    response = client_for("admin").post(
        "/notifications/webhooks/", {"name": "chat", "url": "ftp://a.example.org/", "secret": "short", "events": ["failed"]}
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "An endpoint named chat exists already" in html
    assert "Enter a valid URL" in html or "http:// or https://" in html
    assert "at least 16 characters" in html
    assert WebhookEndpoint.objects.count() == 1


def test_editing_keeps_the_secret_unless_a_new_one_is_given_and_audits_the_change(client_for, users):
    endpoint = WebhookEndpoint.objects.create(name="chat", url="https://a.example.org/", secret="old-secret-0123456789")
    url = f"/notifications/webhooks/{endpoint.pk}/"
    client_for("admin").post(url, {"name": "chat", "url": "https://b.example.org/", "secret": "", "events": ["failed"]})
    endpoint.refresh_from_db()
    assert (endpoint.url, endpoint.secret, endpoint.enabled) == ("https://b.example.org/", "old-secret-0123456789", False)
    changed = AuditEvent.objects.get(event_type="webhook_changed")
    assert changed.details["changes"]["url"] == {"from": "https://a.example.org/", "to": "https://b.example.org/"}
    assert "secret" not in changed.details["changes"]
    client_for("admin").post(url, {"name": "chat", "url": "https://b.example.org/", "secret": "n" * 20, "events": ["failed"]})
    endpoint.refresh_from_db()
    assert endpoint.secret == "n" * 20
    assert AuditEvent.objects.filter(event_type="webhook_changed").last().details["changes"] == {"secret": "replaced"}


def test_only_admins_may_change_or_delete_endpoints(client_for, users):
    endpoint = WebhookEndpoint.objects.create(name="chat", url="https://a.example.org/", secret="x" * 20)
    for role in ("viewer", "operator", "approver"):
        client = client_for(role)
        assert client.post(f"/notifications/webhooks/{endpoint.pk}/", {"name": "evil", "url": "https://e/"}).status_code == 403
        assert client.post(f"/notifications/webhooks/{endpoint.pk}/delete/").status_code == 403
    assert WebhookEndpoint.objects.get().name == "chat"
    assert client_for("admin").post(f"/notifications/webhooks/{endpoint.pk}/delete/").status_code == 302
    assert not WebhookEndpoint.objects.exists()
    assert AuditEvent.objects.filter(event_type="webhook_deleted", actor_name="admin").exists()


def test_admin_retries_a_failed_delivery_and_it_is_audited(client_for, delivery):
    response = client_for("admin").post(f"/notifications/deliveries/{delivery.pk}/retry/")
    assert response.status_code == 302
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 0)
    retried = AuditEvent.objects.get(event_type="delivery_retried")
    assert retried.details["attempts"] == 8 and retried.migration_id == delivery.notification.migration_id
    assert client_for("operator").post(f"/notifications/deliveries/{delivery.pk}/retry/").status_code == 403


def test_dashboard_banner_shows_failing_deliveries_to_admins_only(client_for, delivery):
    admin = client_for("admin").get("/").content.decode()
    assert 'id="delivery-banner"' in admin and "HTTP 503 Service Unavailable" in admin
    assert "/notifications/deliveries/" in admin
    for role in ("viewer", "operator", "approver"):
        assert 'id="delivery-banner"' not in client_for(role).get("/").content.decode()


def test_no_banner_when_deliveries_succeed(client_for, delivery):
    Delivery.objects.filter(pk=delivery.pk).update(status="sent")
    assert 'id="delivery-banner"' not in client_for("admin").get("/").content.decode()


def test_nav_links_the_notifications_for_admins_only(client_for, users):
    assert 'href="/notifications/deliveries/"' in client_for("admin").get("/").content.decode()
    assert 'href="/notifications/deliveries/"' not in client_for("operator").get("/").content.decode()
