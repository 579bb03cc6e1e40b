"""Filters for the audit trail, shared by the page, its export and the API."""

from __future__ import annotations

from typing import Any

from django import forms

from blockmig.audit import event_label
from blockmig.selectors import SYSTEM_ACTOR
from blockmig.states import State


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
