"""Personal API tokens: made and revoked on the profile page (or with a password through the
API, as `blockmig login` does), shown once, stored as a sha256, refused once revoked."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from django.core.cache import caches
from django.test import Client
from django.urls import reverse

from blockmig.api.models import ApiToken
from blockmig.models import AuditEvent
from tests.helpers import PASSWORD


@pytest.fixture(autouse=True)
def fresh_rate_limits():
    """Each test starts with empty rate-limit counts (the token sign-in's bucket is per address)."""
    caches["api"].clear()


def me(token: str):
    return Client().get("/api/v1/me/", headers={"Authorization": f"Bearer {token}"})


def created_token(html: str) -> str:
    match = re.search(r'id="new-token-value"[^>]*value="(bm_[a-z0-9]{8}_[A-Za-z0-9_-]+)"', html)
    assert match, "no new token on the page"
    return match.group(1)


def test_profile_is_linked_from_the_nav_and_starts_empty(client_for):
    html = client_for("viewer").get(reverse("dashboard")).content.decode()
    assert f'href="{reverse("profile")}"' in html
    page = client_for("viewer").get(reverse("profile")).content.decode()
    assert "You have no API tokens yet" in page and "roles: viewer" in page


def test_token_is_shown_once_stored_hashed_and_acts_as_its_user(client_for, users):
    client = client_for("operator")
    response = client.post(reverse("profile"), {"name": "laptop CLI", "expires_in_days": ""})
    assert response["Cache-Control"] == "no-store"
    plain = created_token(response.content.decode())
    token = ApiToken.objects.get(user=users["operator"])
    assert token.name == "laptop CLI" and token.expires_at is None and token.last_used_at is None
    assert token.secret_hash == hashlib.sha256(plain.encode()).hexdigest() and plain not in token.secret_hash
    assert plain.startswith(f"bm_{token.prefix}_")
    # Shown that once: the next visit lists the token by its prefix only.
    again = client.get(reverse("profile")).content.decode()
    assert plain not in again and f"bm_{token.prefix}_…" in again and "laptop CLI" in again

    body = me(plain).json()
    assert body["username"] == "operator" and body["roles"] == ["operator"]
    token.refresh_from_db()
    assert token.last_used_at is not None
    created = AuditEvent.objects.get(event_type="token_created")
    assert created.actor == users["operator"] and created.details["token"] == "laptop CLI"


def test_expiry_is_set_from_the_choice(client_for, users):
    client_for("viewer").post(reverse("profile"), {"name": "week", "expires_in_days": "7"})
    token = ApiToken.objects.get(name="week")
    assert 6.9 < (token.expires_at - token.created_at).total_seconds() / 86400 <= 7


def test_name_is_required_and_unique_among_live_tokens(client_for):
    client = client_for("viewer")
    html = client.post(reverse("profile"), {"name": ""}).content.decode()
    assert "Give the token a name that says what it is for" in html
    client.post(reverse("profile"), {"name": "ci"})
    html = client.post(reverse("profile"), {"name": "ci"}).content.decode()
    assert "You already have a token named “ci”" in html
    assert ApiToken.objects.count() == 1


def test_revoked_on_the_page_refused_by_the_api(client_for, users):
    client = client_for("viewer")
    plain = created_token(client.post(reverse("profile"), {"name": "script"}).content.decode())
    token = ApiToken.objects.get()
    response = client.post(reverse("profile_token_revoke", args=[token.prefix]), follow=True)
    assert "Token “script” revoked" in response.content.decode()
    assert me(plain).status_code == 401 and me(plain).json()["error"]["code"] == "token_revoked"
    assert AuditEvent.objects.filter(event_type="token_revoked", actor=users["viewer"]).count() == 1
    # A revoked token's name may be used again.
    client.post(reverse("profile"), {"name": "script"})
    assert ApiToken.objects.filter(name="script").count() == 2


def test_nobody_revokes_anothers_token(client_for):
    created_token(client_for("viewer").post(reverse("profile"), {"name": "mine"}).content.decode())
    token = ApiToken.objects.get()
    assert client_for("operator").post(reverse("profile_token_revoke", args=[token.prefix])).status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_anonymous_is_sent_to_sign_in(db):
    response = Client().get(reverse("profile"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# ---- through the API (what `blockmig login` does) ------------------------------------------


def post_json(client: Client, url: str, body: dict, **headers):
    return client.post(url, json.dumps(body), content_type="application/json", headers=headers)


def test_token_from_user_name_and_password(users):
    response = post_json(
        Client(), "/api/v1/tokens/", {"username": "approver", "password": PASSWORD, "name": "cli", "expires_in_days": 30}
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "cli" and body["status"] == "active" and body["expires_at"]
    assert me(body["token"]).json()["username"] == "approver"

    listed = Client().get("/api/v1/tokens/", headers={"Authorization": f"Bearer {body['token']}"}).json()
    assert [t["name"] for t in listed] == ["cli"] and "token" not in listed[0] and "secret_hash" not in listed[0]

    revoked = Client().delete(f"/api/v1/tokens/{body['prefix']}/", headers={"Authorization": f"Bearer {body['token']}"})
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert me(body["token"]).status_code == 401


def test_wrong_password_refused_and_audited(users):
    response = post_json(Client(), "/api/v1/tokens/", {"username": "approver", "password": "wrong", "name": "cli"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"
    assert ApiToken.objects.count() == 0
    assert AuditEvent.objects.filter(event_type="login_failed", details__username="approver").count() == 1


def test_repeated_wrong_passwords_lock_the_token_sign_in_out_as_json(users, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        post_json(Client(), "/api/v1/tokens/", {"username": "approver", "password": "wrong", "name": "cli"})
    # Locked out now, even with the right password: the API's shape, not the lockout page.
    response = post_json(Client(), "/api/v1/tokens/", {"username": "approver", "password": PASSWORD, "name": "cli"})
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    error = response.json()["error"]
    assert error["code"] == "locked_out" and "Too many failed sign-ins" in error["message"]
    assert ApiToken.objects.count() == 0
    assert AuditEvent.objects.filter(event_type="login_locked_out").exists()


@pytest.mark.parametrize("body", [{"username": "approver", "password": PASSWORD}, {"name": "x"}])
def test_token_creation_names_missing_fields(users, body):
    response = post_json(Client(), "/api/v1/tokens/", body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid" and response.json()["error"]["fields"]
