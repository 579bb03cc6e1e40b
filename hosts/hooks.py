"""What another app adds to the inventory pages, without the inventory importing it.

The migration app sits above hosts: it puts its buttons into the domain and disk pages'
action slots and says which block jobs are its own. It registers both at start-up
(blockmig.apps.BlockmigConfig.ready); with nothing registered the pages show their empty
slots and every block job as started outside the console.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hosts.models import Hypervisor

# Slot → templates tried in order by `{% include %}`; the last one is the empty state.
_SLOTS: dict[str, list[str]] = {
    "domain_actions": ["hosts/_no_actions.html"],
    "disk_actions": ["hosts/_no_actions.html"],
}

# (hypervisor, domain uuids) → {(domain uuid, target): migration id}
JobOwners = Callable[[Hypervisor, Sequence[str]], dict[tuple[str, str], int]]
_job_owners: JobOwners | None = None


def fill_slot(slot: str, template: str) -> None:
    """Show `template` in `slot` (the full page context is passed to it)."""
    if template not in _SLOTS[slot]:
        _SLOTS[slot].insert(0, template)


def slot_templates(slot: str) -> list[str]:
    return list(_SLOTS[slot])


def set_job_owners(lookup: JobOwners) -> None:
    global _job_owners
    _job_owners = lookup


def job_owners(hypervisor: Hypervisor, domain_uuids: Sequence[str]) -> dict[tuple[str, str], int]:
    """(domain uuid, target) → id of the migration that started the disk's block job, for
    the jobs the console started; one query for any number of domains."""
    if _job_owners is None or not domain_uuids:
        return {}
    return _job_owners(hypervisor, domain_uuids)
