"""A host's pivot policy (auto-pivot), as its policy page edits it."""

from __future__ import annotations

from django import forms


class AutoPivotForm(forms.Form):
    auto_pivot = forms.BooleanField(
        label="Pivot automatically when the mirror is ready",
        required=False,
        help_text="Skips the second person's approval on this host. Every change is audited.",
    )
