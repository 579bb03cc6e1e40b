"""The migration request form: what it offers (defaults, roots with their free space, sync
writes where the host has them), who may use it, and its pure helpers. Its refusals are in
tests/test_migration_form_refusals.py and tests/test_migration_form_lifecycle.py."""

from django.urls import reverse

from blockmig.forms.field_errors import check_destination
from blockmig.forms.migration_request import MigrationRequestForm, suggested_destination
from blockmig.models import Migration
from tests.request_form_fixtures import ROOT, disk_url, domain, domain_url, host, no_lifecycle, post_disk


def test_defaults_suggest_copy_in_first_root_shallow_qcow2_unlimited(client_for, disk_url):
    response = client_for("operator").get(disk_url)
    assert response.status_code == 200
    form = response.context["form"]
    assert form["destination"].value() == f"{ROOT}/snap2-copy.qcow2"
    assert form["mode"].value() == "shallow"
    assert form["dest_format"].value() == "qcow2"
    assert form["bandwidth_mib"].value() == 0
    html = response.content.decode()
    assert "autofocus" in html and 'name="destination"' in html
    assert "<details" in html and "Granularity" in html and "Buffer size" in html


def test_roots_listed_with_free_space_unknown_on_a_remote_host(client_for, disk_url):
    html = client_for("operator").get(disk_url).content.decode()
    assert f"{ROOT}/" in html and "/backups/" in html
    assert "free space unknown (remote host)" in html


def test_free_space_shown_for_the_local_system_qemu(client_for, host, disk_url, tmp_path):
    host.uri = "qemu:///system"
    host.allowed_roots = [str(tmp_path)]
    host.save()
    html = client_for("operator").get(disk_url).content.decode()
    assert " free" in html and "free space unknown" not in html


def test_sync_writes_offered_only_where_the_host_supports_them(client_for, host, disk_url):
    assert "synchronous_writes" not in client_for("operator").get(disk_url).context["form"].fields
    host.supports_sync_writes = True
    host.save()
    assert "synchronous_writes" in client_for("operator").get(disk_url).context["form"].fields


def test_viewer_gets_403_naming_the_operator_role(client_for, disk_url, domain_url):
    for url in (disk_url, domain_url):
        response = client_for("viewer").get(url)
        assert response.status_code == 403
        assert "operator role" in response.content.decode()


def test_approver_cannot_post_a_request(client_for, disk_url, no_lifecycle):
    response = post_disk(client_for("approver"), disk_url)
    assert response.status_code == 403
    assert not Migration.objects.exists()


def test_unknown_disk_is_404(client_for, domain):
    url = reverse("migration_new_disk", args=[domain.hypervisor.name, domain.uuid, "vdz"])
    assert client_for("operator").get(url).status_code == 404


# ---- pure helpers ------------------------------------------------------------------------


def test_suggested_destination_uses_the_source_stem():
    assert suggested_destination(["/b", "/c"], "/a/snap2.qcow2") == "/b/snap2-copy.qcow2"
    assert suggested_destination([], "/a/snap2.qcow2") == ""


def test_check_destination_normalises_inside_a_root():
    assert check_destination("/srv/images//x/./y.qcow2", ["/srv/images"]) == "/srv/images/x/y.qcow2"


def test_root_itself_is_not_a_destination(host, domain):
    form = MigrationRequestForm(
        {"destination": ROOT, "mode": "full", "dest_format": "raw", "bandwidth_mib": "0"},
        hypervisor=host, disks=[domain.disks.get(target="vda")], single=True,
    )  # fmt: skip
    assert not form.is_valid() and "outside the allowed roots" in form.errors["destination"][0]
