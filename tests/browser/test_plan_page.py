"""An evacuation plan's page in a real browser goes live: after the approval its disk's bar
fills and its migration shows ready, the totals and the state change, then (the window
opened) the plan is done, all without a reload (a JS marker set before survives)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser import plan_remote

pytestmark = pytest.mark.browser

LIVE = 30_000  # ms: a pushed update must arrive well within this


def test_plan_page_goes_live_from_approval_to_done(site, busy_seed_domain, login, screenshots):
    vm = busy_seed_domain
    plan_id = site.call(
        plan_remote.build_plan,
        hypervisor_name=vm.hypervisor,
        domain_uuid=vm.uuid,
        target_root=str(vm.backups),
        window_in_hours=1,
    )
    page = login("operator")
    page.goto(f"/plans/{plan_id}/")
    expect(page.locator("html")).to_have_attribute("data-live", "open", timeout=LIVE)
    page.evaluate("window.__marker = 1")
    status = page.locator(f"#plan-{plan_id}-phase")
    disks = page.locator(f"#plan-{plan_id}-disks")
    expect(status).to_have_text("Draft — awaiting review")
    expect(disks).to_contain_text("not started")
    expect(page.locator(f"#plan-{plan_id}-actions")).to_contain_text("Discard draft")

    site.call(plan_remote.approve_plan, plan_id=plan_id)
    bar = disks.locator("[role=progressbar]").first
    expect(bar).to_have_attribute("aria-valuenow", "100", timeout=LIVE)  # the mirror is in sync
    expect(disks).to_contain_text("Ready", timeout=LIVE)
    expect(status).to_have_text("Running")
    expect(page.locator(f"#plan-{plan_id}-status")).to_contain_text("Pivots wait for plan")
    expect(page.locator(f"#plan-{plan_id}-actions")).to_contain_text("Pause (no new copies)")
    page.screenshot(path=screenshots / "plan-ready-waiting-for-window.png", full_page=True)

    site.call(plan_remote.open_window, plan_id=plan_id)
    expect(status).to_have_text("Done", timeout=LIVE)
    expect(disks).to_contain_text("Completed")
    expect(page.locator(f"#plan-{plan_id}-status .plan-count-done")).to_have_text("1")
    assert page.evaluate("window.__marker") == 1, "the page was reloaded or navigated"
    assert [m["state"] for m in site.call(plan_remote.plan_migrations, plan_id=plan_id)] == ["completed"]
