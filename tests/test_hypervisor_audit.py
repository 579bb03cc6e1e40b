"""Every change people make to a hypervisor is in the audit trail (from its pages and from
the Django admin), and so is every refused start and refused policy change; a disabled
hypervisor is never connected to, by the sync loop or an operator's refresh."""

import pytest
from django.urls import reverse

from blockmig.errors import Refused
from blockmig.lifecycle import DiskRequest, hypervisor_set_auto_pivot, migration_request
from blockmig.models import AuditEvent, Migration
from hosts.models import Domain, Hypervisor
from hosts.sync.hypervisor import hypervisor_sync
from hosts.testnode import node_uri, write_node


@pytest.fixture
def node(tmp_path):
    path = tmp_path / "node.xml"
    write_node(path, 4)
    return path


def form_data(**overrides) -> dict:
    data = {"name": "kvm01", "uri": "test:///default", "allowed_roots": "/srv/images", "enabled": "on"}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def events(event_type: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event_type=event_type))


# ---- from the hypervisor pages ----------------------------------------------------------------


def test_adding_a_hypervisor_is_audited_with_who_and_what(client_for, users):
    response = client_for("admin").post(reverse("hypervisor_add"), form_data())
    assert response.status_code == 302
    [event] = events("hypervisor_added")
    assert (event.actor, event.actor_name, event.hypervisor_name) == (users["admin"], "admin", "kvm01")
    assert event.details == {
        "source": "form",
        "name": "kvm01",
        "uri": "test:///default",
        "allowed_roots": ["/srv/images"],
        "enabled": True,
    }


def test_editing_uri_roots_and_enabled_is_audited_with_what_changed(client_for, users, node):
    Hypervisor.objects.create(name="kvm01", uri="test:///default", allowed_roots=["/srv/images"])
    client = client_for("admin")
    response = client.post(
        reverse("hypervisor_edit", args=["kvm01"]), form_data(uri=node_uri(node), allowed_roots="/srv/images\n/srv/more")
    )
    assert response.status_code == 302
    [event] = events("hypervisor_changed")
    assert event.actor == users["admin"] and event.hypervisor_name == "kvm01"
    assert event.details == {
        "source": "form",
        "changes": {
            "uri": {"from": "test:///default", "to": node_uri(node)},
            "allowed_roots": {"from": ["/srv/images"], "to": ["/srv/images", "/srv/more"]},
        },
    }
    client.post(
        reverse("hypervisor_edit", args=["kvm01"]),
        form_data(uri=node_uri(node), allowed_roots="/srv/images\n/srv/more", enabled=None),
    )
    assert events("hypervisor_changed")[-1].details["changes"] == {"enabled": {"from": True, "to": False}}
    # Saving without a change adds nothing.
    client.post(
        reverse("hypervisor_edit", args=["kvm01"]),
        form_data(uri=node_uri(node), allowed_roots="/srv/images\n/srv/more", enabled=None),
    )
    assert len(events("hypervisor_changed")) == 2


def test_a_refused_edit_changes_nothing_and_audits_no_change(client_for):
    Hypervisor.objects.create(name="kvm01", uri="test:///default", allowed_roots=["/srv/images"])
    response = client_for("admin").post(reverse("hypervisor_edit", args=["kvm01"]), form_data(allowed_roots="/etc"))
    assert response.status_code == 200
    assert Hypervisor.objects.get().allowed_roots == ["/srv/images"] and not events("hypervisor_changed")


# ---- from the Django admin ----------------------------------------------------------------------


def test_admin_add_change_and_delete_are_audited(client_for, users, node):
    client = client_for("admin")
    response = client.post(reverse("admin:hosts_hypervisor_add"), form_data())
    assert response.status_code == 302
    host = Hypervisor.objects.get()
    [added] = events("hypervisor_added")
    assert added.actor == users["admin"] and added.details["source"] == "admin" and added.details["uri"] == "test:///default"

    response = client.post(
        reverse("admin:hosts_hypervisor_change", args=[host.pk]), form_data(name="kvm02", uri=node_uri(node), enabled=None)
    )
    assert response.status_code == 302
    [changed] = events("hypervisor_changed")
    assert changed.hypervisor_name == "kvm02" and changed.details == {
        "source": "admin",
        "changes": {
            "name": {"from": "kvm01", "to": "kvm02"},
            "uri": {"from": "test:///default", "to": node_uri(node)},
            "enabled": {"from": True, "to": False},
        },
    }

    response = client.post(reverse("admin:hosts_hypervisor_delete", args=[host.pk]), {"post": "yes"})
    assert response.status_code == 302 and not Hypervisor.objects.exists()
    [deleted] = events("hypervisor_deleted")
    assert deleted.actor == users["admin"] and deleted.hypervisor_name == "kvm02"
    assert deleted.details == {
        "source": "admin",
        "name": "kvm02",
        "uri": node_uri(node),
        "allowed_roots": ["/srv/images"],
        "enabled": False,
    }


def test_admin_bulk_delete_audits_each_host(client_for, users):
    hosts = [Hypervisor.objects.create(name=f"h{i}", uri="test:///default") for i in range(2)]
    response = client_for("admin").post(
        reverse("admin:hosts_hypervisor_changelist"),
        {"action": "delete_selected", "_selected_action": [h.pk for h in hosts], "post": "yes"},
    )
    assert response.status_code == 302 and not Hypervisor.objects.exists()
    assert sorted(e.hypervisor_name for e in events("hypervisor_deleted")) == ["h0", "h1"]
    assert all(e.actor == users["admin"] for e in events("hypervisor_deleted"))


# ---- refusals -------------------------------------------------------------------------------------


def test_a_refused_start_is_audited_without_a_migration(users):
    host = Hypervisor.objects.create(name="kvm01", uri="test:///default", allowed_roots=["/srv/backups"])
    Domain.objects.create(hypervisor=host, uuid="uuid-1", name="testvm", state="running")
    with pytest.raises(Refused, match="outside") as caught:
        migration_request(
            user=users["operator"], hypervisor=host, domain_uuid="uuid-1", disks=[DiskRequest("vda", "/tmp/c.qcow2")]
        )
    assert not Migration.objects.exists()
    [event] = events("refused")
    assert (event.actor, event.hypervisor_name, event.domain_name, event.migration) == (
        users["operator"],
        "kvm01",
        "testvm",
        None,
    )
    assert event.details == {
        "action": "request",
        "reason": caught.value.message,
        "domain_uuid": "uuid-1",
        "disks": {"vda": "/tmp/c.qcow2"},
    }


def test_a_refused_policy_change_is_audited(users):
    host = Hypervisor.objects.create(name="kvm01", uri="test:///default")
    with pytest.raises(Refused, match="Only an admin"):
        hypervisor_set_auto_pivot(hypervisor=host, user=users["approver"], enabled=True)
    host.refresh_from_db()
    assert host.auto_pivot is False and not events("policy_changed")
    [event] = events("refused")
    assert (event.actor, event.hypervisor_name) == (users["approver"], "kvm01")
    assert event.details == {
        "action": "set_auto_pivot",
        "reason": "Only an admin can change a host's pivot policy.",
        "auto_pivot": True,
        "was": False,
    }


# ---- disabled hosts are left alone -----------------------------------------------------------------


def assert_never_connected(host: Hypervisor) -> None:
    host.refresh_from_db()
    assert host.last_sync_attempt_at is None and host.driver == ""
    assert not Domain.objects.filter(hypervisor=host).exists()


def test_sync_never_connects_to_a_disabled_host(db, node):
    host = Hypervisor.objects.create(name="off", uri=node_uri(node), enabled=False)
    result = hypervisor_sync(host)
    assert not result.ok and result.libvirt_calls == 0
    assert result.error == "off is disabled, so blockmig does not connect to it: an admin can enable it on its edit page."
    assert_never_connected(host)


def test_sync_reads_enabled_from_the_row_not_a_stale_object(db, node):
    """The sync loop and the engine hold hypervisor objects loaded before an admin disabled it."""
    host = Hypervisor.objects.create(name="off", uri=node_uri(node))
    Hypervisor.objects.filter(pk=host.pk).update(enabled=False)
    assert host.enabled and not hypervisor_sync(host).ok
    assert_never_connected(host)


def test_refresh_now_on_a_disabled_host_says_why_and_does_not_connect(client_for, node):
    host = Hypervisor.objects.create(name="off", uri=node_uri(node), enabled=False)
    response = client_for("operator").post(reverse("hypervisor_refresh", args=["off"]), follow=True)
    assert "off is disabled, so blockmig does not connect to it" in response.content.decode()
    assert_never_connected(host)
    # The same host, enabled, is synced by the same button: the assertions above can fail.
    Hypervisor.objects.filter(pk=host.pk).update(enabled=True)
    client_for("operator").post(reverse("hypervisor_refresh", args=["off"]))
    assert Domain.objects.filter(hypervisor=host).count() == 4
