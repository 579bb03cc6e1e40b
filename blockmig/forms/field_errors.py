"""Preflight's rules shown as form field errors: each rule lives in blockmig.preflight (the
one place), and a form runs it here so its refusal reads the same beside the field.
Shared by the request and bandwidth forms.
"""

from __future__ import annotations

from django import forms

from blockmig.errors import Refused
from blockmig.preflight.shape import check_destination_shape


def check_destination(path: str, roots: list[str], source: str = "") -> str:
    """Return the normalised destination, or raise ValidationError with preflight's message."""
    return as_field_error(check_destination_shape, path, roots, source)


def as_field_error(rule, *args):
    """Run one of preflight's rules (the one place each lives) and show its refusal as a
    field error."""
    try:
        return rule(*args)
    except Refused as refused:
        raise forms.ValidationError(refused.message, code=refused.field or "invalid") from None
