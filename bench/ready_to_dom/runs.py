"""bench_ready_to_dom.py's samples: a real run (a migration to READY, its page open in the
browser, then aborted) and the baseline's (a fake migration flipped to READY by hand and
published, no libvirt and no engine)."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta

from harness.lab import job_gone
from harness.waits import wait_state

from ready_to_dom.page import READY_WORDING

# Every wait_for_function predicate is an arrow function, never a bare expression: Playwright
# evaluates it once (when the wait starts, as the browser's own client) and then calls it, while
# an expression is eval'd again at every poll, which the page's CSP (script-src 'self', no
# 'unsafe-eval') refuses with an EvalError.


def real_run(ctx, page, index: int) -> dict:
    from blockmig.lifecycle import DiskRequest, migration_abort, migration_request
    from blockmig.models import AuditEvent, Migration

    dest = ctx.vm.backups / f"copy-{index}.qcow2"
    requested = time.time()
    migration = migration_request(
        user=ctx.operator,
        hypervisor=ctx.host,
        domain_uuid=ctx.vm.uuid,
        disks=[DiskRequest("vda", str(dest))],
        mode="shallow",
        bandwidth_mib=ctx.bandwidth,
    )
    page.bring_to_front()
    page.goto(f"/migrations/{migration.pk}/")
    page.wait_for_function("() => window.__bench && window.__bench.dom !== null", timeout=60_000, polling=50)
    page.wait_for_function("() => window.__bench.paint !== null", timeout=5_000)
    js = page.evaluate("({...window.__bench, arm: undefined})")

    state = wait_state(migration.pk, {"ready", "failed", "aborted", "completed"}, poll=0.02)
    migration.refresh_from_db()
    if state != "ready":
        raise RuntimeError(f"migration #{migration.pk} is {state}: {migration.failure_reason}")
    ready_audit = AuditEvent.objects.get(migration=migration, event_type="ready")
    engine = datetime.fromisoformat(ready_audit.details["ready_events"]["vda"]).timestamp()
    libvirt = ctx.events.ready_after(requested)

    migration_abort(migration=Migration.objects.get(pk=migration.pk), user=ctx.operator)
    state = wait_state(migration.pk, {"aborted", "failed"}, poll=0.02)
    if state != "aborted":
        raise RuntimeError(f"migration #{migration.pk} abort ended {state}")
    job_gone(ctx.vm.name)
    if dest.exists():
        raise RuntimeError(f"{dest} is still there after the abort")

    ready_at = migration.ready_at.timestamp()
    valid = libvirt is not None and js["wsOpen"] is not None and js["wsOpen"] / 1000 < libvirt and not js["initialReady"]
    return {
        "id": migration.pk,
        "valid": valid,
        "libvirt": libvirt,
        "page_open_before_ready": None if libvirt is None or js["wsOpen"] is None else libvirt - js["wsOpen"] / 1000,
        "libvirt_to_engine": engine - libvirt if libvirt else None,
        "engine_to_ready_at": ready_at - engine,
        "libvirt_to_ready_at": ready_at - libvirt if libvirt else None,
        "ready_at_to_frame": js["frame"] / 1000 - ready_at if js["frame"] else None,
        "frame_to_dom": (js["dom"] - js["frame"]) / 1000 if js["frame"] else None,
        "ready_at_to_dom": js["dom"] / 1000 - ready_at,
        "total": js["dom"] / 1000 - libvirt if libvirt else None,
        "total_engine": js["dom"] / 1000 - engine,
        "dom_to_paint": (js["paint"] - js["dom"]) / 1000,
        "clock_skew_ms": js["domDateNow"] - js["dom"],
    }


def create_baseline_row(ctx) -> int:
    from blockmig.models import Migration, MigrationDisk
    from blockmig.states import State

    fake_uuid = str(uuid.uuid4())
    migration = Migration.objects.create(
        hypervisor=ctx.host,
        domain_uuid=fake_uuid,
        domain_name=f"{ctx.vm.name}-baseline",
        requested_by=ctx.operator,
        state=State.COPYING,
        bytes_total=64 << 20,
        bytes_done=32 << 20,
        bandwidth_mib=ctx.bandwidth,
        # Held by the bench for a day: no worker claims it.
        lease_owner=f"bench-baseline-{os.getpid()}",
        lease_expires_at=datetime.now(UTC) + timedelta(days=1),
    )
    MigrationDisk.objects.create(
        migration=migration,
        hypervisor=ctx.host,
        domain_uuid=fake_uuid,
        target="vda",
        source_path=str(ctx.vm.disks[0].path),
        destination=str(ctx.vm.backups / "baseline.qcow2"),
        end=64 << 20,
        cur=32 << 20,
    )
    return migration.pk


def baseline_sample(page, migration_id: int) -> dict:
    from blockmig.live import publish
    from blockmig.models import Migration
    from blockmig.states import State

    page.bring_to_front()
    # Back to copying, and wait until the page shows it, so the next flip is a fresh change.
    Migration.objects.filter(pk=migration_id).update(state=State.COPYING, ready_at=None, bytes_done=32 << 20)
    publish.migration_changed(migration_id)
    page.wait_for_function(
        f"() => !document.getElementById('migration-{migration_id}-status').textContent.includes({READY_WORDING!r})",
        timeout=20_000,
        polling=20,
    )
    page.evaluate("window.__bench.arm()")
    time.sleep(0.05)
    Migration.objects.filter(pk=migration_id).update(state=State.READY, ready_at=datetime.now(UTC), bytes_done=64 << 20)
    published = time.time()
    publish.migration_changed(migration_id)
    page.wait_for_function("() => window.__bench.dom !== null && window.__bench.paint !== null", timeout=20_000, polling=20)
    js = page.evaluate("({...window.__bench, arm: undefined})")
    return {
        "publish_to_frame": js["frame"] / 1000 - published if js["frame"] else None,
        "frame_to_dom": (js["dom"] - js["frame"]) / 1000 if js["frame"] else None,
        "total": js["dom"] / 1000 - published,
        "dom_to_paint": (js["paint"] - js["dom"]) / 1000,
    }
