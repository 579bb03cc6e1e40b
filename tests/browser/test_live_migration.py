"""What a person sees in a real browser while a migration runs (issue 4).

Every "without reload" assertion sets a JS marker (`window.__marker`) first and checks it is
still there afterwards: a navigation would have dropped it.
"""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import expect

from tests.browser import remote
from tests.helpers import migration_row, wait_for_state

pytestmark = pytest.mark.browser

LIVE = 30_000  # ms: a pushed update must arrive well within this
READY = "Ready — awaiting approval"
COMPLETED = "Completed"


# Scrolled and measured in one script, which runs between two DOM swaps, never during one:
# a pushed frame may replace the element at any moment, and an element handle Playwright
# resolved before the swap is "not attached to the DOM" after it (a flaky fail once).
PLACE = """selector => {
    const element = document.querySelector(selector);
    element.scrollIntoView({block: "center"});
    const box = element.getBoundingClientRect();
    return {x: box.x, y: box.y, width: box.width, height: box.height};
}"""


def picture(page, selector: str, path) -> None:
    """A screenshot of the viewport where the element is (its coordinates stay valid when
    a push redraws it in between)."""
    page.screenshot(path=path, clip=page.evaluate(PLACE, selector))


def mark(page) -> None:
    page.evaluate("window.__marker = 1")


def assert_not_reloaded(page) -> None:
    assert page.evaluate("window.__marker") == 1, "the page was reloaded or navigated"


def wait_live(page) -> None:
    expect(page.locator("html")).to_have_attribute("data-live", "open", timeout=LIVE)


def phase(page, migration_id: int):
    return page.locator(f"#migration-{migration_id}-phase")


def test_operator_starts_and_approver_approves_live(site, seed_domain, login, screenshots):
    vm = seed_domain
    destination = str(vm.backups / "copy.qcow2")

    approver = login("approver")
    approver.goto("/")
    wait_live(approver)
    mark(approver)
    expect(approver.locator("#approval-count")).to_have_text("0")

    operator = login("operator")
    disk_page = operator.context.new_page()  # the operator also watches the disk's chain picture
    disk_page.goto(vm.disk_url)
    wait_live(disk_page)
    mark(disk_page)
    chain = disk_page.locator(f"#chain-{vm.disk_pk}")
    expect(chain).to_contain_text("snap2.qcow2")
    domain_page = operator.context.new_page()  # ... and the domain's small chain pictures
    domain_page.goto(f"/hosts/{vm.hypervisor}/domains/{vm.uuid}/")
    wait_live(domain_page)
    mark(domain_page)
    small_chain = domain_page.locator(f"#chain-{vm.disk_pk}")
    expect(small_chain).to_contain_text("snap2.qcow2")
    expect(small_chain).not_to_contain_text("copy.qcow2")

    operator.goto(vm.disk_url)
    operator.get_by_role("link", name="Migrate this disk").click()
    operator.locator("#id_destination").fill(destination)
    operator.locator("input[name=mode][value=shallow]").check()
    operator.get_by_role("button", name="Start migration").click()
    operator.wait_for_url(re.compile(r"/migrations/\d+/$"))
    migration_id = int(re.search(r"/migrations/(\d+)/$", operator.url).group(1))
    wait_live(operator)
    mark(operator)

    # The mirror target is drawn as soon as libvirt accepted the copy: while it copies or
    # waits for the approval, on both open inventory pages, without a reload.
    mirroring = re.compile(r"mirroring to \S*/copy\.qcow2\.$")
    for page in (disk_page, domain_page):
        expect(page.locator(f"#chain-{vm.disk_pk}-desc")).to_have_text(mirroring, timeout=LIVE)
        expect(page.locator(f"#chain-{vm.disk_pk} g.layer--mirror")).to_contain_text("copy.qcow2")
        assert_not_reloaded(page)
    assert site.call(migration_row, migration_id=migration_id)["state"] in {"copying", "ready"}
    picture(disk_page, f"#chain-{vm.disk_pk}", screenshots / "chain-mirroring.png")

    # The approver's dashboard: the migration appears, then the count of those awaiting approval.
    dashboard = approver.locator("#dashboard-migrations")
    expect(dashboard.locator(f'a[href="/migrations/{migration_id}/"]').first).to_be_visible(timeout=LIVE)
    expect(approver.locator("#approval-count")).to_have_text("1", timeout=60_000)
    assert_not_reloaded(approver)
    approver.screenshot(path=screenshots / "dashboard.png", full_page=True)

    expect(phase(operator, migration_id)).to_have_text(READY, timeout=LIVE)
    assert_not_reloaded(operator)
    expect(operator.get_by_role("button", name="Approve and pivot")).to_have_count(0)  # not the requester's

    approver.locator(f'#dashboard-migrations a[href="/migrations/{migration_id}/"]').first.click()
    approver.wait_for_url(f"**/migrations/{migration_id}/")
    wait_live(approver)
    expect(phase(approver, migration_id)).to_have_text(READY, timeout=LIVE)
    expect(approver.locator(f"#migration-{migration_id}-status .mig-percent")).to_have_text(
        re.compile(r"^\s*100\s*%\s*$"), timeout=LIVE
    )
    approver.screenshot(path=screenshots / "migration-ready.png", full_page=True)
    approver.get_by_role("button", name="Approve and pivot").click()
    approver.wait_for_load_state()
    wait_live(approver)
    mark(approver)

    for page in (approver, operator):
        expect(phase(page, migration_id)).to_have_text(COMPLETED, timeout=60_000)
        assert_not_reloaded(page)
    assert site.call(migration_row, migration_id=migration_id)["state"] == "completed"
    approver.screenshot(path=screenshots / "migration-completed.png", full_page=True)

    # The chain picture is redrawn: copy ← snap1 ← base, snap2 no longer in it.
    desc = chain.locator(f"#chain-{vm.disk_pk}-desc")
    expect(desc).to_have_text(re.compile(r"copy\.qcow2 backed by \S*/snap1\.qcow2 backed by \S*/base\.qcow2\.$"), timeout=LIVE)
    expect(chain).not_to_contain_text("snap2.qcow2")
    assert_not_reloaded(disk_page)
    picture(disk_page, f"#chain-{vm.disk_pk}", screenshots / "chain.png")
    expect(domain_page.locator(f"#chain-{vm.disk_pk}-desc")).to_have_text(
        re.compile(r"copy\.qcow2 backed by \S*/snap1\.qcow2 backed by \S*/base\.qcow2\.$"), timeout=LIVE
    )
    assert_not_reloaded(domain_page)


def test_viewer_sees_progress_and_no_buttons(site, seed_domain, login):
    vm = seed_domain
    migration_id = site.call(
        remote.request_migration,
        hypervisor_name=vm.hypervisor,
        domain_uuid=vm.uuid,
        destination=str(vm.backups / "copy.qcow2"),
        bandwidth_mib=1,
    )
    try:
        viewer = login("viewer")
        viewer.goto(f"/migrations/{migration_id}/")
        wait_live(viewer)
        mark(viewer)
        status = viewer.locator(f"#migration-{migration_id}-status")
        expect(status).to_be_visible()
        expect(status.locator(".mig-done")).to_be_visible()
        expect(phase(viewer, migration_id)).to_have_text(READY, timeout=60_000)
        expect(status.locator(".mig-percent")).to_have_text(re.compile(r"^\s*100\s*%\s*$"), timeout=LIVE)
        assert_not_reloaded(viewer)
        actions = viewer.locator(f"#migration-{migration_id}-actions")
        expect(actions).to_contain_text("You can watch this migration")
        for name in ("Approve and pivot", "Set"):
            expect(viewer.get_by_role("button", name=name)).to_have_count(0)
        expect(viewer.get_by_text("Abort…")).to_have_count(0)
        expect(viewer.locator("form.mig-approve, form.mig-bandwidth, details.mig-abort")).to_have_count(0)
    finally:
        site.call(remote.abort_if_active, migration_id=migration_id)
        wait_for_state(migration_id, {"aborted", "failed", "completed"}, on=site)


CUT_SOCKET = """(selector) => {
  // Close the page's socket and hold it closed: neither htmx's nor live.js's retry may reopen
  // it until the test restores it (live.js only retries an element still marked "closed").
  const elt = document.querySelector(selector);
  const wrapper = elt['htmx-internal-data'].webSocket;
  window.__cut = {wrapper: wrapper, init: wrapper.init, codes: []};
  wrapper.init = function () {};
  document.addEventListener('htmx:wsClose', (e) => {
    if (!window.__cut) { return; }
    window.__cut.codes.push(e.detail.event.code);
    e.target.dataset.live = 'cut';
    document.documentElement.dataset.live = 'cut';
  });
  wrapper.socket.close(4000, 'cut by the test');
}"""

RESTORE_SOCKET = """() => {
  const cut = window.__cut;
  window.__cut = null;
  cut.wrapper.init = cut.init;
  cut.wrapper.init();
}"""


def test_socket_cut_and_restored_catches_up(site, seed_domain, login):
    vm = seed_domain
    migration_id = site.call(
        remote.request_migration,
        hypervisor_name=vm.hypervisor,
        domain_uuid=vm.uuid,
        destination=str(vm.backups / "copy.qcow2"),
        bandwidth_mib=1,
    )
    page = login("operator")
    page.goto(f"/migrations/{migration_id}/")
    wait_live(page)
    mark(page)
    expect(phase(page, migration_id)).to_have_text(READY, timeout=60_000)

    # Cut the socket.
    page.evaluate(CUT_SOCKET, ".mig-layout")
    expect(page.locator(".mig-layout")).to_have_attribute("data-live", "cut", timeout=10_000)

    # Meanwhile the migration is approved and pivots; the cut page cannot hear it.
    site.call(remote.approve, migration_id=migration_id)
    assert wait_for_state(migration_id, {"completed", "failed"}, on=site)["state"] == "completed"
    expect(phase(page, migration_id)).to_have_text(READY)

    # Restored: the consumer sends the page's current fragments on connect — the true state.
    page.evaluate(RESTORE_SOCKET)
    wait_live(page)
    expect(phase(page, migration_id)).to_have_text(COMPLETED, timeout=LIVE)
    expect(page.locator(f"#migration-{migration_id}-status")).to_contain_text("Pivoted")
    assert_not_reloaded(page)


def test_socket_cut_mid_copy_and_restored_catches_up(site, busy_seed_domain, login):
    """Cut while the bandwidth-limited copy runs; the migration is aborted meanwhile."""
    vm = busy_seed_domain
    migration_id = site.call(
        remote.request_migration,
        hypervisor_name=vm.hypervisor,
        domain_uuid=vm.uuid,
        destination=str(vm.backups / "copy.qcow2"),
        bandwidth_mib=1,
    )
    try:
        page = login("operator")
        page.goto(f"/migrations/{migration_id}/")
        wait_live(page)
        mark(page)
        expect(phase(page, migration_id)).to_have_text("Copying", timeout=LIVE)
        done = page.locator(f"#migration-{migration_id}-status .mig-done")
        expect(done).to_have_text(re.compile(r"[1-9]"), timeout=LIVE)  # some bytes copied, pushed live

        page.evaluate(CUT_SOCKET, ".mig-layout")
        expect(page.locator(".mig-layout")).to_have_attribute("data-live", "cut", timeout=10_000)
        assert site.call(migration_row, migration_id=migration_id)["state"] == "copying"

        site.call(remote.abort_if_active, migration_id=migration_id)
        assert wait_for_state(migration_id, {"aborted", "failed"}, on=site)["state"] == "aborted"
        expect(phase(page, migration_id)).to_have_text("Copying")

        page.evaluate(RESTORE_SOCKET)
        wait_live(page)
        expect(phase(page, migration_id)).to_have_text("Aborted — the VM stays on its source", timeout=LIVE)
        expect(page.locator(f"#migration-{migration_id}-actions")).to_contain_text("This migration is over.")
        assert_not_reloaded(page)
    finally:
        site.call(remote.abort_if_active, migration_id=migration_id)


def test_inventory_pages_follow_a_sync(site, login):
    """The hypervisor page's table follows a sync for the search the user typed (its socket
    is reopened for the new search); an open domain page says its domain is gone; when the
    host can no longer be read the stale banner appears on both. The host is libvirt's test
    driver and every change comes from the real sync (hosts.sync)."""
    host = f"inv-{uuid.uuid4().hex[:8]}"
    domains = site.call(remote.sync_test_host, hypervisor_name=host, domains=["alpha", "beta-1", "beta-2"])
    viewer = login("viewer")
    viewer.goto(f"/hosts/{host}/")
    wait_live(viewer)
    domain_page = viewer.context.new_page()
    domain_page.goto(f"/hosts/{host}/domains/{domains['beta-1']}/")
    wait_live(domain_page)
    for page in (viewer, domain_page):
        mark(page)

    viewer.locator("#domain-search").fill("beta")
    table = viewer.locator("#domain-table")
    expect(table).to_have_attribute("ws-connect", f"/ws/hosts/{host}/?q=beta", timeout=LIVE)
    expect(table).to_contain_text("2 domains match “beta”")
    wait_live(viewer)

    site.call(remote.sync_test_host, hypervisor_name=host, domains=["alpha", "beta-2", "beta-3", "gamma"])
    expect(table).to_contain_text("beta-3", timeout=LIVE)
    expect(table).to_contain_text("2 domains match “beta”")
    expect(table).not_to_contain_text("beta-1")
    expect(table).not_to_contain_text("gamma")
    expect(domain_page.locator("#domain-gone")).to_contain_text(f"This domain no longer exists on {host}", timeout=LIVE)

    error = site.call(remote.lose_test_host, hypervisor_name=host)
    expect(viewer.locator("[id^=stale-]")).to_contain_text(error, timeout=LIVE)
    expect(viewer.locator("#hypervisor-title")).to_contain_text("stale")
    expect(domain_page.locator("[id^=stale-]")).to_contain_text(error, timeout=LIVE)
    expect(table).to_contain_text("beta-3")  # the last-known rows stay
    for page in (viewer, domain_page):
        assert_not_reloaded(page)
