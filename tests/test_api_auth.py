"""The REST API's authentication: no token, an expired, revoked, unknown or malformed one, a
user without a role, the console session (reads, writes need CSRF), and JSON refusals with
stable codes for unknown URLs and methods too."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from blockmig.api.tokens import token_create, token_revoke
from blockmig.states import State
from tests.api_fixtures import Api, api, domain, error, host, make
from tests.helpers import make_user

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
