"""What the REST API tests share: a remote host that is never reached, testvm with its chain,
migrations made as rows (`make`), a client that sends JSON with a bearer token of any role
(`api`), and the shape every JSON refusal has (`error`).

Rows are made directly, as in the page tests (tests/migration_page_fixtures.py); nothing
here needs libvirt (a request that passes preflight and runs is in tests/lab/test_cli_lab.py).
Test modules import the fixtures they use by name."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.utils import timezone

from blockmig.api.errors import CODES
from blockmig.api.tokens import token_create
from blockmig.models import AuditEvent, Migration, MigrationDisk
from blockmig.states import State
from hosts.models import ChainLayer, Disk, Domain, Hypervisor

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
