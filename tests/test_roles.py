"""Every inventory page and form, for every role: allowed gets the page or the change,
refused gets a 403 that names the role it needs (or the login page) and changes nothing."""

from dataclasses import dataclass

import pytest
from django.urls import reverse

from hosts.models import ChainLayer, Disk, Domain, Hypervisor
from tests.helpers import make_user

ALL = {"viewer", "operator", "approver", "admin"}
UUID = "00000000-0000-4000-8000-00000000beef"


@dataclass(frozen=True)
class Case:
    name: str
    url: str  # URL name
    args: tuple
    method: str
    allowed: frozenset
    ok_status: int  # what an allowed role gets
    data: tuple = ()


CASES = [
    Case("dashboard", "dashboard", (), "get", frozenset(ALL), 200),
    Case("hypervisor list", "hypervisor_list", (), "get", frozenset(ALL), 200),
    Case("hypervisor detail", "hypervisor_detail", ("lab",), "get", frozenset(ALL), 200),
    Case("domain detail", "domain_detail", ("lab", UUID), "get", frozenset(ALL), 200),
    Case("disk detail", "disk_detail", ("lab", UUID, "vda"), "get", frozenset(ALL), 200),
    Case("refresh", "hypervisor_refresh", ("lab",), "post", frozenset({"operator", "admin"}), 302),
    Case("add form", "hypervisor_add", (), "get", frozenset({"admin"}), 200),
    Case(
        "add",
        "hypervisor_add",
        (),
        "post",
        frozenset({"admin"}),
        302,
        (("name", "second"), ("uri", "test:///default"), ("allowed_roots", "/srv/images"), ("enabled", "on")),
    ),
    Case("edit form", "hypervisor_edit", ("lab",), "get", frozenset({"admin"}), 200),
    Case(
        "edit",
        "hypervisor_edit",
        ("lab",),
        "post",
        frozenset({"admin"}),
        302,
        (("name", "lab"), ("uri", "test:///default"), ("allowed_roots", "/srv/changed"), ("enabled", "on")),
    ),
]


@pytest.fixture
def inventory(db):
    host = Hypervisor.objects.create(name="lab", uri="test:///default", allowed_roots=["/srv/backups"])
    domain = Domain.objects.create(hypervisor=host, uuid=UUID, name="testvm", state="running")
    disk = Disk.objects.create(domain=domain, target="vda", format="qcow2", source="/lab/snap2.qcow2")
    ChainLayer.objects.create(disk=disk, depth=0, path="/lab/snap2.qcow2", format="qcow2")
    return host


@pytest.fixture
def syncs(inventory):
    """Whether a real sync of the test:///default host ran: it leaves its attempt time."""

    def attempted() -> bool:
        return Hypervisor.objects.get(name="lab").last_sync_attempt_at is not None

    return attempted


def snapshot() -> list:
    return list(Hypervisor.objects.order_by("pk").values())


def request(client, case: Case):
    url = reverse(case.url, args=case.args)
    return getattr(client, case.method)(url, dict(case.data)) if case.method == "post" else client.get(url)


@pytest.mark.parametrize("role", sorted(ALL))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_role_against_page(case, role, client_for, inventory, syncs):
    before = snapshot()
    response = request(client_for(role), case)
    if role in case.allowed:
        assert response.status_code == case.ok_status, response.content[:500]
        if case.name == "add":
            assert Hypervisor.objects.filter(name="second").exists()
        if case.name == "edit":
            assert Hypervisor.objects.get(name="lab").allowed_roots == ["/srv/changed"]
        if case.name == "refresh":
            assert syncs()
    else:
        assert response.status_code == 403
        needed = " or ".join(r for r in ("viewer", "operator", "approver", "admin") if r in case.allowed)
        assert f"This needs the {needed} role." in response.content.decode()
        assert snapshot() == before
        assert not syncs()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_anonymous_is_sent_to_login(case, client_for, inventory, syncs):
    before = snapshot()
    response = request(client_for(None), case)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login") + "?next=")
    assert snapshot() == before and not syncs()


def test_user_without_a_role_sees_nothing(client, inventory):
    client.force_login(make_user("nobody"))
    response = client.get(reverse("hypervisor_list"))
    assert response.status_code == 403
    assert "This needs the viewer or operator or approver or admin role." in response.content.decode()
    assert "nobody" in response.content.decode()


def test_refresh_is_post_only(client_for, inventory, syncs):
    response = client_for("admin").get(reverse("hypervisor_refresh", args=["lab"]))
    assert response.status_code == 405 and not syncs()


def test_buttons_follow_the_role(client_for, inventory):
    """A user only sees the actions they may take."""
    url = reverse("hypervisor_detail", args=["lab"])
    viewer = client_for("viewer").get(url).content.decode()
    operator = client_for("operator").get(url).content.decode()
    admin = client_for("admin").get(url).content.decode()
    assert "Refresh now" not in viewer and "Edit" not in viewer
    assert "Refresh now" in operator and reverse("hypervisor_edit", args=["lab"]) not in operator
    assert "Refresh now" in admin and reverse("hypervisor_edit", args=["lab"]) in admin
    assert "Add hypervisor" in client_for("admin").get(reverse("hypervisor_list")).content.decode()
    assert "Add hypervisor" not in client_for("operator").get(reverse("hypervisor_list")).content.decode()


@pytest.mark.parametrize("role, status", [("admin", 200), ("viewer", 302), ("operator", 302)])
def test_django_admin_is_for_admins(role, status, client_for, inventory):
    response = client_for(role).get(reverse("admin:hosts_hypervisor_changelist"))
    assert response.status_code == status


def test_admin_shows_inventory_read_only(client_for, inventory):
    client = client_for("admin")
    domain = Domain.objects.get(uuid=UUID)
    assert client.get(reverse("admin:hosts_domain_add")).status_code == 403
    page = client.get(reverse("admin:hosts_domain_change", args=[domain.pk]))
    assert page.status_code == 200 and 'name="name"' not in page.content.decode()
    assert client.post(reverse("admin:hosts_domain_delete", args=[domain.pk]), {"post": "yes"}).status_code == 403
    assert Domain.objects.filter(pk=domain.pk).exists()


# ---- the role to ask for ------------------------------------------------------------------


def test_the_role_to_ask_for_is_the_least_that_carries_the_permission():
    from hosts.roles import ROLE_FOR

    assert {
        perm: ROLE_FOR[perm]
        for perm in (
            "blockmig.view_migration",
            "blockmig.view_auditevent",
            "blockmig.add_migration",
            "blockmig.change_migration",
            "blockmig.approve_migration",
            "blockmig.abort_migration",
            "hosts.change_hypervisor",
        )
    } == {
        "blockmig.view_migration": "viewer",
        "blockmig.view_auditevent": "viewer",
        "blockmig.add_migration": "operator",
        "blockmig.change_migration": "operator",
        "blockmig.approve_migration": "approver",
        "blockmig.abort_migration": "operator or approver",
        "hosts.change_hypervisor": "admin",
    }


def test_every_permission_a_role_holds_has_a_role_to_ask_for():
    from hosts.roles import ROLE_FOR, ROLE_PERMISSIONS, roles_with

    for perms in ROLE_PERMISSIONS.values():
        for perm in perms:
            assert ROLE_FOR[perm] and all(role in roles_with(perm) for role in ROLE_FOR[perm].split(" or "))
