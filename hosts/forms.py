"""The hypervisor form: checks the URI and the storage roots, then proves the host answers
before anything is saved."""

import fnmatch
import os
import posixpath
from dataclasses import asdict
from typing import Any

from django import forms
from django.conf import settings

from hosts.adapter import ConnectFailure, HostConnection, uri_is_local
from hosts.models import Hypervisor
from hosts.records import HostFacts
from hosts.signals import hypervisor_values
from hosts.uris import uri_problem

# Path segments of /hosts/… that are pages, not hypervisor names.
RESERVED_NAMES = {"add"}


# Directories a migration destination must never land in: the system's own files, and
# libvirt's state (domain definitions, its images' pool) unless an admin chose a path
# there on purpose (settings.BLOCKMIG_ALLOW_SYSTEM_ROOTS). "lib*" is every top-level
# /lib, /lib32, /lib64, /libx32.
SYSTEM_DIRECTORIES = (
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/root",
    "/usr",
    "/bin",
    "/sbin",
    "/lib*",
    "/run",
    "/var/run",
    "/var/lib/libvirt",
)


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _system_directory(path: str) -> str | None:
    """The system directory `path` is, lies in or contains, unless allowed on purpose."""
    allowed = [posixpath.normpath(p) for p in getattr(settings, "BLOCKMIG_ALLOW_SYSTEM_ROOTS", ())]
    if any(_inside(path, chosen) for chosen in allowed):
        return None
    top = "/" + path.split("/")[1]
    for system in SYSTEM_DIRECTORIES:
        if system.endswith("*"):
            if fnmatch.fnmatchcase(top, system):
                return top
        elif _inside(path, system) or (_inside(system, path) and not any(_inside(system, c) for c in allowed)):
            return system
    return None


def _system_problem(path: str) -> str | None:
    system = _system_directory(path)
    if system is None:
        return None
    if system == path:
        return f"“{path}” is a system directory: name a storage directory for migration copies."
    if _inside(path, system):
        return f"“{path}” lies in the system directory {system}: name a storage directory outside it."
    return f"“{path}” contains the system directory {system}: name a storage directory that does not."


def parse_roots(text: str, *, local: bool = False) -> list[str]:
    """One absolute directory per line → normalised, de-duplicated list. Raises ValidationError.

    `local`: the host is this machine (qemu:///system), so each root is resolved and one
    whose real path differs from what was typed (a symbolic link on the way) is refused:
    the preflight compares destinations with the roots as stored.
    """
    roots: list[str] = []
    problems: list[str] = []
    for line in text.splitlines():
        path = line.strip()
        if not path:
            continue
        if not path.startswith("/"):
            problems.append(f"“{path}” is not absolute: start it with /.")
            continue
        if ".." in path.split("/"):
            problems.append(f"“{path}” contains “..”: name the directory itself.")
            continue
        if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in path):
            problems.append(f"{path!r} contains a control character.")
            continue
        normal = posixpath.normpath(path)
        if normal.startswith("//"):
            normal = "/" + normal.lstrip("/")
        if normal == "/":
            problems.append("“/” would allow destinations anywhere on the host: name a storage directory.")
            continue
        problem = _system_problem(normal)
        if not problem and local:
            real = os.path.realpath(normal)
            if real != normal:
                problem = f"“{normal}” is really {real} on this host (a symbolic link on the way): enter {real} itself."
        if problem:
            problems.append(problem)
        elif normal not in roots:
            roots.append(normal)
    if problems:
        raise forms.ValidationError(problems)
    return roots


class HypervisorForm(forms.ModelForm):
    allowed_roots = forms.CharField(
        label="Allowed storage roots",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false", "placeholder": "/srv/images\n/srv/backups"}),
        help_text="One absolute directory per line. Migration destinations must lie inside one of them.",
    )

    class Meta:
        model = Hypervisor
        # auto_pivot is the migration app's policy, set and audited on its own page
        # (hypervisor_policy), not here.
        fields = ["name", "uri", "allowed_roots", "enabled"]
        widgets = {
            "name": forms.TextInput(attrs={"autofocus": True, "autocomplete": "off", "spellcheck": "false"}),
            "uri": forms.TextInput(
                attrs={"autocomplete": "off", "spellcheck": "false", "placeholder": "qemu+ssh://root@kvm01/system"}
            ),
        }
        help_texts = {
            "enabled": "Disabled hosts are not synced and cannot be migrated on; their last-known data stays visible.",
        }

    def __init__(self, *args, user=None, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        self.facts: HostFacts | None = None
        # What the row held before this form touched it, for the audit of the change.
        self.before: dict | None = hypervisor_values(self.instance) if self.instance.pk else None
        if self.instance.pk:
            self.initial["allowed_roots"] = "\n".join(self.instance.allowed_roots or [])

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
        # The URI is cleaned first (field order): a refused URI means the host is not known
        # to be this machine, and the roots are judged without resolving them.
        uri = self.cleaned_data.get("uri") or ""
        return parse_roots(self.cleaned_data.get("allowed_roots") or "", local=bool(uri) and uri_is_local(uri))

    def needs_connection_test(self) -> bool:
        """New hosts, a changed URI and re-enabling are tested; disabling a dead host is not."""
        if not self.cleaned_data.get("enabled"):
            return False
        return not self.instance.pk or "uri" in self.changed_data or "enabled" in self.changed_data

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
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
