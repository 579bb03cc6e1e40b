"""Every audit event type the code writes is in blockmig.audit.EventType with words of its
own, and the pages show those words, not the raw type."""

import re
from pathlib import Path

import pytest
from django.urls import reverse

from blockmig.audit import EventType, audit_record, event_label
from blockmig.models import AuditEvent, Migration
from blockmig.states import State
from hosts.models import Hypervisor

REPO = Path(__file__).resolve().parent.parent
SOURCES = sorted(p for app in ("blockmig", "hosts") for p in (REPO / app).rglob("*.py") if "migrations" not in p.parts)

LITERAL = r"""["'](\w+)["']"""
# `event_type=` followed by something other than a literal: the forms the code uses to pass a
# type through (each checked below or by the state list); anything new must be added here.
PASSED_THROUGH = {
    'f"hypervisor_{action}"',  # blockmig.receivers: the actions hosts.signals sends
    "event_type",  # audit_record's, migration_note's and the selectors' own parameter
    "event_type.value",
    "event_type or str(migration.state)",  # a transition: the state reached (every State)
}


def source_text() -> dict[Path, str]:
    return {path: path.read_text() for path in SOURCES}


def written_types() -> set[str]:
    """The event types the source can write, read from the source itself."""
    types = {str(state) for state in State}
    for text in source_text().values():
        types |= set(re.findall(rf"event_type={LITERAL}", text))
        types |= set(re.findall(rf"\b_note\(\s*{LITERAL}", text))
        types |= set(re.findall(rf"\bmigration_note\([^,()]+,\s*{LITERAL}", text))
    signals = (REPO / "hosts" / "signals.py").read_text()
    types |= {f"hypervisor_{action}" for action in re.findall(rf"action={LITERAL}", signals)}
    return types


def test_the_source_writes_types_only_in_forms_this_test_reads():
    odd = []
    for path, text in source_text().items():
        for match in re.finditer(r"\bevent_type=([^,\n]+)", text):
            value = match.group(1).strip()
            while value.count(")") > value.count("("):  # the call's own closing parenthesis
                value = value[:-1]
            if not re.fullmatch(LITERAL, value) and value not in PASSED_THROUGH:
                odd.append(f"{path.relative_to(REPO)}: event_type={value}")
        for match in re.finditer(r"(?<!def )\b(?:self\._note|migration_note)\(([^,)]+)", text):
            first = match.group(1).strip()
            if not re.fullmatch(LITERAL, first) and first not in ("self.id", "migration_id"):
                odd.append(f"{path.relative_to(REPO)}: note {first}")
    assert not odd, "event types passed in a way tests/test_audit_types.py cannot check: " + "; ".join(odd)


def test_every_type_the_code_writes_has_a_label():
    types = written_types()
    # The ones the issue names, so a broken regex cannot make this pass by finding nothing.
    assert {
        "takeover",
        "undefined",
        "verified",
        "definition_restored",
        "libvirt_connection_lost",
        "libvirt_reconnected",
        "refused",
        "login_failed",
        "login_locked_out",
        "hypervisor_added",
        "hypervisor_changed",
        "hypervisor_deleted",
        "bandwidth_changed",
        "policy_changed",
        "auto_pivot",
        "approved",
        "abort_requested",
    } <= types
    assert sorted(types - set(EventType.values)) == []


def test_every_label_is_words_not_the_raw_type():
    for member in EventType:
        assert member.label and member.label != member.value and "_" not in member.label, member


def test_labels_are_distinct():
    assert len({member.label for member in EventType}) == len(EventType)


def test_a_type_without_a_label_is_refused_before_anything_is_written(db):
    with pytest.raises(ValueError):
        audit_record(event_type="teleported")
    assert not AuditEvent.objects.exists()


def test_old_rows_of_a_type_no_longer_written_read_as_words():
    assert event_label("definition_saved") == "Definition saved"
    assert event_label("takeover") == "Taken over by another worker"


# ---- the pages --------------------------------------------------------------------------------


@pytest.fixture
def taken_over(users):
    host = Hypervisor.objects.create(name="kvm01", uri="test:///default")
    migration = Migration.objects.create(
        hypervisor=host, domain_uuid="u1", domain_name="testvm", state=State.COPYING, requested_by=users["operator"]
    )
    for event_type in ("takeover", "libvirt_connection_lost", "definition_restored"):
        audit_record(event_type=event_type, migration=migration, from_state="copying", to_state="copying")
    return migration


def test_audit_list_shows_labels_not_raw_types(client_for, taken_over):
    html = client_for("viewer").get(reverse("audit_list")).content.decode()
    for words in ("Taken over by another worker", "Connection to libvirt lost", "Definition restored"):
        assert f'<strong class="mig-event__type">{words}</strong>' in html
    assert ">takeover<" not in html and ">libvirt_connection_lost<" not in html


def test_migration_timeline_shows_labels(client_for, taken_over):
    html = client_for("viewer").get(reverse("migration_detail", args=[taken_over.pk])).content.decode()
    assert '<strong class="mig-event__type">Taken over by another worker</strong>' in html


def test_event_filter_offers_labels(client_for, taken_over):
    html = client_for("viewer").get(reverse("audit_list")).content.decode()
    assert '<option value="takeover">Taken over by another worker</option>' in html
    assert '<option value="login_locked_out">Sign-in locked out</option>' in html
