"""The migration page, its actions per role and state, the list, the host pivot policy,
the disk/domain "Migrate" buttons, the dashboard block, and the pure progress maths.

Rows are created directly: nothing here needs libvirt. The action POSTs go through the
real lifecycle functions (approve/abort move the state machine only; bandwidth is tested
where it needs no host)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.template.loader import render_to_string
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from blockmig import selectors
from blockmig.models import AuditEvent, Migration, MigrationDisk
from blockmig.states import State
from hosts.models import Disk, Domain, Hypervisor
from tests.helpers import make_user

GIB = 1024**3
MIB = 1024**2


@pytest.fixture
def host(db):
    return Hypervisor.objects.create(name="kvm01", uri="qemu+ssh://root@kvm01/system", allowed_roots=["/backups"])


@pytest.fixture
def make(host, users):
    """make(state, requested_by="operator", disks=("vda",), events=1, **fields) → Migration."""

    def build(state=State.COPYING, requested_by="operator", disks=("vda",), events=1, **fields):
        m = Migration.objects.create(
            hypervisor=host, domain_uuid="uuid-1", domain_name="testvm", state=state,
            requested_by=users[requested_by], **fields,
        )  # fmt: skip
        for target in disks:
            MigrationDisk.objects.create(
                migration=m, hypervisor=host, domain_uuid=f"uuid-{m.pk}", target=target,
                source_path=f"/images/{target}.qcow2", destination=f"/backups/{target}-copy.qcow2",
                cur=GIB // 4, end=GIB, active=state not in (State.COMPLETED, State.ABORTED, State.FAILED),
            )  # fmt: skip
        for i in range(events):
            AuditEvent.objects.create(
                event_type="requested" if i == 0 else "copying", migration=m, actor=users[requested_by] if i == 0 else None,
                actor_name=requested_by if i == 0 else "blockmig", hypervisor_name=host.name, domain_name="testvm",
                to_state="requested" if i == 0 else "copying", from_state="" if i == 0 else "requested",
                created_at=timezone.now() - timedelta(minutes=events - i),
            )  # fmt: skip
        return m

    return build


def page(client, m):
    return client.get(reverse("migration_detail", args=[m.pk])).content.decode()


def action_urls(m):
    return {name: reverse(f"migration_{name}", args=[m.pk]) for name in ("approve", "abort", "bandwidth")}


def buttons(html, m):
    return {name for name, url in action_urls(m).items() if f'action="{url}"' in html}


# ---- the migration page --------------------------------------------------------------


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


# ---- which buttons whom ----------------------------------------------------------------


def test_viewer_sees_no_buttons(client_for, make):
    for state in (State.COPYING, State.READY):
        m = make(state)
        html = page(client_for("viewer"), m)
        assert buttons(html, m) == set()
        assert "acting on it needs the operator or approver role" in html


def test_requester_sees_abort_and_bandwidth_but_no_approve(client_for, make):
    m = make(State.READY, requested_by="operator")
    assert buttons(page(client_for("operator"), m), m) == {"abort", "bandwidth"}


def test_approver_sees_approve_and_abort_on_ready(client_for, make):
    m = make(State.READY)
    html = page(client_for("approver"), m)
    assert buttons(html, m) == {"approve", "abort"}
    assert "Approve and pivot" in html


def test_approver_sees_no_approve_while_copying(client_for, make):
    m = make(State.COPYING)
    assert buttons(page(client_for("approver"), m), m) == {"abort"}


def test_approver_who_requested_sees_no_approve_and_why(client_for, make):
    m = make(State.READY, requested_by="admin")
    html = page(client_for("admin"), m)
    assert "approve" not in buttons(html, m)
    assert "another approver must approve its pivot" in html


def test_nobody_gets_buttons_after_the_pivot(client_for, make):
    for state in (State.PIVOTING, State.COMPLETED, State.FAILED, State.ABORTED):
        m = make(state)
        for role in ("operator", "approver", "admin"):
            assert buttons(page(client_for(role), m), m) == set(), (state, role)


@pytest.mark.parametrize("state", list(State))
def test_the_page_offers_exactly_what_the_lifecycle_accepts(client_for, make, users, state):
    """One rule: every button the page shows works, and every action it hides is refused."""
    from blockmig import lifecycle
    from blockmig.errors import Refused

    admin = users["admin"]  # holds every permission and did not request these
    shown = make(state)
    offered = buttons(page(client_for("admin"), shown), shown)
    actions = {
        "approve": lambda m: lifecycle.migration_approve(migration=m, user=admin),
        "abort": lambda m: lifecycle.migration_abort(migration=m, user=admin),
        "bandwidth": lambda m: lifecycle.migration_set_bandwidth(migration=m, user=admin, bandwidth_mib=5),
    }
    accepted = set()
    for name, act in actions.items():
        try:
            act(make(state))
        except Refused:
            continue
        accepted.add(name)
    assert offered == accepted


# ---- action POSTs -------------------------------------------------------------------------


def test_viewer_cannot_approve_abort_or_set_bandwidth(client_for, make):
    m = make(State.READY, bandwidth_mib=10)
    client = client_for("viewer")
    for name, url in action_urls(m).items():
        response = client.post(url, {"bandwidth_mib": "99"})
        assert response.status_code == 403, name
    m.refresh_from_db()
    assert (m.state, m.approved_by, m.bandwidth_mib) == (State.READY, None, 10)


def test_operator_cannot_approve(client_for, make):
    m = make(State.READY, requested_by="admin")
    response = client_for("operator").post(action_urls(m)["approve"])
    assert response.status_code == 403 and "approver role" in response.content.decode()
    m.refresh_from_db()
    assert m.state == State.READY and m.approved_by is None


def test_approver_cannot_change_bandwidth(client_for, make):
    m = make(State.COPYING, bandwidth_mib=10)
    assert client_for("approver").post(action_urls(m)["bandwidth"], {"bandwidth_mib": "50"}).status_code == 403
    m.refresh_from_db()
    assert m.bandwidth_mib == 10


def test_self_approval_refused_with_a_message(client_for, make):
    m = make(State.READY, requested_by="admin")
    response = client_for("admin").post(action_urls(m)["approve"], follow=True)
    assert "another approver must approve it (four eyes)" in response.content.decode()
    m.refresh_from_db()
    assert m.state == State.READY and m.approved_by is None


def test_approve_while_copying_refused_with_a_message(client_for, make):
    m = make(State.COPYING)
    response = client_for("approver").post(action_urls(m)["approve"], follow=True)
    assert "can be approved only once every disk" in response.content.decode()
    m.refresh_from_db()
    assert m.state == State.COPYING


def test_approver_approves_a_ready_migration(client_for, users, make):
    m = make(State.READY)
    response = client_for("approver").post(action_urls(m)["approve"], follow=True)
    assert "Approved: the pivot follows now." in response.content.decode()
    m.refresh_from_db()
    assert m.state == State.PIVOTING and m.approved_by == users["approver"]
    assert m.events.filter(event_type="approved", actor=users["approver"]).exists()


def test_operator_aborts_a_copying_migration(client_for, make):
    m = make(State.COPYING)
    client_for("operator").post(action_urls(m)["abort"])
    m.refresh_from_db()
    assert m.state == State.ABORTING


def test_abort_after_completion_refused(client_for, make):
    m = make(State.COMPLETED)
    response = client_for("operator").post(action_urls(m)["abort"], follow=True)
    assert "only a migration that has not pivoted yet can be aborted" in response.content.decode()
    m.refresh_from_db()
    assert m.state == State.COMPLETED


def test_negative_bandwidth_refused_with_a_message(client_for, make):
    m = make(State.COPYING, bandwidth_mib=10)
    response = client_for("operator").post(action_urls(m)["bandwidth"], {"bandwidth_mib": "-3"}, follow=True)
    assert "Bandwidth cannot be negative; use 0 for unlimited." in response.content.decode()
    m.refresh_from_db()
    assert m.bandwidth_mib == 10


@pytest.mark.parametrize("value", ["-3", "abc", "2.5", "", "99999999999999999999"])
def test_invalid_bandwidth_attempt_is_audited_with_the_user_and_the_reason(client_for, make, value):
    m = make(State.COPYING, bandwidth_mib=10)
    client_for("operator").post(action_urls(m)["bandwidth"], {"bandwidth_mib": value})
    refusal = m.events.get(event_type="refused")
    assert refusal.actor_name == "operator" and refusal.details["action"] == "set_bandwidth"
    assert "Bandwidth" in refusal.details["reason"]


def test_bandwidth_set_before_the_copy_starts(client_for, make):
    # In "requested" no block job exists yet, so no host is needed.
    m = make(State.REQUESTED, bandwidth_mib=0)
    response = client_for("operator").post(action_urls(m)["bandwidth"], {"bandwidth_mib": "25"}, follow=True)
    assert "Bandwidth limit set to 25 MiB/s." in response.content.decode()
    m.refresh_from_db()
    assert m.bandwidth_mib == 25
    assert m.events.filter(event_type="bandwidth_changed").exists()


def test_bandwidth_change_while_copying_is_recorded_without_a_host(client_for, make):
    """The request only records the limit (the worker applies it): the remote host in this
    fixture is unreachable, and the change still lands, audited."""
    m = make(State.COPYING, bandwidth_mib=10)
    response = client_for("operator").post(action_urls(m)["bandwidth"], {"bandwidth_mib": "40"}, follow=True)
    assert "Bandwidth limit set to 40 MiB/s." in response.content.decode()
    m.refresh_from_db()
    assert m.bandwidth_mib == 40
    event = m.events.get(event_type="bandwidth_changed")
    assert (event.details, event.to_state) == ({"from_mib": 10, "to_mib": 40}, State.COPYING)


@pytest.mark.parametrize("value", ["100000000000000", "100000000000000000000"])
def test_huge_bandwidth_refused_with_a_message_not_an_error_page(client_for, make, value):
    m = make(State.COPYING, bandwidth_mib=10)
    response = client_for("operator").post(action_urls(m)["bandwidth"], {"bandwidth_mib": value}, follow=True)
    assert response.status_code == 200
    assert "Bandwidth can be at most 2147483647 MiB/s" in response.content.decode()
    m.refresh_from_db()
    assert m.bandwidth_mib == 10


def test_bandwidth_change_after_the_approval_is_refused_with_the_true_state(client_for, make):
    m = make(State.PIVOTING, bandwidth_mib=10)
    response = client_for("operator").post(action_urls(m)["bandwidth"], {"bandwidth_mib": "40"}, follow=True)
    assert "is pivoting: bandwidth can change only before the pivot" in response.content.decode()
    m.refresh_from_db()
    assert m.bandwidth_mib == 10
    refusal = m.events.get(event_type="refused")
    assert (refusal.from_state, refusal.details["action"]) == (State.PIVOTING, "set_bandwidth")


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


def test_actions_need_post(client_for, make):
    m = make(State.READY)
    assert client_for("approver").get(action_urls(m)["approve"]).status_code == 405


# ---- list ---------------------------------------------------------------------------------


def test_list_puts_active_first_then_recent(client_for, make):
    done = make(State.COMPLETED)
    active = make(State.COPYING)
    done_later = make(State.FAILED)
    html = client_for("viewer").get(reverse("migration_list")).content.decode()
    rows = [html.index(f'id="migration-row-{m.pk}"') for m in (active, done_later, done)]
    assert rows == sorted(rows)


def test_list_filters_by_state(client_for, make):
    a, b = make(State.COPYING), make(State.READY)
    html = client_for("viewer").get(reverse("migration_list") + "?state=ready").content.decode()
    assert f'id="migration-row-{b.pk}"' in html and f'id="migration-row-{a.pk}"' not in html


def test_list_empty_state_points_to_the_disk_pages(client_for, db):
    html = client_for("viewer").get(reverse("migration_list")).content.decode()
    assert "No migrations yet — start one from a disk's page" in html


def test_list_paginates_by_25(client_for, make):
    for _ in range(27):
        make(State.COMPLETED, events=0)
    html = client_for("viewer").get(reverse("migration_list")).content.decode()
    assert html.count('id="migration-row-') == 25 and "Page 1 of 2" in html


# ---- bounded queries ------------------------------------------------------------------------


def count_queries(client, url):
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx)


def test_migration_page_queries_do_not_grow_with_disks_or_events(client_for, make):
    client = client_for("approver")
    small = make(State.READY, disks=("vda",), events=1)
    big = make(State.READY, disks=("vda", "vdb", "vdc", "vdd"), events=30)
    n_small = count_queries(client, reverse("migration_detail", args=[small.pk]))
    n_big = count_queries(client, reverse("migration_detail", args=[big.pk]))
    assert n_small == n_big <= 10


def test_list_queries_do_not_grow_with_rows(client_for, make):
    client = client_for("admin")
    make()
    n_one = count_queries(client, reverse("migration_list"))
    for _ in range(20):
        make(disks=("vda", "vdb"), events=0)
    assert count_queries(client, reverse("migration_list")) == n_one <= 10


# ---- host pivot policy --------------------------------------------------------------------------


def test_admin_sets_auto_pivot_and_it_is_audited(client_for, users, host):
    response = client_for("admin").post(reverse("hypervisor_policy", args=[host.name]), {"auto_pivot": "on"}, follow=True)
    assert "pivots automatically when ready" in response.content.decode()
    host.refresh_from_db()
    assert host.auto_pivot is True
    event = AuditEvent.objects.get(event_type="policy_changed")
    assert event.actor == users["admin"] and event.hypervisor_name == "kvm01" and event.details["auto_pivot"] is True


def test_operator_cannot_set_auto_pivot_and_the_refusal_is_audited(client_for, users, host):
    response = client_for("operator").post(reverse("hypervisor_policy", args=[host.name]), {"auto_pivot": "on"})
    assert response.status_code == 403 and "admin role" in response.content.decode()
    host.refresh_from_db()
    assert host.auto_pivot is False and not AuditEvent.objects.filter(event_type="policy_changed").exists()
    event = AuditEvent.objects.get()
    assert (event.event_type, event.actor, event.hypervisor_name) == ("refused", users["operator"], "kvm01")
    assert event.details["action"] == "set_auto_pivot" and event.details["auto_pivot"] is True
    assert event.details["reason"] == "Only an admin can change a host's pivot policy."


def test_policy_toggles_on_the_list_only_for_admins(client_for, host):
    url = f'action="{reverse("hypervisor_policy", args=[host.name])}"'
    assert url in client_for("admin").get(reverse("migration_list")).content.decode()
    assert url not in client_for("operator").get(reverse("migration_list")).content.decode()


# ---- "Migrate" buttons on the inventory pages ------------------------------------------------------


@pytest.fixture
def domain(host):
    domain = Domain.objects.create(hypervisor=host, uuid="uuid-1", name="testvm", state="running")
    Disk.objects.create(domain=domain, target="vda", source="/images/vda.qcow2", format="qcow2")
    return domain


def render_button(user, **context):
    request = RequestFactory().get("/")
    request.user = user
    return render_to_string("blockmig/_disk_actions.html", context, request=request)


def test_migrate_button_only_for_operators(users, host, domain):
    disk = domain.disks.get()
    url = reverse("migration_new_disk", args=[host.name, domain.uuid, "vda"])
    assert f'href="{url}"' in render_button(users["operator"], hypervisor=host, domain=domain, disk=disk)
    assert "Migrate" not in render_button(users["viewer"], hypervisor=host, domain=domain, disk=disk)
    assert "Migrate" not in render_button(users["approver"], hypervisor=host, domain=domain, disk=disk)


def test_migrate_button_disabled_when_domain_not_running(users, host, domain):
    domain.state = "shutoff"
    disk = domain.disks.get()
    html = render_button(users["operator"], hypervisor=host, domain=domain, disk=disk)
    assert 'aria-disabled="true"' in html and "The domain is shutoff" in html and "href=" not in html


def test_migrate_button_disabled_when_a_job_runs(users, host, domain):
    disk = domain.disks.get()
    disk.job_type = "copy"
    html = render_button(users["operator"], hypervisor=host, domain=domain, disk=disk)
    assert 'aria-disabled="true"' in html and "A copy block job already runs on vda" in html


def test_domain_page_offers_migrating_several_disks(users, host, domain):
    request = RequestFactory().get("/")
    request.user = users["operator"]
    html = render_to_string("blockmig/_domain_actions.html", {"hypervisor": host, "domain": domain}, request=request)
    assert reverse("migration_new_domain", args=[host.name, domain.uuid]) in html


def test_disk_page_shows_the_button(client_for, host, domain):
    response = client_for("operator").get(reverse("disk_detail", args=[host.name, domain.uuid, "vda"]))
    assert reverse("migration_new_disk", args=[host.name, domain.uuid, "vda"]) in response.content.decode()


# ---- dashboard block ---------------------------------------------------------------------


def test_dashboard_block_counts_awaiting_approval(client_for, make):
    make(State.READY)
    make(State.READY)
    make(State.COPYING, bytes_done=GIB // 2, bytes_total=GIB)
    make(State.FAILED, finished_at=timezone.now(), failure_reason="Destination directory is missing.")
    html = client_for("approver").get(reverse("migration_dashboard_block")).content.decode()
    assert '<span class="mig-count mig-count--attention" id="approval-count"' in html
    assert 'aria-label="2 awaiting approval">2</span>' in html
    assert "Destination directory is missing." in html
    assert html.count('role="progressbar"') == 3  # the three active ones


def test_dashboard_includes_the_block(client_for, make):
    make(State.READY)
    html = client_for("viewer").get(reverse("dashboard")).content.decode()
    assert 'id="dashboard-migrations-block"' in html
