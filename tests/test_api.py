"""The REST API: every endpoint for every role, the same rules and messages as the pages
(four eyes, preflight's refusals, the lifecycle's), JSON refusals with stable codes, and
the audit trail marking what came through a token.

Rows are made directly, as in tests/test_migration_pages.py; nothing here needs libvirt
(a request that passes preflight and runs is in tests/lab/test_cli_lab.py)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from blockmig.api.errors import CODES
from blockmig.api.tokens import token_create, token_revoke
from blockmig.models import AuditEvent, Migration, MigrationDisk
from blockmig.states import State
from hosts.models import ChainLayer, Disk, Domain, Hypervisor
from tests.helpers import make_user

GIB = 1024**3
UUID = "0b1e0000-0000-4000-8000-000000000001"


@pytest.fixture
def host(db):
    return Hypervisor.objects.create(
        name="kvm01", uri="qemu+tcp://unreachable.invalid/system", allowed_roots=["/backups"], last_sync_ok_at=timezone.now()
    )


@pytest.fixture
def domain(host):
    domain = Domain.objects.create(hypervisor=host, uuid=UUID, name="testvm", state="running")
    disk = Disk.objects.create(domain=domain, target="vda", format="qcow2", source="/images/snap2.qcow2")
    for depth, name in enumerate(["snap2", "snap1", "base"]):
        ChainLayer.objects.create(disk=disk, depth=depth, path=f"/images/{name}.qcow2", format="qcow2")
    return domain


@pytest.fixture
def make(host, users):
    def build(state=State.COPYING, requested_by="operator", **fields) -> Migration:
        m = Migration.objects.create(
            hypervisor=host, domain_uuid=UUID, domain_name="testvm", state=state, requested_by=users[requested_by], **fields
        )
        MigrationDisk.objects.create(
            migration=m, hypervisor=host, domain_uuid=f"uuid-{m.pk}", target="vda", source_path="/images/snap2.qcow2",
            source_chain=["/images/snap2.qcow2", "/images/snap1.qcow2", "/images/base.qcow2"],
            destination="/backups/copy.qcow2", cur=GIB // 4, end=GIB,
            active=state not in (State.COMPLETED, State.ABORTED, State.FAILED),
        )  # fmt: skip
        return m

    return build


class Api:
    """A client that sends JSON with `Authorization: Bearer <token>`."""

    def __init__(self, token: str | None = None):
        self.client = Client()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, url: str, **params):
        return self.client.get(url, params, headers=self.headers)

    def post(self, url: str, body: dict | None = None, **headers):
        return self.client.post(url, json.dumps(body or {}), content_type="application/json", headers={**self.headers, **headers})

    def delete(self, url: str):
        return self.client.delete(url, headers=self.headers)


@pytest.fixture
def api(users):
    """api("operator") → an Api with a fresh token of that role's user; api(None) → no token."""

    def make(role: str | None, name: str = "ci") -> Api:
        if role is None:
            return Api()
        _, plain = token_create(user=users[role], name=f"{name}-{role}-{Migration.objects.count()}-{AuditEvent.objects.count()}")
        return Api(plain)

    return make


def error(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "fields"}, body
    assert body["error"]["code"] in CODES, body
    return body["error"]


# ---- authentication ---------------------------------------------------------------------

READ_URLS = [
    "/api/v1/me/",
    "/api/v1/hypervisors/",
    "/api/v1/hypervisors/kvm01/",
    "/api/v1/hypervisors/kvm01/domains/",
    "/api/v1/hypervisors/kvm01/domains/testvm/",
    "/api/v1/hypervisors/kvm01/domains/testvm/disks/vda/",
    "/api/v1/migrations/",
    "/api/v1/audit/",
]


@pytest.mark.parametrize("url", READ_URLS)
def test_anonymous_gets_401_json_naming_the_header(url, domain):
    response = Api().get(url)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    err = error(response)
    assert err["code"] == "not_authenticated" and "Authorization: Bearer" in err["message"]


def test_expired_token_refused(users, domain):
    _, plain = token_create(user=users["viewer"], name="old", expires_at=timezone.now() + timedelta(seconds=1))
    from blockmig.api.models import ApiToken

    ApiToken.objects.filter(name="old").update(expires_at=timezone.now() - timedelta(seconds=1))
    err = error(response := Api(plain).get("/api/v1/hypervisors/"))
    assert response.status_code == 401 and err["code"] == "token_expired" and "“old” has expired" in err["message"]


def test_revoked_token_refused_at_once(users, domain):
    token, plain = token_create(user=users["viewer"], name="laptop")
    assert Api(plain).get("/api/v1/hypervisors/").status_code == 200
    token_revoke(token=token, user=users["viewer"])
    response = Api(plain).get("/api/v1/hypervisors/")
    assert response.status_code == 401 and error(response)["code"] == "token_revoked"


@pytest.mark.parametrize("value", ["bm_nope", "bm_abcdefgh_" + "x" * 43, "Bearer"])
def test_unknown_or_malformed_token_refused(value, db):
    response = Api(value).get("/api/v1/hypervisors/")
    assert response.status_code == 401 and error(response)["code"] == "token_invalid"


def test_user_without_a_role_gets_403_naming_the_role(db, host):
    _, plain = token_create(user=make_user("nobody"), name="x")
    response = Api(plain).get("/api/v1/migrations/")
    assert response.status_code == 403
    err = error(response)
    assert err["code"] == "permission_denied" and err["message"] == "Seeing migrations needs the viewer role."


def test_me_names_user_roles_and_token(api):
    body = api("approver").get("/api/v1/me/").json()
    assert body["username"] == "approver" and body["roles"] == ["approver"] and body["via"].startswith("api token “ci-approver")


def test_session_reads_work_and_writes_need_csrf(users, make):
    m = make(State.READY)
    client = Client(enforce_csrf_checks=True)
    client.force_login(users["approver"])
    assert client.get("/api/v1/me/").json()["via"] == "api (console session)"
    response = client.post(f"/api/v1/migrations/{m.pk}/approve/", "{}", content_type="application/json")
    assert response.status_code == 403 and error(response)["code"] == "csrf_failed"
    m.refresh_from_db()
    assert m.state == State.READY


def test_unknown_url_and_method_are_json_too(api, make):
    m = make()
    viewer = api("viewer")
    response = viewer.get("/api/v1/migrations/99999/")
    assert response.status_code == 404 and error(response) == {
        "code": "not_found",
        "message": "No migration #99999.",
        "fields": {},
    }
    response = viewer.delete(f"/api/v1/migrations/{m.pk}/")
    assert response.status_code == 405 and error(response)["code"] == "method_not_allowed"


# ---- inventory --------------------------------------------------------------------------


def test_hypervisors_list_with_health_and_counts(api, domain):
    body = api("viewer").get("/api/v1/hypervisors/").json()
    assert body["count"] == 1
    (kvm01,) = body["results"]
    assert kvm01["name"] == "kvm01" and kvm01["health"] == "ok" and kvm01["domain_count"] == 1 and kvm01["running_count"] == 1
    assert kvm01["allowed_roots"] == ["/backups"]


def test_unknown_hypervisor_is_404_saying_how_to_list(api, db):
    err = error(api("viewer").get("/api/v1/hypervisors/nope/domains/"))
    assert err["code"] == "not_found" and "blockmig hosts" in err["message"]


def test_domains_searchable_and_found_by_name_or_uuid(api, domain):
    viewer = api("viewer")
    assert [d["name"] for d in viewer.get("/api/v1/hypervisors/kvm01/domains/", q="test").json()["results"]] == ["testvm"]
    assert viewer.get("/api/v1/hypervisors/kvm01/domains/", q="zzz").json()["results"] == []
    by_name = viewer.get("/api/v1/hypervisors/kvm01/domains/testvm/").json()
    by_uuid = viewer.get(f"/api/v1/hypervisors/kvm01/domains/{UUID.upper()}/").json()
    assert by_name == by_uuid and by_name["uuid"] == UUID and [d["target"] for d in by_name["disks"]] == ["vda"]


def test_disk_with_its_chain_active_first_and_as_text(api, domain):
    body = api("viewer").get("/api/v1/hypervisors/kvm01/domains/testvm/disks/vda/").json()
    assert [layer["path"] for layer in body["chain"]] == ["/images/snap2.qcow2", "/images/snap1.qcow2", "/images/base.qcow2"]
    assert body["chain_text"] == "/images/base.qcow2 ← /images/snap1.qcow2 ← /images/snap2.qcow2"
    assert body["job"] is None


def test_unknown_disk_names_the_ones_there(api, domain):
    err = error(api("viewer").get("/api/v1/hypervisors/kvm01/domains/testvm/disks/vdz/"))
    assert err["code"] == "not_found" and err["message"] == "testvm has no disk vdz (it has vda)."


# ---- migrations: reads -------------------------------------------------------------------


def test_migration_list_filters_by_state_and_shows_progress(api, make):
    copying = make(State.COPYING, bytes_done=GIB // 2, bytes_total=GIB, rate_bps=64 * 2**20)
    make(State.COMPLETED)
    viewer = api("viewer")
    rows = viewer.get("/api/v1/migrations/", state="copying").json()["results"]
    assert [r["id"] for r in rows] == [copying.pk]
    progress = rows[0]["progress"]
    assert progress["percent"] == 50.0 and progress["eta_seconds"] == 8.0 and "64.0 MiB/s" in progress["text"]
    assert viewer.get("/api/v1/migrations/", active="true").json()["count"] == 1
    assert viewer.get("/api/v1/migrations/").json()["count"] == 2
    err = error(viewer.get("/api/v1/migrations/", state="sleeping"))
    assert err["code"] == "invalid" and "sleeping" in err["message"]


def test_migration_detail_has_disks_timeline_and_what_you_may_do(api, make, users):
    m = make(State.READY)
    AuditEvent.objects.create(
        event_type="requested", migration=m, actor=users["operator"], actor_name="operator", to_state="requested"
    )
    body = api("approver").get(f"/api/v1/migrations/{m.pk}/").json()
    assert body["state"] == "ready" and body["phase"] == "Ready — awaiting approval"
    assert body["disks"][0]["source_chain_text"] == "/images/base.qcow2 ← /images/snap1.qcow2 ← /images/snap2.qcow2"
    assert [e["event_type"] for e in body["events"]] == ["requested"]
    assert body["actions"] == {"approve": True, "abort": True, "bandwidth": False, "approve_note": ""}
    assert api("viewer").get(f"/api/v1/migrations/{m.pk}/").json()["actions"]["approve"] is False


# ---- actions: the lifecycle's rules and messages -----------------------------------------


def test_approver_approves_through_the_api_and_the_audit_names_the_token(api, make, users):
    m = make(State.READY)
    response = api("approver", name="pipeline").post(f"/api/v1/migrations/{m.pk}/approve/")
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "pivoting" and response.json()["approved_by"] == "approver"
    event = AuditEvent.objects.get(migration=m, event_type="approved")
    assert event.actor == users["approver"] and event.via.startswith("api token “pipeline-approver")


def test_four_eyes_through_the_api(api, make):
    m = make(State.READY, requested_by="approver")
    response = api("approver").post(f"/api/v1/migrations/{m.pk}/approve/")
    assert response.status_code == 403
    err = error(response)
    assert err["code"] == "four_eyes"
    assert err["message"] == "You requested this migration, so another approver must approve it (four eyes)."
    m.refresh_from_db()
    assert m.state == State.READY
    refused = AuditEvent.objects.get(migration=m, event_type="refused")
    assert refused.details["action"] == "approve" and refused.via.startswith("api token")


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_approve_without_the_role_is_403_with_the_lifecycles_message(api, make, role):
    m = make(State.READY)
    err = error(response := api(role).post(f"/api/v1/migrations/{m.pk}/approve/"))
    assert response.status_code == 403 and err["code"] == "permission_denied"
    assert err["message"] == "Only a user with the approver role can approve a pivot."
    assert AuditEvent.objects.filter(migration=m, event_type="refused").count() == 1


def test_approve_before_ready_is_409_wrong_state(api, make):
    m = make(State.COPYING)
    err = error(response := api("approver").post(f"/api/v1/migrations/{m.pk}/approve/"))
    assert response.status_code == 409 and err["code"] == "wrong_state"
    assert err["message"] == f"Migration #{m.pk} is copying: a pivot can be approved only once every disk's mirror is ready."


def test_admin_may_approve_what_an_operator_requested(api, make):
    m = make(State.READY)
    assert api("admin").post(f"/api/v1/migrations/{m.pk}/approve/").json()["state"] == "pivoting"


@pytest.mark.parametrize(("state", "after"), [(State.REQUESTED, "aborted"), (State.COPYING, "aborting")])
def test_operator_aborts(api, make, state, after):
    m = make(state)
    response = api("operator").post(f"/api/v1/migrations/{m.pk}/abort/")
    assert response.status_code == 200 and response.json()["state"] == after


def test_abort_refusals(api, make):
    m = make(State.COPYING)
    err = error(response := api("viewer").post(f"/api/v1/migrations/{m.pk}/abort/"))
    assert response.status_code == 403 and err["message"] == "You need the operator or approver role to abort a migration."
    done = make(State.COMPLETED)
    err = error(response := api("operator").post(f"/api/v1/migrations/{done.pk}/abort/"))
    assert (
        response.status_code == 409 and err["code"] == "wrong_state" and "only a migration that has not pivoted" in err["message"]
    )


def test_bandwidth_change_and_its_refusals(api, make):
    m = make(State.COPYING)
    operator = api("operator")
    response = operator.post(f"/api/v1/migrations/{m.pk}/bandwidth/", {"bandwidth_mib": 50})
    assert response.status_code == 200 and response.json()["bandwidth_mib"] == 50
    assert AuditEvent.objects.get(migration=m, event_type="bandwidth_changed").details == {"from_mib": 0, "to_mib": 50}

    err = error(response := operator.post(f"/api/v1/migrations/{m.pk}/bandwidth/", {"bandwidth_mib": -1}))
    assert response.status_code == 400 and err["code"] == "invalid"
    assert err["fields"] == {"bandwidth_mib": ["Bandwidth cannot be negative; use 0 for unlimited."]}

    err = error(response := api("viewer").post(f"/api/v1/migrations/{m.pk}/bandwidth/", {"bandwidth_mib": 5}))
    assert response.status_code == 403 and err["code"] == "permission_denied"

    pivoting = make(State.PIVOTING)
    err = error(response := operator.post(f"/api/v1/migrations/{pivoting.pk}/bandwidth/", {"bandwidth_mib": 5}))
    assert response.status_code == 409 and err["code"] == "wrong_state" and "only before the pivot" in err["message"]


# ---- request: the form's fields, rules and messages ----------------------------------------


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


# ---- audit -------------------------------------------------------------------------------


def test_audit_filters_as_on_the_page_with_a_cursor(api, make, users):
    m = make(State.COPYING)
    base = timezone.now() - timedelta(hours=2)
    for i in range(5):
        AuditEvent.objects.create(event_type="copying", migration=m, actor_name="blockmig", hypervisor_name="kvm01",
                                  domain_name="testvm", to_state="copying", created_at=base + timedelta(minutes=i))  # fmt: skip
    AuditEvent.objects.create(event_type="approved", actor=users["approver"], actor_name="approver", hypervisor_name="other")
    viewer = api("viewer")
    first = viewer.get("/api/v1/audit/", host="kvm01", page_size=2).json()
    assert [e["created_at"] for e in first["results"]] == sorted((e["created_at"] for e in first["results"]), reverse=True)
    assert len(first["results"]) == 2 and first["next"]
    second = viewer.client.get(first["next"], headers=viewer.headers).json()
    third = viewer.client.get(second["next"], headers=viewer.headers).json()
    ids = [e["id"] for page in (first, second, third) for e in page["results"]]
    assert len(ids) == len(set(ids)) == 5 and third["next"] is None
    assert all(e["system"] and e["actor"] == "blockmig" for e in third["results"])
    assert [e["event_type"] for e in viewer.get("/api/v1/audit/", user="approver").json()["results"]] == ["approved"]
    since = (base + timedelta(minutes=3, seconds=30)).isoformat()
    assert len(viewer.get("/api/v1/audit/", host="kvm01", since=since).json()["results"]) == 1
    err = error(viewer.get("/api/v1/audit/", since="yesterday-ish"))
    assert err["code"] == "invalid" and "since" in err["fields"]


def test_the_audit_page_shows_what_came_through_a_token(api, client_for, make):
    m = make(State.READY)
    api("approver", name="nightly").post(f"/api/v1/migrations/{m.pk}/approve/")
    html = client_for("viewer").get(reverse("audit_list")).content.decode()
    assert "via api token “nightly-approver" in html
