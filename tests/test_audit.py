"""The audit trail: filters, CSV/JSON export of exactly the filtered set, and that nothing
(model, queryset, admin, app) can change or delete an event."""

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.admin.sites import site
from django.db import connection
from django.test import AsyncClient, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from blockmig import selectors
from blockmig.admin import AuditEventAdmin, MigrationAdmin
from blockmig.models import AuditEvent, Migration
from blockmig.selectors import EXPORT_COLUMNS
from hosts.models import Hypervisor
from tests.helpers import make_user

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def trail(users):
    """Six events on two hosts, two domains, three actors, over three hours."""
    host = Hypervisor.objects.create(name="kvm01", uri="test:///default")
    m = Migration.objects.create(hypervisor=host, domain_uuid="u1", domain_name="testvm", requested_by=users["operator"])
    rows = [
        ("requested", users["operator"], "kvm01", "testvm", "", "requested", 0, m),
        ("copying", None, "kvm01", "testvm", "requested", "copying", 10, m),
        ("ready", None, "kvm01", "testvm", "copying", "ready", 40, m),
        ("approved", users["approver"], "kvm01", "testvm", "ready", "pivoting", 60, m),
        ("policy_changed", users["admin"], "kvm02", "", "", "", 120, None),
        ("requested", users["operator"], "kvm02", "webdb", "", "requested", 180, None),
    ]
    events = {}
    for i, (kind, actor, host_name, domain, frm, to, minutes, migration) in enumerate(rows):
        events[i] = AuditEvent.objects.create(
            event_type=kind, actor=actor, actor_name=actor.username if actor else "blockmig",
            hypervisor_name=host_name, domain_name=domain, migration=migration, from_state=frm, to_state=to,
            details={"n": i, "note": "=HYPERLINK(\"x\")" if i == 5 else "plain"}, disk_targets="vda",
            created_at=T0 + timedelta(minutes=minutes),
        )  # fmt: skip
    return events


def shown(client, query=""):
    """Ids of the events the audit page lists for this query, in page order."""
    response = client.get(reverse("audit_list") + query)
    assert response.status_code == 200
    return [e.pk for e in response.context["page"].object_list]


def ids(trail, *indexes):
    return [trail[i].pk for i in indexes]


# ---- the page and its filters --------------------------------------------------------------


def test_viewer_sees_every_event_newest_first(client_for, trail):
    assert shown(client_for("viewer")) == ids(trail, 5, 4, 3, 2, 1, 0)


def test_user_without_a_role_is_refused(client, trail):
    client.force_login(make_user("nobody"))
    response = client.get(reverse("audit_list"))
    assert response.status_code == 403 and "viewer role" in response.content.decode()


def test_filter_by_host(client_for, trail):
    assert shown(client_for("viewer"), "?host=kvm02") == ids(trail, 5, 4)


def test_filter_by_domain_part(client_for, trail):
    assert shown(client_for("viewer"), "?domain=webd") == ids(trail, 5)


def test_filter_by_user(client_for, trail):
    assert shown(client_for("viewer"), "?user=operator") == ids(trail, 5, 0)


def test_filter_by_system_events(client_for, trail):
    assert shown(client_for("viewer"), "?user=-") == ids(trail, 2, 1)


def test_filter_by_to_state(client_for, trail):
    assert shown(client_for("viewer"), "?state=requested") == ids(trail, 5, 0)


def test_filter_by_event_type(client_for, trail):
    assert shown(client_for("viewer"), "?event_type=approved") == ids(trail, 3)


def test_filter_by_migration(client_for, trail):
    assert shown(client_for("viewer"), f"?migration={trail[0].migration_id}") == ids(trail, 3, 2, 1, 0)


def test_time_range_is_read_in_the_users_zone(client_for, trail):
    client = client_for("viewer")
    client.cookies["tz"] = "Europe/Paris"  # UTC+1 in March
    # 13:40–14:00 Paris = 12:40–13:00 UTC: the ready (12:40) and approved (13:00) events.
    assert shown(client, "?since=2026-03-01T13:40&until=2026-03-01T14:00") == ids(trail, 3, 2)


def test_from_after_to_is_an_error_beside_to(client_for, trail):
    response = client_for("viewer").get(reverse("audit_list") + "?since=2026-03-02T00:00&until=2026-03-01T00:00")
    assert response.context["form"].errors["until"] == ["“To” is before “From”."]


def test_filter_choices_offer_hosts_people_and_event_types(client_for, trail):
    Hypervisor.objects.create(name="kvm02", uri="test:///default")
    AuditEvent.objects.create(event_type="definition_saved", actor_name="blockmig")
    html = client_for("viewer").get(reverse("audit_list")).content.decode()
    for value in ('value="kvm02"', 'value="approver"', 'value="policy_changed"', 'value="definition_saved"'):
        assert value in html
    assert "(system — no user)" in html
    assert 'value="blockmig"' not in html  # the engine is the "(system)" choice, not a user


def test_host_filter_works_for_a_host_no_longer_in_the_inventory(client_for, trail):
    # kvm02 has events but no Hypervisor row: the filter still narrows by name, and says so.
    client = client_for("viewer")
    assert shown(client, "?host=kvm02") == ids(trail, 5, 4)
    assert '<option value="kvm02" selected>' in client.get(reverse("audit_list") + "?host=kvm02").content.decode()


def test_events_show_who_what_and_times_with_datetime(client_for, trail):
    html = client_for("viewer").get(reverse("audit_list")).content.decode()
    assert f'<time datetime="{trail[3].created_at.isoformat()}"' in html
    assert "Approved" in html and "Pivot policy changed" in html


def test_audit_page_paginates_by_50(client_for, trail):
    for i in range(60):
        AuditEvent.objects.create(event_type="note", actor_name="blockmig", created_at=T0 - timedelta(minutes=i))
    response = client_for("viewer").get(reverse("audit_list"))
    assert len(response.context["page"].object_list) == 50
    assert "Page 1 of 2" in response.content.decode()


def test_audit_page_queries_do_not_grow_with_events(client_for, trail):
    client = client_for("viewer")
    with CaptureQueriesContext(connection) as few:
        client.get(reverse("audit_list"))
    for i in range(40):
        AuditEvent.objects.create(event_type="note", actor_name="blockmig", created_at=T0 - timedelta(minutes=i))
    with CaptureQueriesContext(connection) as many:
        client.get(reverse("audit_list"))
    assert len(few) == len(many) <= 12


# ---- export -----------------------------------------------------------------------------------


def read_csv(response):
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def read_json(response):
    assert response["Content-Type"] == "application/json"
    return json.loads(b"".join(response.streaming_content))


def test_csv_export_holds_exactly_the_filtered_events(client_for, trail):
    response = client_for("viewer").get(reverse("audit_list") + "?host=kvm01&format=csv")
    rows = read_csv(response)
    assert list(rows[0].keys()) == EXPORT_COLUMNS
    assert [int(r["id"]) for r in rows] == ids(trail, 3, 2, 1, 0)
    approved = rows[0]
    assert approved["event_type"] == "approved" and approved["user"] == "approver" and approved["host"] == "kvm01"
    assert approved["from_state"] == "ready" and approved["to_state"] == "pivoting"
    assert approved["created_at"] == "2026-03-01T13:00:00+00:00"
    assert json.loads(approved["details"]) == {"n": 3, "note": "plain"}
    assert approved["migration"] == str(trail[0].migration_id)


def test_json_export_holds_exactly_the_filtered_events(client_for, trail):
    response = client_for("viewer").get(reverse("audit_export") + "?user=operator&format=json")
    rows = read_json(response)
    assert [r["id"] for r in rows] == ids(trail, 5, 0)
    assert set(rows[0]) == set(EXPORT_COLUMNS)
    assert rows[1]["details"] == {"n": 0, "note": "plain"} and rows[1]["migration"] == trail[0].migration_id


def test_export_of_nothing_is_well_formed(client_for, trail):
    assert read_json(client_for("viewer").get(reverse("audit_export") + "?host=nowhere&format=json")) == []
    assert read_csv(client_for("viewer").get(reverse("audit_export") + "?host=nowhere&format=csv")) == []


def test_export_streams_in_chunks(client_for, trail, monkeypatch):
    monkeypatch.setattr(selectors, "EXPORT_CHUNK", 2)
    response = client_for("viewer").get(reverse("audit_export") + "?format=json")
    assert response.streaming
    rows = read_json(response)
    assert [r["id"] for r in rows] == ids(trail, 5, 4, 3, 2, 1, 0)


def test_csv_export_defuses_spreadsheet_formulas(client_for, trail):
    rows = read_csv(client_for("viewer").get(reverse("audit_export") + "?domain=webdb&format=csv"))
    assert json.loads(rows[0]["details"])["note"].startswith("=HYPERLINK")  # JSON text, starts with {
    assert rows[0]["details"].startswith("{")


def test_export_with_a_bad_filter_is_refused_not_widened(client_for, trail):
    response = client_for("viewer").get(reverse("audit_export") + "?migration=abc&format=csv")
    assert response.status_code == 400 and b"Fix the filters first" in response.content


def test_export_unknown_format_refused(client_for, trail):
    assert client_for("viewer").get(reverse("audit_list") + "?format=xml").status_code == 400


@pytest.mark.django_db(transaction=True)
async def test_export_streams_asynchronously_under_asgi(users_async, trail_async):
    client = AsyncClient()
    await client.aforce_login(users_async["viewer"])
    response = await client.get(reverse("audit_export") + "?format=json&host=kvm01")
    assert response.is_async
    body = b"".join([chunk async for chunk in response.streaming_content])
    assert [r["host"] for r in json.loads(body)] == ["kvm01"] * 4


@pytest.fixture
def users_async(transactional_db):
    return {"viewer": make_user("viewer", "viewer"), "operator": make_user("operator")}


@pytest.fixture
def trail_async(users_async):
    host = Hypervisor.objects.create(name="kvm01", uri="test:///default")
    m = Migration.objects.create(hypervisor=host, domain_uuid="u1", domain_name="testvm", requested_by=users_async["operator"])
    for i in range(4):
        AuditEvent.objects.create(event_type="x", migration=m, hypervisor_name="kvm01", created_at=T0 + timedelta(minutes=i))
    AuditEvent.objects.create(event_type="x", hypervisor_name="kvm02", created_at=T0)


# ---- append-only ----------------------------------------------------------------------------


def test_model_refuses_update(trail):
    event = trail[0]
    event.event_type = "forged"
    with pytest.raises(PermissionError):
        event.save()
    assert AuditEvent.objects.get(pk=event.pk).event_type == "requested"


def test_model_refuses_delete(trail):
    with pytest.raises(PermissionError):
        trail[0].delete()
    assert AuditEvent.objects.filter(pk=trail[0].pk).exists()


def test_queryset_refuses_update(trail):
    with pytest.raises(PermissionError):
        AuditEvent.objects.filter(pk=trail[0].pk).update(event_type="forged")
    with pytest.raises(PermissionError):
        trail[0].migration.events.update(actor_name="someone else")
    assert not AuditEvent.objects.filter(event_type="forged").exists()


def test_queryset_refuses_delete(trail):
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()
    with pytest.raises(PermissionError):
        trail[0].migration.events.all().delete()
    assert AuditEvent.objects.count() == 6


def test_queryset_refuses_bulk_update(trail):
    event = trail[0]
    event.actor_name = "forged"
    with pytest.raises(PermissionError):
        AuditEvent.objects.bulk_update([event], ["actor_name"])
    assert AuditEvent.objects.get(pk=event.pk).actor_name == "operator"


def test_migration_with_events_cannot_be_deleted(trail):
    from django.db.models import ProtectedError

    with pytest.raises(ProtectedError):
        trail[0].migration.delete()


@pytest.fixture
def superuser(db):
    return make_user("root", is_superuser=True, is_staff=True)


def test_admin_gives_no_add_change_or_delete_even_to_superusers(superuser):
    request = RequestFactory().get("/admin/")
    request.user = superuser
    for model, admin_class in ((AuditEvent, AuditEventAdmin), (Migration, MigrationAdmin)):
        model_admin = site._registry[model]
        assert isinstance(model_admin, admin_class)
        assert model_admin.has_view_permission(request)
        assert not model_admin.has_add_permission(request)
        assert not model_admin.has_change_permission(request)
        assert not model_admin.has_delete_permission(request)


def test_admin_views_refuse_changes(client, superuser, trail):
    client.force_login(superuser)
    event = trail[3]
    assert client.get(reverse("admin:blockmig_auditevent_changelist")).status_code == 200
    change_url = reverse("admin:blockmig_auditevent_change", args=[event.pk])
    page = client.get(change_url)
    assert page.status_code == 200 and b'name="event_type"' not in page.content  # read-only view
    assert client.post(change_url, {"event_type": "forged"}).status_code == 403
    assert client.post(reverse("admin:blockmig_auditevent_delete", args=[event.pk]), {"post": "yes"}).status_code == 403
    assert client.get(reverse("admin:blockmig_auditevent_add")).status_code == 403
    event.refresh_from_db()
    assert event.event_type == "approved"


def test_app_has_no_url_that_edits_audit_events():
    from django.urls import get_resolver

    names = {name for name in get_resolver().reverse_dict if isinstance(name, str) and "audit" in name}
    assert names == {"audit_list", "audit_export"}  # both read-only (GET); the admin's are refused above
