from django.db import models
from django.utils import timezone

# Copies at once per host and per destination storage root unless an admin sets otherwise
# (KubeVirt's per-node default is 2 as well).
DEFAULT_MAX_COPIES = 2
DEFAULT_ROOT_COPIES = 2


class Hypervisor(models.Model):
    name = models.SlugField(max_length=64, unique=True, help_text="Short name, e.g. rack3-kvm01.")
    uri = models.CharField(
        "libvirt URI",
        max_length=512,
        help_text="For example qemu:///system, qemu+ssh://root@host/system, qemu+tls://host/system.",
    )
    allowed_roots = models.JSONField(
        default=list,
        blank=True,
        help_text="Absolute directories where migration destinations may be created.",
    )
    enabled = models.BooleanField(default=True)
    auto_pivot = models.BooleanField(
        default=False,
        help_text="Pivot as soon as the mirror is ready, without a second person's approval.",
    )
    # Copy limits (admin-set on the policy page; blockmig.limits applies them). 0 = no limit.
    max_copies = models.PositiveIntegerField(
        default=DEFAULT_MAX_COPIES, help_text="Migrations that may copy at once on this host (0 = no limit)."
    )
    # {root: {"max_copies": int, "bandwidth_mib": int}} for roots that differ from the default
    # (DEFAULT_ROOT_COPIES at once, no shared bandwidth total).
    root_limits = models.JSONField(default=dict, blank=True)

    # Facts from the last good sync.
    hostname = models.CharField(max_length=255, blank=True)
    driver = models.CharField(max_length=32, blank=True)
    libvirt_version = models.CharField(max_length=32, blank=True)
    hypervisor_version = models.CharField(max_length=32, blank=True)
    virt_type = models.CharField(max_length=16, blank=True)
    supports_transient_job = models.BooleanField(default=False)
    supports_sync_writes = models.BooleanField(default=False)

    last_sync_attempt_at = models.DateTimeField(null=True, blank=True)
    last_sync_ok_at = models.DateTimeField(null=True, blank=True)
    last_sync_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_stale(self) -> bool:
        """True when the last sync failed or none has succeeded: data shown is last-known."""
        return bool(self.last_sync_error) or self.last_sync_ok_at is None

    @property
    def health(self) -> str:
        if not self.enabled:
            return "disabled"
        if self.last_sync_ok_at is None and not self.last_sync_error:
            return "unknown"
        return "stale" if self.is_stale else "ok"

    def root_limit(self, root: str) -> tuple[int, int]:
        """(copies at once, shared bandwidth total in MiB/s) for one allowed root; 0 = none."""
        limit = (self.root_limits or {}).get(root) or {}
        return int(limit.get("max_copies", DEFAULT_ROOT_COPIES)), int(limit.get("bandwidth_mib", 0))

    @property
    def root_limit_rows(self) -> list[tuple[str, int, int]]:
        """(root, copies at once, bandwidth total) for each allowed root, for the pages."""
        return [(root, *self.root_limit(root)) for root in self.allowed_roots or []]


class Domain(models.Model):
    hypervisor = models.ForeignKey(Hypervisor, on_delete=models.CASCADE, related_name="domains")
    uuid = models.CharField(max_length=36)
    name = models.CharField(max_length=255)
    state = models.CharField(max_length=16)
    persistent = models.BooleanField(default=True)
    autostart = models.BooleanField(default=False)
    # What the bulk stats said last time; a change means the XML must be read again.
    signature = models.CharField(max_length=64, blank=True)
    synced_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["hypervisor", "uuid"], name="domain_unique_uuid_per_host"),
        ]
        indexes = [models.Index(fields=["hypervisor", "name"])]

    def __str__(self) -> str:
        return self.name

    @property
    def is_running(self) -> bool:
        return self.state == "running"


class Disk(models.Model):
    # Not a column: the pages attach the migration moving this disk (hooks.job_owners).
    migration_id: int | None

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="disks")
    target = models.CharField(max_length=32)
    bus = models.CharField(max_length=16, blank=True)
    device = models.CharField(max_length=16, default="disk")
    type = models.CharField(max_length=16, default="file")
    format = models.CharField(max_length=16, blank=True)
    source = models.CharField(max_length=1024, blank=True)
    readonly = models.BooleanField(default=False)
    # How far the stored layers are the truth: a stopped domain's chain is read from its
    # files or storage volumes, and where neither can be read it is unknown, not standalone.
    chain_known = models.BooleanField(default=True)
    chain_note = models.CharField(max_length=1200, blank=True)

    # The block job libvirt reports on this disk, whoever started it (blockmig or plain virsh).
    job_type = models.CharField(max_length=16, blank=True)
    job_cur = models.BigIntegerField(default=0)
    job_end = models.BigIntegerField(default=0)
    job_mirror_path = models.CharField(max_length=1024, blank=True)
    job_ready = models.BooleanField(default=False)

    class Meta:
        ordering = ["target"]
        constraints = [
            models.UniqueConstraint(fields=["domain", "target"], name="disk_unique_target_per_domain"),
        ]

    def __str__(self) -> str:
        return f"{self.domain.name}/{self.target}"

    @property
    def has_job(self) -> bool:
        return bool(self.job_type)


class ChainLayer(models.Model):
    disk = models.ForeignKey(Disk, on_delete=models.CASCADE, related_name="layers")
    depth = models.PositiveIntegerField(help_text="0 is the active layer that takes the guest's writes.")
    path = models.CharField(max_length=1024, blank=True)
    format = models.CharField(max_length=16, blank=True)
    type = models.CharField(max_length=16, default="file")
    capacity = models.BigIntegerField(null=True, blank=True)
    allocation = models.BigIntegerField(null=True, blank=True)
    missing = models.BooleanField(default=False)

    class Meta:
        ordering = ["depth"]
        constraints = [
            models.UniqueConstraint(fields=["disk", "depth"], name="layer_unique_depth_per_disk"),
        ]

    def __str__(self) -> str:
        return self.path or "(missing)"

    @property
    def is_active(self) -> bool:
        return self.depth == 0
