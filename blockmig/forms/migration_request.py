"""The form for requesting a migration.

The request form refuses what it can tell without libvirt (path shape, roots, numbers,
format vs mode) as field errors, with preflight's rules and messages (each rule lives there); everything that needs the host is preflight's job in
`lifecycle.migration_request`, whose `Refused(message, field)` the view puts beside the
same field names used here (the lifecycle's keyword names).
"""

from __future__ import annotations

import posixpath
from pathlib import PurePosixPath
from typing import Any

from django import forms

from blockmig.forms.bandwidth import BANDWIDTH_ERRORS
from blockmig.forms.field_errors import as_field_error, check_destination
from blockmig.preflight.options import (
    MAX_BANDWIDTH_MIB,
    MAX_GRANULARITY,
    MIN_GRANULARITY,
    check_bandwidth,
    check_buf_size,
    check_granularity,
)


def suggested_destination(roots: list[str], source: str) -> str:
    """`<first root>/<source stem>-copy.qcow2`, e.g. /backups/snap2-copy.qcow2."""
    if not roots:
        return ""
    stem = PurePosixPath(source).stem if source else "disk"
    return posixpath.join(roots[0], f"{stem}-copy.qcow2")


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
        as_field_error(check_granularity, value)
        return value

    def clean_buf_size(self):
        value = self.cleaned_data.get("buf_size")
        as_field_error(check_buf_size, value)
        return value

    def clean_bandwidth_mib(self):
        return as_field_error(check_bandwidth, self.cleaned_data.get("bandwidth_mib"))

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
