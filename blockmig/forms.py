"""Forms for requesting a migration, changing its bandwidth, the host policy, and
filtering the audit trail.

The request form refuses what it can tell without libvirt (path shape, roots, numbers,
format vs mode) as field errors, with preflight's rules and messages (each rule lives there); everything that needs the host is preflight's job in
`lifecycle.migration_request`, whose `Refused(message, field)` the view puts beside the
same field names used here (the lifecycle's keyword names).
"""

from __future__ import annotations

import posixpath
import shutil
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from django import forms

from blockmig.audit import event_label
from blockmig.errors import Refused
from blockmig.preflight.options import (
    MAX_BANDWIDTH_MIB,
    MAX_GRANULARITY,
    MIN_GRANULARITY,
    check_bandwidth,
    check_buf_size,
    check_granularity,
)
from blockmig.preflight.shape import check_destination_shape
from blockmig.progress import format_bytes
from blockmig.states import State
from hosts.adapter import ConnectFailure, LibvirtFailure, open_block_jobs
from hosts.records import BlockPool

LOCAL_URI = "qemu:///system"

BANDWIDTH_ERRORS = {
    "invalid": "Bandwidth must be a whole number of MiB/s (0 = unlimited).",
    "required": "Give a bandwidth limit in MiB/s (0 = unlimited).",
}


@dataclass(frozen=True)
class Root:
    """An allowed storage root of a hypervisor and, where it can be told, its free space."""

    path: str
    free: int | None
    why_unknown: str = ""

    @property
    def free_text(self) -> str:
        if self.free is None:
            return f"free space unknown{f' ({self.why_unknown})' if self.why_unknown else ''}"
        return f"{format_bytes(self.free)} free"


def storage_roots(hypervisor) -> list[Root]:
    """The hypervisor's allowed roots. Free space only for the local system QEMU, whose
    files are this machine's files; a remote host's disks are not ours to stat."""
    roots = []
    for path in hypervisor.allowed_roots or []:
        if hypervisor.uri != LOCAL_URI:
            roots.append(Root(path, None, "remote host"))
            continue
        try:
            roots.append(Root(path, shutil.disk_usage(path).free))
        except OSError:
            roots.append(Root(path, None, "directory not found"))
    return roots


@dataclass(frozen=True)
class OfferedPool:
    """A libvirt pool of block devices (a volume group for `logical`), as the form offers it:
    its volumes are destinations only where its directory is an allowed root."""

    pool: BlockPool
    allowed: bool

    @property
    def free_text(self) -> str:
        return f"{format_bytes(self.pool.available)} free of {format_bytes(self.pool.capacity)}"


BLOCK_STORAGE_TIMEOUT = 3.0  # seconds the request page waits for the host's pools


def block_storage(hypervisor) -> tuple[list[OfferedPool], str]:
    """The host's block-device pools for the request form, and why none could be read ("")
    when the host did not answer. Pools outside the allowed roots are listed, marked."""
    if not hypervisor.enabled:
        return [], ""
    try:
        with open_block_jobs(hypervisor.uri, BLOCK_STORAGE_TIMEOUT) as host:
            pools = host.block_pools()
    except (ConnectFailure, LibvirtFailure) as problem:
        return [], str(problem)
    roots = [posixpath.normpath(r) for r in hypervisor.allowed_roots or []]
    return [OfferedPool(pool, posixpath.normpath(pool.target) in roots) for pool in pools], ""


def suggested_destination(roots: list[str], source: str) -> str:
    """`<first root>/<source stem>-copy.qcow2`, e.g. /backups/snap2-copy.qcow2."""
    if not roots:
        return ""
    stem = PurePosixPath(source).stem if source else "disk"
    return posixpath.join(roots[0], f"{stem}-copy.qcow2")


def check_destination(path: str, roots: list[str], source: str = "") -> str:
    """Return the normalised destination, or raise ValidationError with preflight's message."""
    return _as_field_error(check_destination_shape, path, roots, source)


def _as_field_error(rule, *args):
    """Run one of preflight's rules (the one place each lives) and show its refusal as a
    field error."""
    try:
        return rule(*args)
    except Refused as refused:
        raise forms.ValidationError(refused.message, code=refused.field or "invalid") from None


class MigrationRequestForm(forms.Form):
    """One form for one disk (`destination`) or several disks of a domain
    (`migrate_<target>` + `destination_<target>` per disk), with the shared options."""

    mode = forms.ChoiceField(
        choices=[("shallow", "Shallow — the copy shares the backing chain"), ("full", "Full — the copy is flattened")],
        initial="shallow",
        widget=forms.RadioSelect,
        help_text="Shallow copies only the active layer, as the manual procedure did.",
    )
    dest_format = forms.ChoiceField(
        label="Destination format",
        choices=[("qcow2", "qcow2"), ("raw", "raw")],
        initial="qcow2",
        help_text="A shallow copy needs qcow2: only qcow2 can point at a backing chain.",
    )
    reuse_destination = forms.BooleanField(
        label="Reuse an existing destination",
        required=False,
        help_text="The file is already there (pre-created, libvirt's REUSE_EXT). Otherwise blockmig creates it.",
    )
    bandwidth_mib = forms.IntegerField(
        label="Bandwidth limit (MiB/s)",
        initial=0,
        error_messages=BANDWIDTH_ERRORS,
        help_text="0 = unlimited. You can change it while the copy runs.",
        widget=forms.NumberInput(attrs={"min": 0, "max": MAX_BANDWIDTH_MIB, "step": 1, "inputmode": "numeric"}),
    )
    synchronous_writes = forms.BooleanField(
        label="Synchronous writes (active mirroring)",
        required=False,
        help_text="Guest writes go to both copies at once, so a busy guest still converges; its writes get slower.",
    )
    granularity = forms.IntegerField(
        label="Granularity (bytes)",
        required=False,
        help_text="Power of two from 512 B to 64 MiB. Empty: QEMU's default (the cluster size).",
        error_messages={"invalid": "Granularity must be a whole number of bytes."},
        widget=forms.NumberInput(attrs={"min": MIN_GRANULARITY, "max": MAX_GRANULARITY, "step": 512}),
    )
    buf_size = forms.IntegerField(
        label="Buffer size (bytes)",
        required=False,
        help_text="How much QEMU copies in flight. Empty: QEMU's default.",
        error_messages={"invalid": "Buffer size must be a whole number of bytes."},
        widget=forms.NumberInput(attrs={"min": 1}),
    )

    OPTION_FIELDS = ("mode", "dest_format", "reuse_destination", "bandwidth_mib", "synchronous_writes", "granularity", "buf_size")
    ADVANCED_FIELDS = ("granularity", "buf_size")

    def __init__(self, *args, hypervisor, disks, single: bool, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        self.hypervisor = hypervisor
        self.disks = list(disks)
        self.single = single
        self.roots = list(hypervisor.allowed_roots or [])
        if not hypervisor.supports_sync_writes:
            del self.fields["synchronous_writes"]

        dest_fields: dict[str, forms.Field] = {}
        for disk in self.disks:
            name = self.destination_field(disk.target)
            if not single:
                dest_fields[self.choose_field(disk.target)] = forms.BooleanField(
                    label=f"Migrate {disk.target}", required=False, initial=len(self.disks) == 1
                )
            dest_fields[name] = forms.CharField(
                label="Destination" if single else f"Destination for {disk.target}",
                required=single,
                max_length=1024,
                initial=suggested_destination(self.roots, disk.source),
                help_text=(
                    "Absolute path inside one of the allowed roots listed above: a file, or a block device such as "
                    "/dev/<vg>/<lv>; or an NBD export, nbd://host:port/export. Devices and exports take a raw, full "
                    "copy with “reuse”, and must be exactly the disk's virtual size."
                ),
                error_messages={"required": "Give the destination file's path."},
                widget=forms.TextInput(
                    attrs={"list": "allowed-roots", "spellcheck": "false", "autocomplete": "off", "class": "path"}
                ),
            )
        # Destinations first: they are what the person came to type.
        self.fields = {**dest_fields, **self.fields}
        first = next(iter(dest_fields))
        self.fields[first].widget.attrs["autofocus"] = True

    def destination_field(self, target: str) -> str:
        return "destination" if self.single else f"destination_{target}"

    @staticmethod
    def choose_field(target: str) -> str:
        return f"migrate_{target}"

    def disk_rows(self):
        """(disk, choose bound field or None, destination bound field) for the template."""
        for disk in self.disks:
            choose = None if self.single else self[self.choose_field(disk.target)]
            yield disk, choose, self[self.destination_field(disk.target)]

    def option_fields(self):
        return [self[n] for n in self.OPTION_FIELDS if n in self.fields and n not in self.ADVANCED_FIELDS]

    def advanced_fields(self):
        return [self[n] for n in self.ADVANCED_FIELDS]

    def chosen_disks(self):
        if self.single:
            return self.disks
        return [d for d in self.disks if self.cleaned_data.get(self.choose_field(d.target))]

    def clean_granularity(self):
        value = self.cleaned_data.get("granularity")
        _as_field_error(check_granularity, value)
        return value

    def clean_buf_size(self):
        value = self.cleaned_data.get("buf_size")
        _as_field_error(check_buf_size, value)
        return value

    def clean_bandwidth_mib(self):
        return _as_field_error(check_bandwidth, self.cleaned_data.get("bandwidth_mib"))

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        if cleaned.get("mode") == "shallow" and cleaned.get("dest_format") == "raw":
            self.add_error(
                "dest_format",
                forms.ValidationError(
                    "A shallow copy must be qcow2: raw cannot point at the backing chain. Choose qcow2, or a full copy.",
                    code="shallow_needs_qcow2",
                ),
            )
        chosen = self.chosen_disks()
        if not chosen:
            raise forms.ValidationError("Choose at least one disk to migrate.", code="no_disk")
        seen: dict[str, str] = {}
        for disk in chosen:
            name = self.destination_field(disk.target)
            raw = cleaned.get(name)
            if name in self.errors:
                continue
            if not raw:
                self.add_error(name, forms.ValidationError("Give the destination file's path.", code="required"))
                continue
            try:
                path = check_destination(raw, self.roots, disk.source)
            except forms.ValidationError as error:
                self.add_error(name, error)
                continue
            if path in seen:
                self.add_error(
                    name,
                    forms.ValidationError(f"{seen[path]} already goes to {path}; give each disk its own file.", code="duplicate"),
                )
                continue
            seen[path] = disk.target
            cleaned[name] = path
        return cleaned

    def lifecycle_kwargs(self) -> dict:
        """The options as `lifecycle.migration_request` takes them (disks excluded)."""
        data = self.cleaned_data
        return {
            "mode": data["mode"],
            "dest_format": data["dest_format"],
            "reuse_destination": data["reuse_destination"],
            "bandwidth_mib": data["bandwidth_mib"],
            "synchronous_writes": data.get("synchronous_writes", False),
            "granularity": data["granularity"],
            "buf_size": data["buf_size"],
        }

    def destinations(self) -> list[tuple[str, str]]:
        """(target, destination) for each chosen disk."""
        return [(d.target, self.cleaned_data[self.destination_field(d.target)]) for d in self.chosen_disks()]

    def focus_first_error(self) -> None:
        """After a refusal, the cursor starts in the first field to fix (keyboard users)."""
        wrong = [name for name in self.fields if name in self.errors]
        if not wrong:
            return
        for field in self.fields.values():
            field.widget.attrs.pop("autofocus", None)
        self.fields[wrong[0]].widget.attrs["autofocus"] = True

    def add_refusal(self, message: str, field: str | None) -> None:
        """Put a lifecycle refusal beside the field it names, or above the form."""
        if field == "destination" and not self.single and len(self.chosen_disks()) == 1:
            field = self.destination_field(self.chosen_disks()[0].target)
        if field == "disk" or field == "target":
            field = None
        self.add_error(field if field in self.fields else None, message)


class BandwidthForm(forms.Form):
    bandwidth_mib = forms.IntegerField(
        label="Bandwidth limit (MiB/s)",
        error_messages=BANDWIDTH_ERRORS,
        help_text="0 = unlimited.",
        widget=forms.NumberInput(attrs={"min": 0, "max": MAX_BANDWIDTH_MIB, "step": 1, "inputmode": "numeric"}),
    )

    def clean_bandwidth_mib(self):
        return _as_field_error(check_bandwidth, self.cleaned_data.get("bandwidth_mib"))


class AutoPivotForm(forms.Form):
    auto_pivot = forms.BooleanField(
        label="Pivot automatically when the mirror is ready",
        required=False,
        help_text="Skips the second person's approval on this host. Every change is audited.",
    )


SYSTEM_ACTOR = "-"


class AuditFilterForm(forms.Form):
    """Filters for the audit trail. Times are read in the user's zone (the active one)."""

    # Selects whose values are not checked against the list: a link to a host or user
    # with no events yet narrows to nothing instead of failing.
    host = forms.CharField(required=False, label="Host", widget=forms.Select)
    domain = forms.CharField(required=False, label="Domain", help_text="Part of the name.")
    user = forms.CharField(required=False, label="User", widget=forms.Select)
    state = forms.ChoiceField(required=False, label="To state", choices=[("", "any")] + [(s.value, s.label) for s in State])
    event_type = forms.CharField(required=False, label="Event", widget=forms.Select)
    migration = forms.IntegerField(required=False, min_value=1, label="Migration #")
    since = forms.DateTimeField(
        required=False,
        label="From",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"],
    )
    until = forms.DateTimeField(
        required=False,
        label="To",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"],
    )

    def __init__(self, *args, hosts=(), users=(), event_types=(), **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        hosts, users, event_types = (self._with_asked(name, values) for name, values in
                                     (("host", hosts), ("user", users), ("event_type", event_types)))  # fmt: skip
        self.fields["host"].widget.choices = [("", "any")] + [(h, h) for h in hosts]
        self.fields["user"].widget.choices = (
            [("", "anyone")] + [(u, u) for u in users if u != SYSTEM_ACTOR] + [(SYSTEM_ACTOR, "(system — no user)")]
        )
        self.fields["event_type"].widget.choices = [("", "any")] + [
            (t, event_label(t)) for t in sorted(event_types, key=event_label)
        ]

    def _with_asked(self, name: str, values) -> list[str]:
        """The offered values plus the one asked for, so the select shows what filters the
        list even for a host or user that is gone."""
        values = list(values)
        asked = self.data.get(name, "") if self.is_bound else ""
        if asked and asked not in values:
            values.append(asked)
        return values

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since > until:
            self.add_error("until", "“To” is before “From”.")
        return cleaned

    def filters(self) -> dict:
        """The valid, non-empty filters as `selectors.audit_events` takes them (an invalid
        one is reported beside its field and left out)."""
        self.is_valid()
        return {k: v for k, v in self.cleaned_data.items() if v not in (None, "")}
