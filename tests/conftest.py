"""Shared fixtures: one user per role, a logged-in test client for any role, and test:///
node files allowed wherever pytest's temporary directories are. (The user factory and the
wait for a migration's state, which every tier uses, are in tests/helpers.py.)"""

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings

from hosts.roles import ROLES, setup_roles
from tests.helpers import make_user


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
    return {role: make_user(role, role, is_staff=role == "admin") for role in ROLES}


@pytest.fixture
def client_for(users):
    """client_for("operator") → a Client logged in as the operator; None or "anonymous" → no login."""

    def make(role: str | None) -> Client:
        client = Client()
        if role not in (None, "anonymous"):
            client.force_login(users[role])
        return client

    return make
