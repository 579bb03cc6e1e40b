"""Shared fixtures: one user per role, a logged-in test client for any role, and test:///
node files allowed wherever pytest's temporary directories are."""

from functools import cache

import pytest
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group, User
from django.test import Client, override_settings

from hosts.roles import ROLES, setup_roles

PASSWORD = "pw-for-tests"


@cache
def password_hash() -> str:
    """Hash the shared test password once: the real hasher costs most of a second per user."""
    return make_password(PASSWORD)


@pytest.fixture(scope="session", autouse=True)
def node_files_in_tmp(tmp_path_factory):
    """Tests write their node files under tmp_path; blockmig connects only to node files in
    BLOCKMIG_TEST_DRIVER_DIR (hosts.uris), so that is pytest's base temporary directory here."""
    with override_settings(BLOCKMIG_TEST_DRIVER_DIR=tmp_path_factory.getbasetemp()):
        yield tmp_path_factory.getbasetemp()


@pytest.fixture
def users(db) -> dict[str, User]:
    """role name → a user holding exactly that role (the admin is also staff, for /admin/)."""
    setup_roles()
    people = {}
    for role in ROLES:
        user = User.objects.create(username=role, password=password_hash(), is_staff=role == "admin")
        user.groups.add(Group.objects.get(name=role))
        people[role] = user
    return people


@pytest.fixture
def client_for(users):
    """client_for("operator") → a Client logged in as the operator; None or "anonymous" → no login."""

    def make(role: str | None) -> Client:
        client = Client()
        if role not in (None, "anonymous"):
            client.force_login(users[role])
        return client

    return make
