"""The evacuation form (build a plan) and the window form (change a plan's window).

Times are typed in the user's timezone (the active one, from the browser's `tz` cookie) and
stored in UTC: Django's DateTimeField reads a naive value in the current timezone. The rules
(what may be evacuated, where to, which window) are blockmig.plans'; the form shows its
refusals beside the field they name.
"""

from __future__ import annotations

import posixpath

from django import forms
from django.utils import timezone

from blockmig.forms.storage import storage_roots
from blockmig.models import Migration, Plan

DATETIME_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]


def _when_field(label: str, help_text: str) -> forms.DateTimeField:
    return forms.DateTimeField(
        label=label,
        required=False,
        help_text=help_text,
        input_formats=DATETIME_FORMATS,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )


class WindowFields(forms.Form):
    window_start = _when_field("Pivots from", "Empty: no window, pivots happen as soon as they are allowed.")
    window_end = _when_field("Pivots until", "Optional. After it, pivots wait for a new window.")

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        zone = timezone.get_current_timezone_name()
        for name in ("window_start", "window_end"):
            self.fields[name].help_text += f" Your timezone: {zone}."


class PlanWindowForm(WindowFields):
    pass


class EvacuateForm(WindowFields):
    source_kind = forms.ChoiceField(
        label="Evacuate", choices=Plan.Source.choices, widget=forms.RadioSelect, initial=Plan.Source.ROOT
    )
    source_root = forms.CharField(
        label="Directory to empty",
        required=False,
        max_length=1024,
        help_text="Every disk whose active layer (shallow) or whole chain (full) lies in it.",
        widget=forms.TextInput(attrs={"list": "source-roots", "spellcheck": "false", "autocomplete": "off", "class": "path"}),
    )
    domain_uuids = forms.MultipleChoiceField(
        label="Domains", required=False, widget=forms.CheckboxSelectMultiple, help_text="With “Chosen domains”."
    )
    target_root = forms.ChoiceField(label="Target root", help_text="One of the host's allowed roots.")
    mode = forms.ChoiceField(
        choices=[(Migration.Mode.SHALLOW, "Shallow — copies share the backing chain"), (Migration.Mode.FULL, "Full — flattened")],
        initial=Migration.Mode.SHALLOW,
        widget=forms.RadioSelect,
    )
    pivot_policy = forms.ChoiceField(
        label="Pivots",
        choices=Plan.PivotPolicy.choices,
        initial=Plan.PivotPolicy.EACH,
        widget=forms.RadioSelect,
        help_text="Chosen now, reviewed with the plan.",
    )

    FIELD_ORDER = (
        "source_kind",
        "source_root",
        "domain_uuids",
        "target_root",
        "mode",
        "pivot_policy",
        "window_start",
        "window_end",
    )

    def __init__(self, *args, hypervisor, directories: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.hypervisor = hypervisor
        self.directories = directories
        self.roots = storage_roots(hypervisor)
        target = self.fields["target_root"]
        domains = self.fields["domain_uuids"]
        assert isinstance(target, forms.ChoiceField) and isinstance(domains, forms.ChoiceField)
        target.choices = [(r.path, f"{r.path} ({r.free_text})") for r in self.roots]
        domains.choices = [(d.uuid, f"{d.name} ({d.state})") for d in hypervisor.domains.order_by("name")]
        self.order_fields(self.FIELD_ORDER)
        self.fields["source_kind"].widget.attrs["autofocus"] = True

    def clean_source_root(self) -> str:
        value = self.cleaned_data.get("source_root", "").strip()
        return posixpath.normpath(value) if value else ""

    def build_kwargs(self) -> dict:
        data = self.cleaned_data
        return {
            "source_kind": data["source_kind"],
            "source_root": data.get("source_root", ""),
            "domain_uuids": data.get("domain_uuids") or [],
            "target_root": data["target_root"],
            "mode": data["mode"],
            "pivot_policy": data["pivot_policy"],
            "window_start": data.get("window_start"),
            "window_end": data.get("window_end"),
        }

    def add_refusal(self, message: str, field: str | None) -> None:
        self.add_error(field if field in self.fields else None, message)
