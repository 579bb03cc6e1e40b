"""The migration request form: defaults, refusals it makes without libvirt, and how the
view shows the lifecycle's refusals. A valid request handed to the real lifecycle, against a
running guest, is in tests/lab/test_migration_form_lab.py."""

import pytest
from django.urls import reverse

from blockmig import lifecycle
from blockmig.forms.field_errors import check_destination
from blockmig.forms.migration_request import MigrationRequestForm, suggested_destination
from blockmig.models import AuditEvent, Migration
from hosts.models import ChainLayer, Disk, Domain, Hypervisor
from hosts.testnode import FakeDomain, node_uri, node_xml

ROOT = "/srv/images"
UUID = "6f1c2d3e-0000-4000-8000-000000000001"


@pytest.fixture
def host(db):
    return Hypervisor.objects.create(name="kvm01", uri="qemu+ssh://root@kvm01/system", allowed_roots=[ROOT, "/backups"])


@pytest.fixture
def domain(host):
    domain = Domain.objects.create(hypervisor=host, uuid=UUID, name="testvm", state="running")
    for target, source in (("vda", f"{ROOT}/snap2.qcow2"), ("vdb", f"{ROOT}/data.raw")):
        disk = Disk.objects.create(domain=domain, target=target, format="qcow2", source=source)
        ChainLayer.objects.create(disk=disk, depth=0, path=source, format="qcow2")
    ChainLayer.objects.create(disk=Disk.objects.get(target="vda"), depth=1, path=f"{ROOT}/snap1.qcow2", format="qcow2")
    return domain


@pytest.fixture
def disk_url(domain):
    return reverse("migration_new_disk", args=[domain.hypervisor.name, domain.uuid, "vda"])


@pytest.fixture
def domain_url(domain):
    return reverse("migration_new_domain", args=[domain.hypervisor.name, domain.uuid])


@pytest.fixture
def no_lifecycle(monkeypatch):
    """Fail the test if the form lets a request through to the lifecycle."""

    def refuse_call(**kwargs):
        raise AssertionError(f"lifecycle.migration_request was called with {kwargs}")

    monkeypatch.setattr(lifecycle, "migration_request", refuse_call)


def post_disk(client, url, **fields):
    data = {"destination": f"{ROOT}/copy.qcow2", "mode": "shallow", "dest_format": "qcow2", "bandwidth_mib": "0"}
    data.update(fields)
    return client.post(url, data)


def field_errors(response, name):
    return response.context["form"].errors.get(name, [])


# ---- what the form offers -------------------------------------------------------------


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


# ---- refusals the form makes without libvirt, each its own test --------------------------


def test_relative_destination_refused(client_for, disk_url, no_lifecycle):
    response = post_disk(client_for("operator"), disk_url, destination="images/copy.qcow2")
    assert field_errors(response, "destination") == ["Give an absolute path (starting with /) inside one of the allowed roots."]
    assert not Migration.objects.exists()


def test_dotdot_in_destination_refused(client_for, disk_url, no_lifecycle):
    response = post_disk(client_for("operator"), disk_url, destination=f"{ROOT}/../etc/copy.qcow2")
    assert field_errors(response, "destination") == ["The path may not contain “..”: name the directory directly."]


def test_destination_outside_roots_refused(client_for, disk_url, no_lifecycle):
    response = post_disk(client_for("operator"), disk_url, destination="/var/lib/elsewhere/copy.qcow2")
    assert field_errors(response, "destination") == [
        f"/var/lib/elsewhere/copy.qcow2 is outside the allowed roots ({ROOT}, /backups)."
    ]


def test_destination_that_only_shares_a_prefix_with_a_root_refused(client_for, disk_url, no_lifecycle):
    response = post_disk(client_for("operator"), disk_url, destination=f"{ROOT}-evil/copy.qcow2")
    assert "is outside the allowed roots" in field_errors(response, "destination")[0]


def test_destination_equal_to_source_refused(client_for, disk_url, no_lifecycle):
    response = post_disk(client_for("operator"), disk_url, destination=f"{ROOT}/snap2.qcow2")
    assert field_errors(response, "destination") == ["The destination is the disk's current source; choose a new file."]


def test_host_without_roots_refused(client_for, host, disk_url, no_lifecycle):
    host.allowed_roots = []
    host.save()
    response = post_disk(client_for("operator"), disk_url)
    assert field_errors(response, "destination") == [
        "This host has no allowed storage roots yet; an admin must add one to the hypervisor."
    ]


def test_negative_bandwidth_refused(client_for, disk_url, no_lifecycle):
    response = post_disk(client_for("operator"), disk_url, bandwidth_mib="-5")
    assert field_errors(response, "bandwidth_mib") == ["Bandwidth cannot be negative; use 0 for unlimited."]


@pytest.mark.parametrize("value", ["-5", "fast", "100000000000000"])
def test_invalid_bandwidth_in_the_start_form_is_audited_as_a_refused_start(client_for, disk_url, no_lifecycle, value):
    post_disk(client_for("operator"), disk_url, bandwidth_mib=value)
    refusal = AuditEvent.objects.get(event_type="refused")
    assert refusal.actor_name == "operator" and refusal.details["action"] == "request"
    assert "bandwidth_mib: Bandwidth" in refusal.details["reason"]
    assert not Migration.objects.exists()


def test_bandwidth_not_a_number_refused(client_for, disk_url, no_lifecycle):
    response = post_disk(client_for("operator"), disk_url, bandwidth_mib="fast")
    assert field_errors(response, "bandwidth_mib") == ["Bandwidth must be a whole number of MiB/s (0 = unlimited)."]


def test_shallow_raw_refused(client_for, disk_url, no_lifecycle):
    response = post_disk(client_for("operator"), disk_url, mode="shallow", dest_format="raw")
    assert field_errors(response, "dest_format") == [
        "A shallow copy must be qcow2: raw cannot point at the backing chain. Choose qcow2, or a full copy."
    ]


def test_granularity_not_a_power_of_two_refused(client_for, disk_url, no_lifecycle):
    response = post_disk(client_for("operator"), disk_url, granularity="1000")
    assert field_errors(response, "granularity") == [
        "Granularity must be a power of two from 512 B to 64 MiB (512, 1024, … 67108864)."
    ]


def test_granularity_below_512_refused(client_for, disk_url, no_lifecycle):
    response = post_disk(client_for("operator"), disk_url, granularity="256")
    assert "power of two from 512 B to 64 MiB" in field_errors(response, "granularity")[0]


def test_errors_are_shown_beside_their_field(client_for, disk_url, no_lifecycle):
    html = post_disk(client_for("operator"), disk_url, bandwidth_mib="-1").content.decode()
    assert 'id="id_bandwidth_mib_error"' in html
    assert 'aria-invalid="true"' in html
    assert "Not started: fix the field marked below." in html


def test_cursor_starts_in_the_first_field_to_fix(client_for, disk_url, no_lifecycle):
    form = post_disk(client_for("operator"), disk_url, bandwidth_mib="-1").context["form"]
    assert form.fields["bandwidth_mib"].widget.attrs.get("autofocus")
    assert not form.fields["destination"].widget.attrs.get("autofocus")


def test_domain_form_without_a_chosen_disk_refused(client_for, domain_url, no_lifecycle):
    response = client_for("operator").post(domain_url, {"mode": "full", "dest_format": "raw", "bandwidth_mib": "0"})
    assert response.context["form"].non_field_errors() == ["Choose at least one disk to migrate."]


def test_domain_form_two_disks_to_one_file_refused(client_for, domain_url, no_lifecycle):
    response = client_for("operator").post(
        domain_url,
        {
            "migrate_vda": "on", "destination_vda": f"{ROOT}/same.qcow2",
            "migrate_vdb": "on", "destination_vdb": f"{ROOT}/same.qcow2",
            "mode": "full", "dest_format": "qcow2", "bandwidth_mib": "0",
        },
    )  # fmt: skip
    assert field_errors(response, "destination_vdb") == [f"vda already goes to {ROOT}/same.qcow2; give each disk its own file."]


@pytest.fixture
def host_says(host, tmp_path):
    """host_says("shutoff") → the host becomes a libvirt test:/// node on which testvm is in
    that state, whatever the stored inventory says: the real lifecycle asks it (preflight)."""

    def make(state: str = "running"):
        disks = "".join(
            f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{ROOT}/{name}'/>"
            f"<target dev='{target}' bus='virtio'/></disk>"
            for target, name in (("vda", "snap2.qcow2"), ("vdb", "data.raw"))
        )
        node = tmp_path / "kvm01.xml"
        node.write_text(node_xml([FakeDomain(UUID, "testvm", state, True, disks, 1, 2)]), encoding="utf-8")
        host.uri = node_uri(node)
        host.save()
        return host

    return make


def test_lifecycle_refusal_with_a_field_shows_beside_that_field(client_for, host_says, disk_url):
    # The inventory says the host can write synchronously, so the form offers it; the host
    # itself (libvirt's test driver) cannot, and preflight refuses beside that box.
    host = host_says("running")
    host.supports_sync_writes = True
    host.save()
    response = post_disk(client_for("operator"), disk_url, synchronous_writes="on")
    message = "kvm01 cannot do synchronous writes (needs libvirt ≥ 8.0 and QEMU ≥ 3.0)."
    assert response.status_code == 200
    assert field_errors(response, "synchronous_writes") == [message]
    assert 'id="id_synchronous_writes_error"' in response.content.decode()
    assert not Migration.objects.exists()
    assert AuditEvent.objects.get().details["reason"] == message


def test_lifecycle_refusal_without_a_field_shows_above_the_form(client_for, host_says, disk_url):
    # The inventory (last sync) says running; the host says shut off.
    host_says("shutoff")
    response = post_disk(client_for("operator"), disk_url)
    assert response.context["form"].non_field_errors() == ["testvm is shutoff, not running: a block copy needs a running domain."]
    assert 'role="alert"' in response.content.decode()
    assert not Migration.objects.exists()


def test_real_lifecycle_refuses_a_disabled_host_before_libvirt(client_for, host, disk_url):
    host.enabled = False
    host.save()
    response = post_disk(client_for("operator"), disk_url)
    assert response.context["form"].non_field_errors() == ["kvm01 is disabled: an admin must enable it first."]
    assert not Migration.objects.exists()
    # The refused start is in the audit trail, with who, where and why.
    event = AuditEvent.objects.get()
    assert (event.event_type, event.actor_name, event.hypervisor_name, event.migration) == ("refused", "operator", "kvm01", None)
    assert event.details["reason"] == "kvm01 is disabled: an admin must enable it first."


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
