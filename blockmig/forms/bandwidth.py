"""The bandwidth limit of a running migration (the migration page's form), and the words for
a bandwidth that is not a number, which the request form shows too.
"""

from __future__ import annotations

from django import forms

from blockmig.forms.field_errors import as_field_error
from blockmig.preflight.options import (
    MAX_BANDWIDTH_MIB,
    check_bandwidth,
)

BANDWIDTH_ERRORS = {
    "invalid": "Bandwidth must be a whole number of MiB/s (0 = unlimited).",
    "required": "Give a bandwidth limit in MiB/s (0 = unlimited).",
}


class BandwidthForm(forms.Form):
    bandwidth_mib = forms.IntegerField(
        label="Bandwidth limit (MiB/s)",
        error_messages=BANDWIDTH_ERRORS,
        help_text="0 = unlimited.",
        widget=forms.NumberInput(attrs={"min": 0, "max": MAX_BANDWIDTH_MIB, "step": 1, "inputmode": "numeric"}),
    )

    def clean_bandwidth_mib(self):
        return as_field_error(check_bandwidth, self.cleaned_data.get("bandwidth_mib"))
