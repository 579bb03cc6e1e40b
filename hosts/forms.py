"""The hypervisor form: checks the URI and the storage roots, then proves the host answers
before anything is saved."""

import posixpath
from dataclasses import asdict

from django import forms
from django.conf import settings

from hosts.adapter import ConnectFailure, HostConnection
from hosts.models import Hypervisor
from hosts.records import HostFacts
from hosts.uris import uri_problem

# Path segments of /hosts/… that are pages, not hypervisor names.
RESERVED_NAMES = {"add"}


def parse_roots(text: str) -> list[str]:
    """One absolute directory per line → normalised, de-duplicated list. Raises ValidationError."""
    roots: list[str] = []
    problems: list[str] = []
    for line in text.splitlines():
        path = line.strip()
        if not path:
            continue
        if not path.startswith("/"):
            problems.append(f"“{path}” is not absolute: start it with /.")
        elif ".." in path.split("/"):
            problems.append(f"“{path}” contains “..”: name the directory itself.")
        else:
            normal = posixpath.normpath(path)
            if normal.startswith("//"):
                normal = "/" + normal.lstrip("/")
            if normal == "/":
                problems.append("“/” would allow destinations anywhere on the host: name a storage directory.")
            elif normal not in roots:
                roots.append(normal)
    if problems:
        raise forms.ValidationError(problems)
    return roots


class HypervisorForm(forms.ModelForm):
    allowed_roots = forms.CharField(
        label="Allowed storage roots",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false", "placeholder": "/var/lib/libvirt/images\n/srv/backups"}),
        help_text="One absolute directory per line. Migration destinations must lie inside one of them.",
    )

    class Meta:
        model = Hypervisor
        fields = ["name", "uri", "allowed_roots", "enabled", "auto_pivot"]
        widgets = {
            "name": forms.TextInput(attrs={"autofocus": True, "autocomplete": "off", "spellcheck": "false"}),
            "uri": forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false", "placeholder": "qemu+ssh://root@kvm01/system"}),
        }
        help_texts = {
            "enabled": "Disabled hosts are not synced and cannot be migrated on; their last-known data stays visible.",
        }

    def __init__(self, *args, user=None, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        self.facts: HostFacts | None = None
        if self.instance.pk:
            self.initial["allowed_roots"] = "\n".join(self.instance.allowed_roots or [])
        # Auto-pivot skips the second person's approval: an admin-only policy.
        if user is None or not user.has_perm("hosts.change_hypervisor"):
            del self.fields["auto_pivot"]

    def full_clean(self) -> None:
        super().full_clean()
        # Put the cursor where the first problem is, not back on the name.
        if self.errors:
            first = next((name for name in self.fields if name in self.errors), None)
            if first:
                self.fields["name"].widget.attrs.pop("autofocus", None)
                self.fields[first].widget.attrs["autofocus"] = True

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if name in RESERVED_NAMES:
            raise forms.ValidationError(f"“{name}” is reserved; choose another name.")
        return name

    def clean_uri(self) -> str:
        uri = self.cleaned_data["uri"].strip()
        problem = uri_problem(uri)
        if problem:
            raise forms.ValidationError(problem)
        return uri

    def clean_allowed_roots(self) -> list[str]:
        return parse_roots(self.cleaned_data.get("allowed_roots") or "")

    def needs_connection_test(self) -> bool:
        """New hosts, a changed URI and re-enabling are tested; disabling a dead host is not."""
        if not self.cleaned_data.get("enabled"):
            return False
        return not self.instance.pk or "uri" in self.changed_data or "enabled" in self.changed_data

    def clean(self):
        cleaned = super().clean()
        if self.errors or not self.needs_connection_test():
            return cleaned
        uri = cleaned["uri"]
        try:
            with HostConnection(uri, timeout=settings.BLOCKMIG_CONNECT_TIMEOUT) as host:
                self.facts = host.facts()
        except ConnectFailure as failure:
            self.add_error("uri", failure.message)
        except Exception as error:  # the host answered but refused to describe itself
            self.add_error("uri", f"{uri} answered but could not report its facts: {error}")
        return cleaned

    def save(self, commit: bool = True) -> Hypervisor:
        hypervisor = super().save(commit=False)
        if self.facts is not None:
            for name, value in asdict(self.facts).items():
                setattr(hypervisor, name, value)
        if commit:
            hypervisor.save()
        return hypervisor
