"""The copy limits form of a host's policy page: copies at once on the host, and per allowed
storage root copies at once and a bandwidth total its copies share. The rules (bounds, which
roots) are checked again by blockmig.limits.setting.hypervisor_set_limits, which decides and audits."""

from __future__ import annotations

from django import forms

from blockmig.limits.setting import MAX_COPIES_LIMIT
from blockmig.preflight.options import MAX_BANDWIDTH_MIB
from hosts.models import Hypervisor

COUNT_ERRORS = {
    "invalid": "Give a whole number of copies (0 = no limit).",
    "required": "Give a number of copies (0 = no limit).",
    "min_value": "Copies cannot be negative; use 0 for no limit.",
    "max_value": f"At most {MAX_COPIES_LIMIT} copies.",
}
TOTAL_ERRORS = {
    "invalid": "Give a whole number of MiB/s (0 = no shared total).",
    "required": "Give a bandwidth total in MiB/s (0 = no shared total).",
    "min_value": "A bandwidth total cannot be negative; use 0 for none.",
    "max_value": f"At most {MAX_BANDWIDTH_MIB} MiB/s.",
}


def _number(label: str, errors: dict, maximum: int, help_text: str = "") -> forms.IntegerField:
    return forms.IntegerField(
        label=label,
        min_value=0,
        max_value=maximum,
        error_messages=errors,
        help_text=help_text,
        widget=forms.NumberInput(attrs={"min": 0, "max": maximum, "step": 1, "inputmode": "numeric"}),
    )


class CopyLimitsForm(forms.Form):
    max_copies = _number(
        "Copies at once on this host",
        COUNT_ERRORS,
        MAX_COPIES_LIMIT,
        "Further migrations wait in the queue, in request order. 0 = no limit.",
    )

    def __init__(self, *args, hypervisor: Hypervisor, **kwargs):
        super().__init__(*args, **kwargs)
        self.hypervisor = hypervisor
        self.roots = list(hypervisor.allowed_roots or [])
        if not self.is_bound:
            self.initial["max_copies"] = hypervisor.max_copies
        for index, root in enumerate(self.roots):
            copies, total = hypervisor.root_limit(root)
            self.fields[f"root_{index}_copies"] = _number(f"Copies at once into {root}", COUNT_ERRORS, MAX_COPIES_LIMIT)
            self.fields[f"root_{index}_bandwidth"] = _number(
                f"Bandwidth total of {root} (MiB/s)",
                TOTAL_ERRORS,
                MAX_BANDWIDTH_MIB,
                "Shared among the copies running into it; each gets at most its own limit. 0 = none.",
            )
            for name in (f"root_{index}_copies", f"root_{index}_bandwidth"):
                # The table shows the root once per row; each input still says what it is.
                self.fields[name].widget.attrs["aria-label"] = self.fields[name].label
            if not self.is_bound:
                self.initial[f"root_{index}_copies"] = copies
                self.initial[f"root_{index}_bandwidth"] = total

    def root_rows(self) -> list[tuple[str, forms.BoundField, forms.BoundField]]:
        return [(root, self[f"root_{i}_copies"], self[f"root_{i}_bandwidth"]) for i, root in enumerate(self.roots)]

    def limits(self) -> tuple[int, dict[str, tuple[int, int]]]:
        """(copies on the host, {root: (copies, bandwidth total)}) from a valid form."""
        data = self.cleaned_data
        roots = {root: (data[f"root_{i}_copies"], data[f"root_{i}_bandwidth"]) for i, root in enumerate(self.roots)}
        return data["max_copies"], roots
