"""The refusals the request form makes without libvirt, each its own test: destinations,
bandwidth (audited as a refused start), format, granularity, the domain form's disks; shown
beside their field, the cursor in the first to fix. None reaches the lifecycle."""

import pytest

from blockmig.models import AuditEvent, Migration
from tests.request_form_fixtures import ROOT, disk_url, domain, domain_url, field_errors, host, no_lifecycle, post_disk


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
