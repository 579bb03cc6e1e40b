"""What a user sees on the inventory pages: health, stale data, search, pagination,
disks and their jobs, times in their timezone, and a query count that does not grow."""

import re
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from hosts.models import ChainLayer, Disk, Domain, Hypervisor

LAST_GOOD = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
ERROR = "Cannot reach qemu+ssh://kvm02/system: Connection refused."


@pytest.fixture
def hosts(db):
    ok = Hypervisor.objects.create(
        name="lab",
        uri="qemu:///system",
        last_sync_ok_at=timezone.now(),
        libvirt_version="9.0.0",
        driver="QEMU",
        hypervisor_version="7.2.0",
        virt_type="qemu",
        allowed_roots=["/srv/backups"],
    )
    stale = Hypervisor.objects.create(
        name="kvm02", uri="qemu+ssh://kvm02/system", last_sync_ok_at=LAST_GOOD, last_sync_error=ERROR, virt_type="kvm"
    )
    new = Hypervisor.objects.create(name="fresh", uri="qemu+tls://fresh/system")
    off = Hypervisor.objects.create(name="retired", uri="qemu+tcp://retired/system", enabled=False)
    return {"ok": ok, "stale": stale, "new": new, "off": off}


def make_domains(host: Hypervisor, count: int, disks: int = 2) -> None:
    domains = Domain.objects.bulk_create(
        Domain(
            hypervisor=host, uuid=f"00000000-0000-4000-8000-{i:012d}", name=f"vm-{i:03d}", state="running" if i % 2 else "shutoff"
        )
        for i in range(count)
    )
    Disk.objects.bulk_create(
        Disk(
            domain=d,
            target=f"vd{chr(97 + n)}",
            source=f"/lab/{d.name}-{n}.qcow2",
            job_type="copy" if n == 0 and i % 7 == 0 else "",
        )
        for i, d in enumerate(domains)
        for n in range(disks)
    )


def test_list_shows_health_versions_and_domain_counts(client_for, hosts):
    make_domains(hosts["ok"], 3)
    html = client_for("viewer").get(reverse("hypervisor_list")).content.decode()
    for name, health in (("lab", "ok"), ("kvm02", "stale"), ("fresh", "unknown"), ("retired", "disabled")):
        row = html[
            html.index(f'id="hypervisor-{hosts[{"lab": "ok", "kvm02": "stale", "fresh": "new", "retired": "off"}[name]].pk}"') :
        ]
        row = row[: row.index("</tr>")]
        assert f">{health}</span>" in row, name
    lab_row = html[html.index(f'id="hypervisor-{hosts["ok"].pk}"') :].split("</tr>")[0]
    assert "libvirt 9.0.0" in lab_row and "QEMU 7.2.0" in lab_row and ">TCG<" in lab_row
    assert '<td class="num">3</td>' in lab_row
    assert ERROR in html


def test_stale_host_says_since_when_and_why(client_for, hosts):
    html = client_for("viewer").get(reverse("hypervisor_detail", args=["kvm02"])).content.decode()
    assert "showing data from" in html and f"last sync failed: {ERROR}" in html
    assert '<time datetime="2026-01-15T12:00:00+00:00"' in html
    ok = client_for("viewer").get(reverse("hypervisor_detail", args=["lab"])).content.decode()
    assert "showing data from" not in ok


def test_times_are_shown_in_the_users_timezone(client_for, hosts):
    client = client_for("viewer")
    client.cookies["tz"] = "Europe/Berlin"
    html = client.get(reverse("hypervisor_detail", args=["kvm02"])).content.decode()
    assert ">2026-01-15 13:00:00 CET</time>" in html
    assert "Times shown in Europe/Berlin" in html
    client.cookies["tz"] = "Not/AZone"
    html = client.get(reverse("hypervisor_detail", args=["kvm02"])).content.decode()
    assert ">2026-01-15 12:00:00 UTC</time>" in html


def test_dashboard_shows_host_cards_and_a_place_for_migrations(client_for, hosts):
    make_domains(hosts["ok"], 4)
    html = client_for("viewer").get(reverse("dashboard")).content.decode()
    assert 'id="dashboard-migrations"' in html
    assert f'id="host-{hosts["stale"].pk}"' in html and ERROR in html
    assert "4 (2 running)" in html
    assert "<strong>4</strong> domains (2 running)" in html


def test_dashboard_empty_state_before_any_host(client_for, db):
    html = client_for("admin").get(reverse("dashboard")).content.decode()
    assert "No hypervisors yet." in html and reverse("hypervisor_add") in html


def test_domains_paginate_fifty_per_page(client_for, hosts):
    make_domains(hosts["ok"], 120, disks=1)
    client = client_for("viewer")
    url = reverse("hypervisor_detail", args=["lab"])
    first = client.get(url).content.decode()
    assert "120 domains · page 1 of 3" in first
    assert first.count('<th scope="row"><a href="/hosts/lab/domains/') == 50
    assert ">vm-000<" in first and ">vm-049<" in first and ">vm-050<" not in first
    last = client.get(url, {"page": 3}).content.decode()
    assert last.count('<th scope="row"><a href="/hosts/lab/domains/') == 20
    assert ">vm-119<" in last and "Next →</a>" not in last and "← Previous</a>" in last


def test_search_filters_by_name_or_uuid(client_for, hosts):
    make_domains(hosts["ok"], 120, disks=1)
    client = client_for("viewer")
    url = reverse("hypervisor_detail", args=["lab"])
    html = client.get(url, {"q": "vm-11"}).content.decode()
    assert "10 domains match “vm-11”" in html
    assert ">vm-110<" in html and ">vm-119<" in html and ">vm-011<" not in html
    by_uuid = client.get(url, {"q": "00000000-0000-4000-8000-000000000042"}).content.decode()
    assert "1 domain match" in by_uuid and ">vm-042<" in by_uuid
    none = client.get(url, {"q": "no-such-vm"}).content.decode()
    assert "No domain matches “no-such-vm”." in none


def test_htmx_search_returns_only_the_table_fragment(client_for, hosts):
    make_domains(hosts["ok"], 60, disks=1)
    url = reverse("hypervisor_detail", args=["lab"])
    response = client_for("viewer").get(url, {"q": "vm-05"}, headers={"HX-Request": "true"})
    html = response.content.decode().strip()
    assert html.startswith('<div id="domain-table"') and html.endswith("</div>")
    assert "<html" not in html and "Facts" not in html
    assert ">vm-050<" in html and ">vm-010<" not in html
    # A history restore asks for the whole page.
    full = client_for("viewer").get(url, headers={"HX-Request": "true", "HX-History-Restore-Request": "true"})
    assert "<html" in full.content.decode()


def test_search_box_is_wired_for_search_as_you_type(client_for, hosts):
    html = client_for("viewer").get(reverse("hypervisor_detail", args=["lab"])).content.decode()
    assert 'hx-trigger="input changed delay:300ms, search"' in html
    assert 'hx-target="#domain-table"' in html and 'name="q"' in html


@pytest.mark.parametrize("url_name", ["hypervisor_detail", "hypervisor_list", "dashboard"])
def test_query_count_does_not_grow_with_domains(url_name, client_for, hosts):
    client = client_for("viewer")
    client.get(reverse("dashboard"))  # warm the session and permission caches alike
    args = ["lab"] if url_name == "hypervisor_detail" else []

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(reverse(url_name, args=args)).status_code == 200
        return len(captured)

    make_domains(hosts["ok"], 50)
    small = queries()
    Domain.objects.all().delete()
    make_domains(hosts["ok"], 500)
    assert queries() == small
    assert small <= 10


def test_domain_page_shows_disks_and_who_runs_their_jobs(client_for, hosts):
    domain = Domain.objects.create(
        hypervisor=hosts["ok"], uuid="aaaaaaaa-0000-4000-8000-000000000001", name="testvm", state="running"
    )
    vda = Disk.objects.create(
        domain=domain,
        target="vda",
        bus="virtio",
        format="qcow2",
        source="/lab/snap2.qcow2",
        job_type="copy",
        job_cur=42,
        job_end=100,
        job_mirror_path="/srv/backups/copy.qcow2",
    )
    Disk.objects.create(domain=domain, target="vdb", bus="virtio", type="block", format="raw", source="/dev/vg0/data")
    for depth, name in enumerate(["snap2", "snap1", "base"]):
        ChainLayer.objects.create(disk=vda, depth=depth, path=f"/lab/{name}.qcow2", format="qcow2")
    html = client_for("viewer").get(reverse("domain_detail", args=["lab", domain.uuid])).content.decode()
    assert "/lab/snap2.qcow2" in html and "/dev/vg0/data" in html
    assert reverse("disk_detail", args=["lab", domain.uuid, "vda"]) in html
    assert reverse("disk_detail", args=["lab", domain.uuid, "vdb"]) in html
    assert "block job (copy, 42%) — not started by blockmig" in html
    assert f'id="chain-{vda.pk}"' in html  # the small picture, swappable by id
    assert f'ws-connect="/ws/hosts/lab/?domain={domain.uuid}"' in html  # ... by the live console
    assert "persistent" in html.lower()


def test_job_started_by_blockmig_is_named_as_such(client_for, hosts, users):
    from blockmig.models import Migration, MigrationDisk

    domain = Domain.objects.create(
        hypervisor=hosts["ok"], uuid="aaaaaaaa-0000-4000-8000-000000000002", name="db1", state="running"
    )
    Disk.objects.create(
        domain=domain,
        target="vda",
        source="/lab/db1.qcow2",
        job_type="copy",
        job_cur=1,
        job_end=1,
        job_ready=True,
        job_mirror_path="/srv/backups/db1.qcow2",
    )
    migration = Migration.objects.create(
        hypervisor=hosts["ok"], domain_uuid=domain.uuid, domain_name="db1", requested_by=users["operator"], state="ready"
    )
    MigrationDisk.objects.create(
        migration=migration,
        hypervisor=hosts["ok"],
        domain_uuid=domain.uuid,
        target="vda",
        source_path="/lab/db1.qcow2",
        destination="/srv/backups/db1.qcow2",
    )
    html = client_for("viewer").get(reverse("disk_detail", args=["lab", domain.uuid, "vda"])).content.decode()
    assert f"block job (copy, ready) — blockmig migration #{migration.pk}" in html
    assert "not started by blockmig" not in html


def test_disk_page_has_the_actions_slot_and_a_swappable_picture(client_for, hosts):
    domain = Domain.objects.create(
        hypervisor=hosts["ok"], uuid="aaaaaaaa-0000-4000-8000-000000000003", name="vm", state="running"
    )
    disk = Disk.objects.create(domain=domain, target="sda", bus="scsi", type="network", source="rbd/pool/img")
    html = client_for("viewer").get(reverse("disk_detail", args=["lab", domain.uuid, "sda"])).content.decode()
    assert 'id="disk-actions"' in html and f'id="chain-{disk.pk}"' in html
    assert "No backing chain known for this disk (network disks report none)." in html


def live_request(user):
    """A request as the live consumers render with (blockmig.live)."""
    from django.test import RequestFactory

    request = RequestFactory().get("/")
    request.user = user
    return request


def test_disk_page_push_carries_the_chain_picture_swapped_by_id(hosts, users):
    from blockmig.live.disk import disk_pages

    domain = Domain.objects.create(
        hypervisor=hosts["ok"], uuid="aaaaaaaa-0000-4000-8000-000000000004", name="vm", state="running"
    )
    disk = Disk.objects.create(domain=domain, target="vda", source="/lab/a.qcow2")
    ChainLayer.objects.create(disk=disk, depth=0, path="/lab/a.qcow2", format="qcow2")
    frame = disk_pages(live_request(users["viewer"]), hosts["ok"].pk, [disk.pk], {})
    picture = frame[frame.index(f'<div id="chain-{disk.pk}"') :]
    assert picture.split(">", 1)[0].endswith('hx-swap-oob="true"') and "<svg" in picture
    assert "folded" not in picture


def test_domain_page_push_carries_the_small_chain_picture_the_page_shows(client_for, hosts, users):
    from blockmig.live.domain import domain_page

    domain = Domain.objects.create(
        hypervisor=hosts["ok"], uuid="aaaaaaaa-0000-4000-8000-000000000005", name="vm", state="running"
    )
    disk = Disk.objects.create(domain=domain, target="vda", source="/lab/l0.qcow2")
    for depth in range(6):
        ChainLayer.objects.create(disk=disk, depth=depth, path=f"/lab/l{depth}.qcow2", format="qcow2")
    frame, _seen = domain_page(live_request(users["viewer"]), hosts["ok"].pk, domain.uuid)
    pushed = frame[frame.index(f'<div id="chain-{disk.pk}"') :]
    assert "folded; the disk page shows them all" in pushed
    page = client_for("viewer").get(reverse("domain_detail", args=["lab", domain.uuid])).content.decode()
    on_page = page[page.index(f'<div id="chain-{disk.pk}"') :]
    # The picture inside the pushed disks block is the page's own (that block is swapped whole).
    assert on_page[:2000] == pushed[:2000]


def test_unknown_host_domain_or_disk_is_404(client_for, hosts):
    client = client_for("viewer")
    assert client.get(reverse("hypervisor_detail", args=["nope"])).status_code == 404
    assert client.get(reverse("domain_detail", args=["lab", "not-a-uuid"])).status_code == 404
    assert client.get(reverse("disk_detail", args=["lab", "not-a-uuid", "vda"])).status_code == 404


def test_refresh_reports_the_sync_result(client_for, hosts):
    unreachable = Hypervisor.objects.create(name="gone", uri="qemu+tcp://127.0.0.1:1/system")
    response = client_for("operator").post(reverse("hypervisor_refresh", args=["gone"]), follow=True)
    html = response.content.decode()
    assert "Sync of gone failed: Cannot reach qemu+tcp://127.0.0.1:1/system" in html
    assert "The last-known data is still shown." in html
    unreachable.refresh_from_db()
    assert unreachable.is_stale and unreachable.last_sync_error.startswith("Cannot reach")

    Hypervisor.objects.create(name="testdrv", uri="test:///default")
    response = client_for("operator").post(reverse("hypervisor_refresh", args=["testdrv"]), follow=True)
    assert "testdrv synced just now." in response.content.decode()
    assert response.redirect_chain[-1][0] == reverse("hypervisor_detail", args=["testdrv"])
    assert Domain.objects.filter(hypervisor__name="testdrv", name="test").exists()


def test_base_layout_shows_user_roles_logout_and_vendored_htmx(client_for, hosts):
    html = client_for("operator").get(reverse("dashboard")).content.decode()
    assert ">operator</span>" in html
    assert f'action="{reverse("logout")}"' in html and 'method="post"' in html
    assert "/static/django_htmx/htmx-2.min.js" in html and "https://" not in html.split("<body")[0]
    assert "/static/js/tz.js" in html
    # htmx's ws extension is loaded exactly once (django-htmx's copy, matching its htmx).
    head = html.split("<body")[0]
    assert re.findall(r'<script src="([^"]*ws[^"]*\.js)"', head) == ["/static/django_htmx/ext/hx-ws-2.min.js"]


def test_login_page(client, db):
    response = client.get(reverse("login"))
    html = response.content.decode()
    assert response.status_code == 200 and 'name="username"' in html and "autofocus" in html
    assert ">Log out<" not in html


def test_domain_table_holds_a_socket_for_the_page_shown(client_for, hosts):
    """The live console must push the table the user is looking at: the table's socket
    carries the search and page, and a search (which swaps the table) brings a new one."""
    make_domains(hosts["ok"], 120, disks=1)
    client = client_for("viewer")
    url = reverse("hypervisor_detail", args=["lab"])
    html = client.get(url).content.decode()
    assert '<div id="domain-table" class="table-block" hx-ext="ws" ws-connect="/ws/hosts/lab/">' in html
    html = client.get(url, {"q": "vm-0", "page": "2"}).content.decode()
    assert 'ws-connect="/ws/hosts/lab/?q=vm-0&amp;page=2"' in html
    fragment = client.get(url, {"q": "vm-05"}, headers={"HX-Request": "true"}).content.decode()
    assert 'ws-connect="/ws/hosts/lab/?q=vm-05"' in fragment
    assert f'id="stale-{hosts["ok"].pk}" hidden' in client.get(url).content.decode()  # a place for the banner
