"""The migration page: phase, progress, rate and ETA, why it failed, the disks and the
timeline, its fragments (stable ids, htmx, standalone), the destination warning, the saved
definition, and who may see it. Rows are created directly: nothing here needs libvirt."""

from django.template.loader import render_to_string
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from blockmig import selectors
from blockmig.models import MigrationDisk
from blockmig.states import State
from tests.helpers import make_user
from tests.migration_page_fixtures import GIB, MIB, host, make, page


def test_page_shows_phase_progress_rate_and_eta(client_for, make):
    m = make(State.COPYING, bytes_done=GIB // 2, bytes_total=GIB, rate_bps=64 * MIB)
    html = page(client_for("viewer"), m)
    assert "Copying" in html
    assert "512.0 MiB" in html and "1.0 GiB" in html and "50.0 %" in html
    assert "64.0 MiB/s" in html
    assert "8 s" in html  # 512 MiB left at 64 MiB/s
    assert 'role="progressbar"' in html and 'aria-valuenow="50"' in html


def test_ready_reads_awaiting_approval(client_for, make):
    html = page(client_for("viewer"), make(State.READY, bytes_done=GIB, bytes_total=GIB))
    assert "Ready — awaiting approval" in html and "mirror in sync" in html


def test_unknown_total_says_so_instead_of_zero_percent(client_for, make):
    html = page(client_for("viewer"), make(State.COPYING, bytes_done=0, bytes_total=0))
    assert "mig-bar--unknown" in html and "0.0 %" not in html


def test_growing_total_is_explained_with_sync_writes_advice(client_for, host, make):
    host.supports_sync_writes = True
    host.save()
    html = page(client_for("viewer"), make(State.COPYING, total_grew=True, bytes_total=GIB))
    assert "The total grows because the guest keeps writing" in html
    assert "start again with synchronous writes" in html


def test_failure_reason_is_shown(client_for, make):
    reason = "libvirt said the destination directory /backups is full: free 2 GiB and retry."
    html = page(client_for("viewer"), make(State.FAILED, failure_reason=reason))
    assert "Why it failed" in html and reason in html


def test_disks_table_lists_source_destination_and_ready(client_for, make):
    m = make(State.COPYING, disks=("vda", "vdb"))
    MigrationDisk.objects.filter(migration=m, target="vdb").update(ready=True)
    html = page(client_for("viewer"), m)
    assert "/images/vda.qcow2" in html and "/backups/vdb-copy.qcow2" in html
    assert f'id="migration-{m.pk}-disk-vdb"' in html and "25.0 %" in html


def test_timeline_is_oldest_first_with_times_in_the_users_zone(client_for, make):
    m = make(State.COPYING, events=3)
    client = client_for("viewer")
    client.cookies["tz"] = "Asia/Tokyo"
    html = page(client, m)
    first, last = m.events.order_by("created_at").first(), m.events.order_by("created_at").last()
    assert html.index(f'id="audit-{first.pk}"') < html.index(f'id="audit-{last.pk}"')
    assert f'<time datetime="{first.created_at.isoformat()}"' in html
    assert timezone.localtime(first.created_at, timezone.get_fixed_timezone(9 * 60)).strftime("%H:%M:%S") in html
    assert "Requested" in html and "by <strong>operator</strong>" in html and "blockmig (system)" in html


def test_fragments_have_stable_ids(client_for, make):
    m = make()
    html = page(client_for("viewer"), m)
    for part in ("status", "actions", "timeline", "disks"):
        assert f'id="migration-{m.pk}-{part}"' in html


def test_htmx_request_gets_only_the_named_fragment(client_for, make):
    m = make()
    response = client_for("viewer").get(
        reverse("migration_detail", args=[m.pk]) + "?fragment=migration_timeline", HTTP_HX_REQUEST="true"
    )
    html = response.content.decode()
    assert html.lstrip().startswith(f'<section class="section card" id="migration-{m.pk}-timeline"')
    assert "<html" not in html


def test_fragment_renders_standalone_from_migration_context(make, users):
    from blockmig.views.migration import migration_context

    m = make(State.READY)
    request = RequestFactory().get("/")
    request.user = users["approver"]
    html = render_to_string(
        "blockmig/migration_detail.html#migration_actions",
        migration_context(selectors.migration_for_page(m.pk), users["approver"]),
        request=request,
    )
    assert f'id="migration-{m.pk}-actions"' in html and "Approve and pivot" in html


def test_unknown_migration_is_404(client_for, db, users):
    assert client_for("viewer").get(reverse("migration_detail", args=[999])).status_code == 404


def test_user_without_a_role_cannot_see_migrations(make, client):
    m = make()
    nobody = make_user("nobody")
    client.force_login(nobody)
    response = client.get(reverse("migration_detail", args=[m.pk]))
    assert response.status_code == 403 and "viewer role" in response.content.decode()


def test_page_warns_when_the_host_cannot_identify_a_destination(client_for, make):
    m = make(State.READY)
    m.disks.update(job_started=True, dest_identity="")
    html = page(client_for("approver"), m)
    assert "cannot confirm that it is still the file the copy began with" in html
    m.disks.update(dest_identity="volume:/pool/vda-copy")
    assert "cannot confirm" not in page(client_for("approver"), m)


def test_failed_page_shows_the_saved_definition_for_an_admin_to_restore(client_for, make):
    m = make(
        State.FAILED,
        failure_reason="The domain testvm no longer exists (destroyed and undefined outside blockmig).",
        saved_definition="<domain type='kvm'><name>testvm</name></domain>",
    )
    html = page(client_for("viewer"), m)
    assert "no longer exists" in html
    assert "Saved definition of testvm" in html
    assert "&lt;name&gt;testvm&lt;/name&gt;" in html  # shown as text, escaped
