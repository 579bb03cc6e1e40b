"""The copy-limit queue in a real browser (issue 11). With one copy allowed on the host, the
first migration holds the slot (ready, and nobody approves it) and the next two wait in
`queued`: their pages, the dashboard and the migrations list show each one's place and why.
When the first is aborted, the second's page moves on to its copy without a reload, and the
third's page, still queued, is told its new place: its own row did not change, so only the
queue's push (blockmig.limits.queue_push) can tell it."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import expect

from tests.browser import queue_remote, remote
from tests.helpers import migration_row, wait_for_state

pytestmark = pytest.mark.browser

# ms: a pushed update must arrive well within this. It is also below the consumers' periodic
# resync (RESYNC_SECONDS, 60 s after the socket opened), so a page that was never pushed
# cannot pass by resyncing; the pages that check it are opened just before the abort.
LIVE = 30_000
QUEUED = "Queued — waiting for a copy slot"
STARTED = re.compile(r"^\s*(Copying|Ready — awaiting approval)\s*$")


def wait_live(page) -> None:
    expect(page.locator("html")).to_have_attribute("data-live", "open", timeout=LIVE)


def mark(page) -> None:
    page.evaluate("window.__marker = 1")


def assert_not_reloaded(page) -> None:
    assert page.evaluate("window.__marker") == 1, "the page was reloaded or navigated"


def full(host: str, running: int) -> str:
    """The host limit's reason while migration #running holds the one slot (limits/rules.py)."""
    return f"1 copy already runs on {host} (limit 1); next slot when #{running} finishes"


def test_queued_migrations_show_their_place_and_start_when_the_slot_frees(site, domain_factory, login, screenshots):
    vms = [domain_factory.seed(f"queue{n}") for n in range(3)]
    host = f"queue-{uuid.uuid4().hex[:8]}"
    site.call(
        queue_remote.host_with_copy_limit,
        hypervisor_name=host,
        domain_uuids=[vm.uuid for vm in vms],
        allowed_roots=[str(vm.backups) for vm in vms],
        max_copies=1,
    )
    ids: list[int] = []

    def request(vm) -> int:
        migration_id = site.call(
            remote.request_migration,
            hypervisor_name=host,
            domain_uuid=vm.uuid,
            destination=str(vm.backups / "copy.qcow2"),
            bandwidth_mib=0,
        )
        ids.append(migration_id)
        return migration_id

    try:
        # The first copy holds the slot: ready, it waits for an approval nobody gives.
        first = request(vms[0])
        wait_for_state(first, "ready", on=site)
        second = request(vms[1])
        wait_for_state(second, "queued", on=site)
        third = request(vms[2])
        wait_for_state(third, "queued", on=site)

        operator = login("operator")
        operator.goto("/migrations/?state=queued")
        for migration_id, text in (
            (second, f"1st in the queue: {full(host, first)}"),
            (third, f"2nd in the queue: {full(host, first)}"),
        ):
            row = operator.locator(f"#migration-row-{migration_id}")
            expect(row.locator(".mig-state")).to_have_text(QUEUED)
            expect(row.locator(".mig-queue")).to_have_text(text)

        operator.goto("/")
        wait_live(operator)
        mark(operator)
        expect(operator.locator(f"#dashboard-queue-{second}")).to_have_text(f"1st in the queue: {full(host, first)}")
        expect(operator.locator(f"#dashboard-queue-{third}")).to_have_text(f"2nd in the queue: {full(host, first)}")

        second_page = operator.context.new_page()
        second_page.goto(f"/migrations/{second}/")
        wait_live(second_page)
        mark(second_page)
        expect(second_page.locator(f"#migration-{second}-phase")).to_have_text(QUEUED)
        note = second_page.locator(f"#migration-{second}-queue")
        expect(note).to_have_text(
            f"Waiting for a copy slot, 1st in the queue: {full(host, first)}. "
            "It starts by itself when a slot frees; nothing has been done on the host yet."
        )
        second_page.screenshot(path=screenshots / "migration-queued.png", full_page=True)

        third_page = operator.context.new_page()
        third_page.goto(f"/migrations/{third}/")
        wait_live(third_page)
        mark(third_page)
        expect(third_page.locator(f"#migration-{third}-queue")).to_contain_text(f"2nd in the queue: {full(host, first)}.")

        # The slot frees: the second starts by itself, the third moves up behind it.
        site.call(remote.abort_if_active, migration_id=first)
        expect(second_page.locator(f"#migration-{second}-phase")).to_have_text(STARTED, timeout=LIVE)
        expect(note).to_have_count(0)
        third_note = third_page.locator(f"#migration-{third}-queue")
        expect(third_note).to_contain_text(f"1st in the queue: {full(host, second)}.", timeout=LIVE)
        expect(third_page.locator(f"#migration-{third}-phase")).to_have_text(QUEUED)
        expect(operator.locator(f"#dashboard-queue-{second}")).to_have_count(0, timeout=LIVE)
        expect(operator.locator(f"#dashboard-queue-{third}")).to_have_text(
            f"1st in the queue: {full(host, second)}", timeout=LIVE
        )
        for page in (operator, second_page, third_page):
            assert_not_reloaded(page)

        assert site.call(migration_row, migration_id=first)["state"] == "aborted"
        assert site.call(migration_row, migration_id=second)["state"] in {"copying", "ready"}
        trail = [e["type"] for e in site.call(migration_row, migration_id=second)["events"]]
        assert trail[:4] == ["requested", "preflight", "queued", "copying"]
        assert site.call(migration_row, migration_id=third)["state"] == "queued"
    finally:
        # Nothing of this host may hold a slot or a block job for the session's other tests.
        for migration_id in reversed(ids):  # the queued ones first: none starts meanwhile
            site.call(remote.abort_if_active, migration_id=migration_id)
        for migration_id in ids:
            wait_for_state(migration_id, {"aborted", "failed", "completed"}, on=site)
