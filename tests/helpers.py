"""What every tier's tests share: the one user factory and the one wait for a migration's state.

Importable without pytest (the deployment and browser tiers' call servers import functions
from here by name and run them on the deployment's database), so Django is imported inside
the functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from functools import cache

PASSWORD = "pw-for-tests"


@cache
def _password_hash(password: str) -> str:
    """Hash each password once per process: the real hasher costs most of a second a user."""
    from django.contrib.auth.hashers import make_password

    return make_password(password)


def make_user(username: str, role: str | None = None, *, password: str = PASSWORD, **fields):
    """The user `username` holding `role` (one of hosts.roles.ROLES, or none), with
    `password` and any other User fields (is_staff=True, is_superuser=True). Made again
    the same way if it exists (a deployment lives longer than one test)."""
    from django.contrib.auth.models import Group, User

    from hosts.roles import setup_roles

    user = User.objects.filter(username=username).first() or User(username=username)
    user.password = _password_hash(password)
    for name, value in fields.items():
        setattr(user, name, value)
    user.save()
    if role is not None:
        group = Group.objects.filter(name=role).first()
        if group is None:
            setup_roles()
            group = Group.objects.get(name=role)
        user.groups.add(group)
    return User.objects.get(pk=user.pk)  # no permission cache from before the group


def make_people(people: Iterable[tuple[str, str]], password: str = PASSWORD) -> dict[str, int]:
    """make_user for each (username, role); username → id. Runs on a deployment too."""
    return {name: make_user(name, role, password=password).pk for name, role in people}


def wait_until(condition: Callable[[], object], what: str, timeout: float = 60.0, every: float = 0.2):
    """condition()'s first truthy value; AssertionError naming `what` after `timeout` s (a
    bound on the wait, not a measurement)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what}: not seen within {timeout:g} s")


def migration_row(migration_id: int) -> dict:
    """What a test reads of a migration: its state, why it failed, who holds it, its audit
    trail (type, to_state, actor, details). Runs here or on a deployment's database."""
    from blockmig.models import AuditEvent, Migration

    migration = Migration.objects.get(pk=migration_id)
    return {
        "state": migration.state,
        "failure_reason": migration.failure_reason,
        "lease_owner": migration.lease_owner,
        "events": [
            {"type": e.event_type, "to_state": e.to_state, "actor": e.actor_name, "details": e.details}
            for e in AuditEvent.objects.filter(migration=migration).order_by("pk")
        ],
    }


def wait_for_state(
    migration, states: str | Iterable[str], timeout: float = 60.0, *, on=None, why: Callable[[], str] | None = None
):
    """Wait until the migration is in one of `states`; fail the test with what it is in instead.

    `migration` is a Migration row of this process's database (returned refreshed), or,
    with `on` (a deployment or the browser tier's live site: anything with `.call`), the id
    of one on that deployment (its `migration_row` is returned). `why` adds to the failure
    message (a worker's log, say). The timeout bounds the wait; it asserts no duration.
    """
    wanted = {str(state) for state in ([states] if isinstance(states, str) else states)}
    if on is None:

        def look():
            migration.refresh_from_db()
            return migration, migration.state
    else:

        def look():
            row = on.call(migration_row, migration_id=migration)
            return row, row["state"]

    deadline = time.monotonic() + timeout
    while True:
        found, state = look()
        if state in wanted:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{_describe(found)}, not one of {sorted(wanted)} after {timeout:g} s" + (f"\n{why()}" if why else "")
            )
        time.sleep(0.1)


def _describe(found) -> str:
    if isinstance(found, dict):
        trail = [(e["type"], e["to_state"], e["actor"]) for e in found["events"]]
        return f"the migration is {found['state']} (reason: {found['failure_reason']!r}); audit: {trail}"
    from blockmig.models import AuditEvent

    trail = [(e.event_type, e.to_state, e.actor_name) for e in AuditEvent.objects.filter(migration=found)]
    return f"migration #{found.pk} is {found.state} (reason: {found.failure_reason!r}); audit: {trail}"
