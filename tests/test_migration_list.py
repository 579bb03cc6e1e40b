"""The migration list (order, state filter, empty state, pages of 25), the dashboard's
migrations block, and the queries of the list and the migration page bounded whatever
their size. Rows are created directly: nothing here needs libvirt."""

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from blockmig.states import State
from tests.migration_page_fixtures import GIB, host, make


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
