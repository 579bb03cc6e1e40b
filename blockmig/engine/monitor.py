"""copying ⇄ ready: watch the block jobs, record progress, apply bandwidth, decide readiness.

Readiness (invariant 1) is the READY event confirmed by `<mirror ready='yes'>`; progress
(cur/end) is only for people to look at. A ready migration pivots on an approval, the host's
auto-pivot policy or its plan (blockmig.plans.rules).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from django.db import Error as DatabaseError  # any database failure, InterfaceError included

from blockmig.engine.base import Failed, reset_database_connection
from blockmig.engine.start import Starting
from blockmig.lifecycle import auto_pivot_policy_setter, migration_record_progress
from blockmig.limits.rules import bandwidth_for
from blockmig.models import Migration, MigrationDisk, Plan
from blockmig.plans.rules import pivot_allowed_by, pivot_wait_reason
from blockmig.progress import add_sample, moving_rate
from blockmig.states import State

log = logging.getLogger(__name__)

TICK = 0.5  # seconds between looks at the jobs (progress is read at least once a second)
PROGRESS_WRITE_EVERY = 1.0  # throttle: at most one progress write per second
SHARE_CHECK_EVERY = 1.0  # seconds between looks at a root's bandwidth share


class Monitoring(Starting):
    def reconcile_jobs(self, migration: Migration) -> None:
        """On entry to monitoring: every disk has our job, or we know why not."""
        problem = self.domain_problem(migration)
        if problem:
            raise Failed(problem)
        if migration.definition_strategy == "undefine" and not migration.domain_undefined:
            if not self.on_host.is_persistent(migration.domain_uuid):
                self._note("undefined", {"reason": "found undefined on takeover"}, domain_undefined=True)
        live = self.on_host.live_disks(migration.domain_uuid)
        started = False
        for disk in migration.disks.all():
            job = self.on_host.job(migration.domain_uuid, disk.target, live)
            if job is None:
                if not disk.job_started and migration.state == State.COPYING:
                    self.start_copies(migration, [disk])  # we died before libvirt accepted it
                    started = True
                    continue
                raise Failed(self.job_vanished(migration, disk))
            if job.mirror_path and job.mirror_path != disk.destination:
                raise Failed(
                    f"{disk.target} now carries a block job to {job.mirror_path} that blockmig did not start; it is left alone."
                )
            if not disk.job_started or not disk.dest_identity:
                # We died between libvirt accepting the copy and saying so.
                self.disk_update(
                    disk,
                    job_started=True,
                    dest_identity=disk.dest_identity or self.identity(disk.destination, self.dest_kind(disk)),
                )
        if started:
            self.refresh_inventory(migration, started_copy=True)

    def monitor(self, migration: Migration) -> None:
        log.debug("migration %s: monitoring (%s, trust_live_ready=%s)", self.id, migration.state, self.trust_live_ready)
        self.reconcile_jobs(migration)
        state = migration.state
        while True:
            self.wakeup.wait(TICK)
            self.wakeup.clear()
            self.check_stop()
            migration = self.load()
            if migration.state != state:
                return  # approved, aborted, or moved by someone else: dispatch again
            problem = self.domain_problem(migration)
            if problem:
                raise Failed(problem)
            disks = list(migration.disks.all())
            live = self.on_host.live_disks(migration.domain_uuid)
            jobs = {}
            for disk in disks:
                job = self.on_host.job(migration.domain_uuid, disk.target, live)
                with self.lock:
                    bad = self.bad_events.get(disk.target)
                if job is None or bad:
                    if job is None and not bad:
                        # The event that says why usually follows the job's end by milliseconds.
                        self.wakeup.wait(1.0)
                    raise Failed(self.job_vanished(migration, disk))
                jobs[disk.target] = job
            self.apply_bandwidth(migration, disks, jobs)
            ready = {d.target: self.is_ready(d.target, jobs[d.target]) for d in disks}
            # The last figures before ready are always written: the page shows 100 %.
            self.record_progress(migration, disks, jobs, ready, force=all(ready.values()))
            if state == State.COPYING and all(ready.values()):
                self.mark_ready(migration, disks)
                return
            if state == State.READY and not all(ready.values()):
                self.transition(State.COPYING, expect={State.READY}, details={"reason": "a mirror fell out of sync"})
                return
            if state == State.READY and self.pivot_by_plan(migration):
                return

    def apply_bandwidth(self, migration: Migration, disks: list[MigrationDisk], jobs) -> None:
        """An operator's change is recorded on the row, a root's shared total on the host
        (blockmig.limits.rules); the driver applies both: at once for the operator's, within
        SHARE_CHECK_EVERY when copies into the root start or end."""
        now = time.monotonic()
        if (
            self.applied_bandwidth is not None
            and migration.bandwidth_mib == self.applied_own
            and now - self.share_checked < SHARE_CHECK_EVERY
        ):
            return
        self.share_checked = now
        wanted = bandwidth_for(migration, disks)
        if wanted == self.applied_bandwidth:
            self.applied_own = migration.bandwidth_mib
            return
        self.confirm_lease()  # a paused driver must not act on a migration someone else holds
        before = self.applied_bandwidth or {}
        for disk in disks:
            if jobs[disk.target].mirror_path == disk.destination and before.get(disk.target) != wanted[disk.target]:
                self.on_host.set_speed(migration.domain_uuid, disk.target, wanted[disk.target])
        shared = {t: mib for t, mib in wanted.items() if mib != migration.bandwidth_mib}
        if shared and migration.bandwidth_mib == self.applied_own:
            # Not the operator's change (that one is audited already): the root's share moved.
            self._note("bandwidth_shared", {"mib_per_disk": wanted, "own_limit_mib": migration.bandwidth_mib})
        self.applied_bandwidth = wanted
        self.applied_own = migration.bandwidth_mib

    def is_ready(self, target: str, job) -> bool:
        with self.lock:
            event_seen = target in self.ready_events
        return job.ready and (event_seen or self.trust_live_ready)

    def record_progress(self, migration: Migration, disks, jobs, ready, *, force: bool = False) -> None:
        now = time.monotonic()
        cur = sum(j.cur for j in jobs.values())
        end = sum(j.end for j in jobs.values())
        self.history = add_sample(self.history, now, cur)
        grew = self.max_end > 0 and end > self.max_end
        self.max_end = max(self.max_end, end)
        if now - self.last_write < PROGRESS_WRITE_EVERY and not grew and not force:
            return
        totals = {"bytes_done": cur, "bytes_total": end, "rate_bps": moving_rate(self.history), "progress_at": datetime.now(UTC)}
        if grew:
            totals["total_grew"] = True
        try:
            migration_record_progress(
                self.id,
                totals=totals,
                disks={d.pk: {"cur": jobs[d.target].cur, "end": jobs[d.target].end, "ready": ready[d.target]} for d in disks},
                lease=self.lease,
            )
        except DatabaseError as error:
            # Progress is only for people to look at: skip it, keep watching the copy.
            log.warning("migration %s: progress not recorded (%s)", self.id, error)
            reset_database_connection()
        self.last_write = now

    def mark_ready(self, migration: Migration, disks: list[MigrationDisk]) -> None:
        with self.lock:
            events = {t: datetime.fromtimestamp(at, UTC).isoformat() for t, at in self.ready_events.items()}
        for disk in disks:
            size = self.on_host.file_size(disk.destination) if self.dest_kind(disk) == "file" else None
            self.disk_update(disk, ready=True, dest_size_at_ready=size)
        self.transition(
            State.READY,
            expect={State.COPYING},
            details={"ready_events": events, "confirmed_by": "mirror ready='yes'", "trusted_live_xml": self.trust_live_ready},
            ready_at=datetime.now(UTC),
        )
        hypervisor = migration.hypervisor
        hypervisor.refresh_from_db(fields=["auto_pivot"])
        # A plan's maintenance window holds back even the host's auto-pivot (pivot_by_plan).
        if hypervisor.auto_pivot and not pivot_wait_reason(migration):
            self.transition(
                State.PIVOTING,
                expect={State.READY},
                event_type="auto_pivot",
                details={"policy": "auto_pivot", "policy_set_by": auto_pivot_policy_setter(hypervisor)},
            )

    def pivot_by_plan(self, migration: Migration) -> bool:
        """A ready migration of an evacuation plan pivots once the plan's window is open and
        an approval covers it: the plan's own (when it covers its pivots), one given while
        the window was shut, or the host's auto-pivot policy (blockmig.plans.rules)."""
        if migration.plan_id is None:
            return False
        migration.hypervisor.refresh_from_db(fields=["auto_pivot"])
        allowed = pivot_allowed_by(migration, auto_pivot=migration.hypervisor.auto_pivot)
        if allowed is None:
            return False
        fields = {}
        if allowed["policy"] == "plan_approval":
            fields["approved_by"] = Plan.objects.get(pk=migration.plan_id).approved_by
        self.transition(State.PIVOTING, expect={State.READY}, event_type="plan_pivot", details=allowed, **fields)
        return True
