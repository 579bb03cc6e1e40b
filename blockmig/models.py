from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from blockmig.plans.states import PlanState
from blockmig.progress import Progress
from blockmig.states import ACTIVE_STATES, State


class Migration(models.Model):
    """One request to move one or more disks of a domain. The source of truth for its
    lifecycle; libvirt's block jobs are the reality reconciled against it."""

    # Not columns: selectors.with_progress attaches these for the pages.
    progress: Progress
    phase: str

    class Mode(models.TextChoices):
        SHALLOW = "shallow", "Shallow (copy shares the backing chain)"
        FULL = "full", "Full (copy is flattened)"

    hypervisor = models.ForeignKey("hosts.Hypervisor", on_delete=models.PROTECT, related_name="migrations")
    domain_uuid = models.CharField(max_length=36)
    domain_name = models.CharField(max_length=255)
    state = models.CharField(max_length=16, choices=State.choices, default=State.REQUESTED, db_index=True)
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.SHALLOW)
    dest_format = models.CharField(max_length=8, default="qcow2")
    reuse_destination = models.BooleanField(default=False)
    bandwidth_mib = models.PositiveIntegerField(default=0, help_text="MiB/s, 0 = unlimited")
    synchronous_writes = models.BooleanField(default=False)
    granularity = models.PositiveIntegerField(null=True, blank=True)
    buf_size = models.PositiveIntegerField(null=True, blank=True)
    # Which path keeps the persistent definition safe: "transient_job" or "undefine".
    definition_strategy = models.CharField(max_length=16, blank=True)
    saved_definition = models.TextField(blank=True, help_text="Inactive XML saved before anything was touched.")
    domain_undefined = models.BooleanField(default=False)
    # Take the undefine/redefine path even where the transient-job flag exists.
    force_undefine = models.BooleanField(default=False)
    # The evacuation plan that requested this migration (blockmig.plans), if any.
    plan = models.ForeignKey("Plan", null=True, blank=True, on_delete=models.PROTECT, related_name="migrations")

    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    failure_reason = models.TextField(blank=True)

    # Progress over all disks, throttled writes from the worker.
    bytes_done = models.BigIntegerField(default=0)
    bytes_total = models.BigIntegerField(default=0)
    rate_bps = models.FloatField(default=0)
    total_grew = models.BooleanField(default=False)
    progress_at = models.DateTimeField(null=True, blank=True)

    # Lease held by the worker driving this migration (blockmig.leases). The epoch grows by
    # one on every claim; (owner, epoch) fences every write the driver makes.
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_epoch = models.PositiveBigIntegerField(default=0)
    lease_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("approve_migration", "Can approve a migration's pivot"),
            ("abort_migration", "Can abort a migration before its pivot"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.domain_name} ({self.state})"

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES


class MigrationDisk(models.Model):
    progress: Progress  # not a column: attached by selectors.with_progress

    migration = models.ForeignKey(Migration, on_delete=models.CASCADE, related_name="disks")
    # Copied from the migration so the database itself refuses two active migrations of
    # one disk (see the conditional unique constraint below).
    hypervisor = models.ForeignKey("hosts.Hypervisor", on_delete=models.PROTECT, related_name="+")
    domain_uuid = models.CharField(max_length=36)
    active = models.BooleanField(default=True)
    target = models.CharField(max_length=32)
    source_path = models.CharField(max_length=1024)
    source_chain = models.JSONField(default=list, help_text="Chain paths before the copy, active layer first.")
    destination = models.CharField(max_length=1024)
    created_destination = models.BooleanField(default=False)
    cur = models.BigIntegerField(default=0)
    end = models.BigIntegerField(default=0)
    ready = models.BooleanField(default=False)
    # Committed right after libvirt accepted the blockCopy: a takeover that finds no job
    # and this set knows the job died, and never starts the copy a second time.
    job_started = models.BooleanField(default=False)
    # What the destination was when the copy began ("dev:inode" on the local host,
    # "volume:<key>" in a libvirt pool; "" where the host allows no check) and its size
    # when the mirror became ready: the pivot goes ahead only onto that same file (invariant 9).
    dest_identity = models.CharField(max_length=512, blank=True)
    dest_size_at_ready = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["target"]
        constraints = [
            models.UniqueConstraint(fields=["migration", "target"], name="migrationdisk_unique_target"),
            models.UniqueConstraint(
                fields=["hypervisor", "domain_uuid", "target"],
                condition=models.Q(active=True),
                name="migrationdisk_one_active_per_disk",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.target} → {self.destination}"


class AuditEvent(models.Model):
    """Append-only record of every state change and human action (Zulip's RealmAuditLog)."""

    # Not columns: selectors.with_words attaches these for the pages.
    label: str
    items: list[tuple[str, str]]

    class AppendOnlyQuerySet(models.QuerySet):
        """Bulk writes would bypass save()/delete(), so the queryset refuses them too
        (also for `migration.events`, whose manager is built from this one)."""

        def update(self, **kwargs):
            raise PermissionError("Audit events are append-only.")

        def delete(self):
            raise PermissionError("Audit events are append-only.")

        def bulk_update(self, objs, fields, batch_size=None):
            raise PermissionError("Audit events are append-only.")

        def _raw_delete(self, using):
            raise PermissionError("Audit events are append-only.")

    objects = AppendOnlyQuerySet.as_manager()

    event_type = models.CharField(max_length=32, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    actor_name = models.CharField(max_length=150, blank=True, help_text="Kept even if the user is renamed.")
    hypervisor_name = models.CharField(max_length=64, blank=True, db_index=True)
    domain_name = models.CharField(max_length=255, blank=True, db_index=True)
    disk_targets = models.CharField(max_length=255, blank=True)
    migration = models.ForeignKey(Migration, null=True, blank=True, on_delete=models.PROTECT, related_name="events")
    from_state = models.CharField(max_length=16, blank=True)
    to_state = models.CharField(max_length=16, blank=True, db_index=True)
    details = models.JSONField(default=dict, blank=True)
    # How a person's action reached blockmig when not through the console's pages, e.g.
    # "api token “nightly”" (blockmig.audit.AUDIT_VIA); empty for the pages and the engine.
    via = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise PermissionError("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("Audit events are append-only.")


class Plan(models.Model):
    """A storage evacuation: many disks to one target root, preflighted as a whole,
    reviewed once, then run as ordinary migrations (blockmig.plans)."""

    class Source(models.TextChoices):
        ROOT = "root", "A storage directory"
        HOST = "host", "Every disk of the host"
        DOMAINS = "domains", "Chosen domains"

    class PivotPolicy(models.TextChoices):
        EACH = "each", "Each pivot approved by an approver"
        PLAN = "plan", "The plan's approval covers its pivots"

    hypervisor = models.ForeignKey("hosts.Hypervisor", on_delete=models.PROTECT, related_name="plans")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    source_kind = models.CharField(max_length=8, choices=Source.choices)
    source_root = models.CharField(max_length=1024, blank=True)
    domain_uuids = models.JSONField(default=list, blank=True)
    target_root = models.CharField(max_length=1024)
    mode = models.CharField(max_length=8, choices=Migration.Mode.choices, default=Migration.Mode.SHALLOW)
    pivot_policy = models.CharField(max_length=8, choices=PivotPolicy.choices, default=PivotPolicy.EACH)
    # Pivots wait for [window_start, window_end) when set (stored in UTC); copies run any time.
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)
    state = models.CharField(max_length=16, choices=PlanState.choices, default=PlanState.DRAFT, db_index=True)
    # What preflight found when the plan was built.
    bytes_total = models.BigIntegerField(default=0)
    free_at_target = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    # The last sign of life of the process requesting the plan's migrations (plan_approve,
    # plan_continue): set as it starts and before each domain. An approved plan quiet for
    # longer than blockmig.plans.recovery.CONTINUE_AFTER lost that process.
    requested_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    # Attached by blockmig.plans.selectors.plan_for_page for the plan page (not columns).
    totals: Any
    item_list: list[PlanDisk]
    timeline: list[AuditEvent]

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("approve_plan", "Can approve an evacuation plan")]

    def __str__(self) -> str:
        return f"plan #{self.pk} ({self.state})"

    @property
    def has_window(self) -> bool:
        return self.window_start is not None


class PlanDisk(models.Model):
    """One disk of a plan: where it goes and how much to copy, or why it cannot move."""

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="items")
    domain_uuid = models.CharField(max_length=36)
    domain_name = models.CharField(max_length=255)
    target = models.CharField(max_length=32)
    source_path = models.CharField(max_length=1024, blank=True)
    destination = models.CharField(max_length=1024, blank=True)
    bytes_to_copy = models.BigIntegerField(default=0)
    # Empty for a disk that moves; else what keeps it where it is, in words to act on.
    blocked_reason = models.TextField(blank=True)
    migration = models.ForeignKey(Migration, null=True, blank=True, on_delete=models.PROTECT, related_name="plan_disks")
    # Set when the plan ran and its migration could not be requested.
    request_error = models.TextField(blank=True)

    # Attached by blockmig.plans.progress / plans.selectors for the plan page (not columns).
    status: str
    migration_row: Migration | None
    progress: Any
    phase: str

    class Meta:
        ordering = ["domain_name", "target"]
        constraints = [models.UniqueConstraint(fields=["plan", "domain_uuid", "target"], name="plandisk_unique_disk")]

    def __str__(self) -> str:
        return f"{self.domain_name}/{self.target} → {self.destination or '(stays)'}"

    @property
    def movable(self) -> bool:
        return not self.blocked_reason
