"""The profile page (/profile/): who you are, your roles, and your personal API tokens —
create one (its secret is shown on that one page only), see when each was last used, revoke."""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from blockmig.api.auth import signed_in_user
from blockmig.api.models import ApiToken
from blockmig.api.tokens import MAX_NAME, token_create, token_revoke
from blockmig.errors import Refused
from hosts.roles import user_roles

EXPIRY_CHOICES = [("", "Never"), ("7", "In 7 days"), ("30", "In 30 days"), ("90", "In 90 days"), ("365", "In a year")]


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=MAX_NAME,
        help_text="What the token is for, so you know which to revoke (e.g. “nightly job”, “laptop CLI”).",
        error_messages={"required": "Give the token a name that says what it is for (e.g. “nightly job”)."},
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    expires_in_days = forms.TypedChoiceField(
        label="Expires", choices=EXPIRY_CHOICES, coerce=int, empty_value=None, required=False
    )


def profile(request: HttpRequest) -> HttpResponse:
    form = TokenForm(request.POST or None, label_suffix="")
    created = None
    if request.method == "POST" and form.is_valid():
        days = form.cleaned_data["expires_in_days"]
        try:
            token, plain = token_create(
                user=request.user,
                name=form.cleaned_data["name"],
                expires_at=timezone.now() + timedelta(days=days) if days else None,
            )
        except Refused as refused:
            form.add_error(refused.field if refused.field in form.fields else None, refused.message)
        else:
            created = {"token": token, "plain": plain}
            form = TokenForm(label_suffix="")
    context = {
        "form": form,
        "created": created,
        "tokens": ApiToken.objects.filter(user=signed_in_user(request)),
        "roles": user_roles(request.user),
        "now": timezone.now(),
    }
    response = render(request, "blockmig/profile.html", context)
    # The page with a new token's secret must not stay in a cache or the history.
    response["Cache-Control"] = "no-store"
    return response


@require_POST
def profile_token_revoke(request: HttpRequest, prefix: str) -> HttpResponse:
    token = get_object_or_404(ApiToken, user=request.user, prefix=prefix)
    token_revoke(token=token, user=request.user)
    messages.success(request, f"Token “{token.name}” revoked: requests with it are refused from now on.")
    return redirect("profile")
