from __future__ import annotations

from urllib.parse import urlsplit

from django import forms

from blockmig.notify.models import Delivery, Event, WebhookEndpoint


class WebhookEndpointForm(forms.Form):
    name = forms.SlugField(max_length=64, help_text="A short name: letters, digits, - and _.")
    url = forms.URLField(
        label="URL",
        max_length=1024,
        assume_scheme="https",
        help_text="Receives a signed JSON POST per notification (docs/operations.md shows how to check the signature).",
    )
    secret = forms.CharField(
        max_length=128,
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Signs each body (HMAC-SHA256). Leave empty to generate one (or, when editing, to keep the current one).",
    )
    enabled = forms.BooleanField(required=False, initial=True, help_text="A disabled endpoint receives nothing.")
    events = forms.MultipleChoiceField(
        choices=Event.choices,
        widget=forms.CheckboxSelectMultiple,
        initial=list(Event.values),
        help_text="Which notifications this endpoint receives.",
    )

    def __init__(self, *args, endpoint: WebhookEndpoint | None = None, **kwargs):
        self.endpoint = endpoint
        super().__init__(*args, **kwargs)

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        if urlsplit(url).scheme not in ("http", "https"):
            raise forms.ValidationError("Use an http:// or https:// address.")
        return url

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        others = WebhookEndpoint.objects.filter(name=name)
        if self.endpoint is not None:
            others = others.exclude(pk=self.endpoint.pk)
        if others.exists():
            raise forms.ValidationError(f"An endpoint named {name} exists already: pick another name.")
        return name

    def clean_secret(self) -> str:
        secret = self.cleaned_data["secret"]
        if secret and len(secret) < 16:
            raise forms.ValidationError("Use at least 16 characters, or leave it empty to generate one.")
        return secret


class DeliveryFilterForm(forms.Form):
    status = forms.ChoiceField(choices=[("", "Any status"), *Delivery.Status.choices], required=False)
    channel = forms.ChoiceField(choices=[("", "Any channel"), *Delivery.Channel.choices], required=False)
