"""What the API returns, and the shapes it documents for what it takes.

Input is validated by the console's own rules (blockmig.forms, blockmig.preflight) in the
views, so a refusal reads the same everywhere; the request serializers here give the schema
its shapes and catch only what the form cannot see (a list that is not a list).
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from blockmig import progress as progress_words
from blockmig.api.models import ApiToken
from blockmig.audit import event_label
from blockmig.models import AuditEvent, Migration, MigrationDisk
from blockmig.states import State
from blockmig.views.actions import available_actions
from hosts.models import ChainLayer, Disk, Domain, Hypervisor


def chain_text(paths: list[str]) -> str:
    """base ← … ← active, the way the manual procedure writes a chain."""
    return " ← ".join(reversed([p or "(missing)" for p in paths]))


# ---- inventory ------------------------------------------------------------------------


class HypervisorSerializer(serializers.ModelSerializer):
    health = serializers.CharField(read_only=True, help_text="ok, stale, unknown or disabled")
    domain_count = serializers.IntegerField(read_only=True)
    running_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Hypervisor
        fields = [
            "name", "uri", "enabled", "health", "auto_pivot", "allowed_roots", "hostname", "driver",
            "libvirt_version", "hypervisor_version", "virt_type", "supports_transient_job", "supports_sync_writes",
            "last_sync_attempt_at", "last_sync_ok_at", "last_sync_error", "domain_count", "running_count",
        ]  # fmt: skip
        read_only_fields = fields


class ChainLayerSerializer(serializers.ModelSerializer):
    class Meta:
        model = ChainLayer
        fields = ["depth", "path", "format", "type", "capacity", "allocation", "missing"]
        read_only_fields = fields


class BlockJobSerializer(serializers.Serializer):
    type = serializers.CharField()
    cur = serializers.IntegerField()
    end = serializers.IntegerField()
    mirror_path = serializers.CharField()
    ready = serializers.BooleanField()


class DiskSerializer(serializers.ModelSerializer):
    chain = ChainLayerSerializer(source="layers", many=True, read_only=True, help_text="Active layer first (depth 0).")
    chain_text = serializers.SerializerMethodField(help_text="base ← … ← active")
    job = serializers.SerializerMethodField()

    class Meta:
        model = Disk
        fields = ["target", "bus", "device", "type", "format", "source", "readonly", "job", "chain", "chain_text"]
        read_only_fields = fields

    def get_chain_text(self, disk: Disk) -> str:
        return chain_text([layer.path for layer in disk.layers.all()])

    @extend_schema_field(BlockJobSerializer(allow_null=True))
    def get_job(self, disk: Disk) -> dict | None:
        if not disk.job_type:
            return None
        return {
            "type": disk.job_type,
            "cur": disk.job_cur,
            "end": disk.job_end,
            "mirror_path": disk.job_mirror_path,
            "ready": disk.job_ready,
        }


class DomainSerializer(serializers.ModelSerializer):
    hypervisor = serializers.CharField(source="hypervisor.name", read_only=True)
    disk_count = serializers.IntegerField(read_only=True)
    job_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Domain
        fields = ["uuid", "name", "hypervisor", "state", "persistent", "autostart", "synced_at", "disk_count", "job_count"]
        read_only_fields = fields


class DomainDetailSerializer(serializers.ModelSerializer):
    hypervisor = serializers.CharField(source="hypervisor.name", read_only=True)
    disks = DiskSerializer(many=True, read_only=True)

    class Meta:
        model = Domain
        fields = ["uuid", "name", "hypervisor", "state", "persistent", "autostart", "synced_at", "disks"]
        read_only_fields = fields


# ---- migrations -----------------------------------------------------------------------


class ProgressSerializer(serializers.Serializer):
    bytes_done = serializers.IntegerField()
    bytes_total = serializers.IntegerField(help_text="0 while libvirt has not said (the job has not started).")
    percent = serializers.FloatField(allow_null=True)
    rate_bps = serializers.FloatField()
    eta_seconds = serializers.FloatField(allow_null=True)
    text = serializers.CharField(help_text="The page's words: done of total, rate, ETA.")


def progress_of(p: progress_words.Progress) -> dict:
    return {
        "bytes_done": p.done,
        "bytes_total": p.total,
        "percent": p.percent,
        "rate_bps": p.rate_bps,
        "eta_seconds": p.eta,
        "text": f"{p.done_text} of {p.total_text}, {p.percent_text}, {p.rate_text}, {p.eta_text}",
    }


class MigrationDiskSerializer(serializers.ModelSerializer):
    source_chain_text = serializers.SerializerMethodField(help_text="The chain before the copy: base ← … ← active")

    class Meta:
        model = MigrationDisk
        fields = ["target", "source_path", "source_chain", "source_chain_text", "destination", "cur", "end", "ready"]
        read_only_fields = fields

    def get_source_chain_text(self, disk: MigrationDisk) -> str:
        return chain_text(list(disk.source_chain or []))


class ActionsSerializer(serializers.Serializer):
    approve = serializers.BooleanField()
    abort = serializers.BooleanField()
    bandwidth = serializers.BooleanField()
    approve_note = serializers.CharField()


class QueueSerializer(serializers.Serializer):
    position = serializers.IntegerField(help_text="1 = the next copy to start on this host.")
    reason = serializers.CharField(help_text="Which limit holds it back and what it waits for, as the page says it.")
    waits_for = serializers.ListField(child=serializers.IntegerField(), help_text="The migrations whose end frees its slot.")


class MigrationSerializer(serializers.ModelSerializer):
    """`state` takes the values of blockmig.states.State (new states appear there first)."""

    state = serializers.ChoiceField(choices=State.choices, read_only=True)
    hypervisor = serializers.CharField(source="hypervisor.name", read_only=True)
    requested_by = serializers.CharField(source="requested_by.username", read_only=True)
    approved_by = serializers.CharField(source="approved_by.username", read_only=True, allow_null=True, default=None)
    phase = serializers.CharField(read_only=True, help_text="The page's words for the state.")
    progress = serializers.SerializerMethodField()
    disks = MigrationDiskSerializer(many=True, read_only=True)
    actions = serializers.SerializerMethodField(help_text="What the calling user may do now.")
    queue = serializers.SerializerMethodField(help_text="A queued migration's place and reason; null otherwise.")

    class Meta:
        model = Migration
        fields = [
            "id", "hypervisor", "domain_uuid", "domain_name", "state", "phase", "mode", "dest_format",
            "reuse_destination", "bandwidth_mib", "synchronous_writes", "granularity", "buf_size",
            "requested_by", "approved_by", "failure_reason", "progress", "disks", "actions", "queue",
            "created_at", "ready_at", "finished_at",
        ]  # fmt: skip
        read_only_fields = fields

    @extend_schema_field(ProgressSerializer)
    def get_progress(self, migration: Migration) -> dict:
        return progress_of(migration.progress)

    @extend_schema_field(QueueSerializer(allow_null=True))
    def get_queue(self, migration: Migration) -> dict | None:
        # Attached by selectors.with_progress, from the limits' own rule (blockmig.limits.rules).
        wait = getattr(migration, "wait", None)
        if wait is None:
            return None
        return {"position": wait.position, "reason": wait.reason, "waits_for": list(wait.behind)}

    @extend_schema_field(ActionsSerializer)
    def get_actions(self, migration: Migration) -> dict:
        # The page's own rule for its buttons.
        actions = available_actions(migration, self.context["request"].user)
        return {
            "approve": actions.approve,
            "abort": actions.abort,
            "bandwidth": actions.bandwidth,
            "approve_note": actions.approve_note,
        }


class AuditEventSerializer(serializers.ModelSerializer):
    # A declared field named like Field.label: DRF's metaclass takes it out of the class
    # attributes, so the serializer's own label is untouched.
    label = serializers.SerializerMethodField()  # type: ignore[assignment]
    actor = serializers.SerializerMethodField(help_text="The user's name, or “blockmig” for the engine.")
    system = serializers.SerializerMethodField(help_text="True for the engine's own steps.")
    hypervisor = serializers.CharField(source="hypervisor_name", read_only=True)
    domain = serializers.CharField(source="domain_name", read_only=True)
    disks = serializers.CharField(source="disk_targets", read_only=True)
    migration = serializers.IntegerField(source="migration_id", read_only=True, allow_null=True)
    details = serializers.JSONField(read_only=True)

    class Meta:
        model = AuditEvent
        fields = [
            "id", "created_at", "event_type", "label", "actor", "system", "via", "hypervisor", "domain", "disks",
            "migration", "from_state", "to_state", "details",
        ]  # fmt: skip
        read_only_fields = fields

    def get_label(self, event: AuditEvent) -> str:
        return event_label(event.event_type)

    def get_actor(self, event: AuditEvent) -> str:
        return event.actor_name or ""

    def get_system(self, event: AuditEvent) -> bool:
        return event.actor_id is None


class MigrationDetailSerializer(MigrationSerializer):
    events = AuditEventSerializer(many=True, read_only=True, help_text="The timeline, oldest first.")

    class Meta(MigrationSerializer.Meta):
        fields = [*MigrationSerializer.Meta.fields, "events"]
        read_only_fields = fields


# ---- what the API takes -----------------------------------------------------------------


class DiskRequestSerializer(serializers.Serializer):
    target = serializers.CharField(help_text="The disk's target, e.g. vda.")
    destination = serializers.CharField(help_text="Absolute path inside one of the host's allowed roots.")


class MigrationRequestSerializer(serializers.Serializer):
    """The request form's fields. Defaults as on the form: shallow, qcow2, unlimited."""

    hypervisor = serializers.CharField(help_text="The hypervisor's name.")
    domain = serializers.CharField(help_text="The domain's UUID or name.")
    disks = DiskRequestSerializer(many=True)
    mode = serializers.ChoiceField(choices=Migration.Mode.choices, default="shallow")
    dest_format = serializers.ChoiceField(choices=[("qcow2", "qcow2"), ("raw", "raw")], default="qcow2")
    reuse_destination = serializers.BooleanField(default=False)
    bandwidth_mib = serializers.IntegerField(default=0, help_text="MiB/s, 0 = unlimited.")
    synchronous_writes = serializers.BooleanField(default=False)
    granularity = serializers.IntegerField(required=False, allow_null=True)
    buf_size = serializers.IntegerField(required=False, allow_null=True)


class BandwidthSerializer(serializers.Serializer):
    bandwidth_mib = serializers.IntegerField(help_text="MiB/s, 0 = unlimited.")


class TokenSerializer(serializers.ModelSerializer):
    status = serializers.SerializerMethodField()

    class Meta:
        model = ApiToken
        fields = ["name", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at", "status"]
        read_only_fields = fields

    def get_status(self, token: ApiToken) -> str:
        return "revoked" if token.revoked_at else "expired" if token.is_expired else "active"


class TokenCreateSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"})
    name = serializers.CharField(max_length=64)
    expires_in_days = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=3650)


class TokenCreatedSerializer(TokenSerializer):
    token = serializers.CharField(help_text="The token itself: shown this once, store it now.")

    class Meta(TokenSerializer.Meta):
        fields = [*TokenSerializer.Meta.fields, "token"]
        read_only_fields = fields


class MeSerializer(serializers.Serializer):
    username = serializers.CharField()
    roles = serializers.ListField(child=serializers.CharField())
    via = serializers.CharField(help_text="How this request was authenticated.")


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    # Named like Serializer.fields; as above, the metaclass keeps it apart from that property.
    fields = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))  # type: ignore[assignment]


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()
