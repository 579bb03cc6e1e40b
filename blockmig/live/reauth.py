"""Asking again whether an open websocket's user may still see its stream.

A socket is authorised at its handshake, but afterwards the session can end (logout,
expiry, a password change), the user be deactivated or lose a role. Consumers ask again
before every frame an event makes them send and at least every BLOCKMIG_WS_REAUTH_SECONDS,
and close the socket on a refusal (blockmig.live.consumer).

Asking has to be cheap when one event reaches hundreds of sockets, so the checks of one
process are batched: every check asked while no read is pending joins the next read,
which answers all of them with four queries (sessions, users, their own and their groups'
permissions) whatever their number. A check joins only a read that has not started yet,
so every answer comes from the database as it was after the check was asked.

The session is checked as django.contrib.auth.get_user checks it (row not expired, same
user, a known backend, the auth hash of the user's current password). Permissions follow
ModelBackend's rules, the only backend blockmig configures: an active superuser has them
all, anyone else their own and their groups'. A permission that another backend would
grant is not seen, so that socket is closed (never kept open by mistake).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from functools import partial
from importlib import import_module
from threading import Lock
from typing import Any
from weakref import WeakKeyDictionary

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.utils import timezone
from django.utils.crypto import constant_time_compare

# The close codes a refusal carries (the consumers' own; the browser does not retry them).
CLOSE_NOT_LOGGED_IN = 4401
CLOSE_FORBIDDEN = 4403

ALL = "*"  # in Verdict.permissions: a superuser's


@dataclass(frozen=True)
class Verdict:
    """What the database says about one socket's (session, user) now."""

    logged_in: bool
    permissions: frozenset[str] = frozenset()

    def refusal(self, permission: str) -> int | None:
        """The close code for a socket that needs `permission`, or None if it may go on."""
        if not self.logged_in:
            return CLOSE_NOT_LOGGED_IN
        if not holds(self.permissions, permission):
            return CLOSE_FORBIDDEN
        return None


def holds(permissions: frozenset[str], permission: str) -> bool:
    """Whether a Verdict's (or `permissions_of`'s) permissions include `permission`."""
    return ALL in permissions or permission in permissions


Key = tuple[str, int]  # session key, user id


@dataclass
class _Pending:
    """The checks of one event loop waiting for the next read."""

    futures: dict[Key, asyncio.Future] = field(default_factory=dict)
    reading: asyncio.Task | None = None  # held here: the loop keeps only weak references


# Per event loop: daphne runs one; tests run one per test, and a future belongs to its loop.
_pending: WeakKeyDictionary[asyncio.AbstractEventLoop, _Pending] = WeakKeyDictionary()


async def check(session_key: str, user_id: int) -> Verdict:
    """The verdict for this socket, from a read that starts after this call."""
    loop = asyncio.get_running_loop()
    pending = _pending.setdefault(loop, _Pending())
    future = pending.futures.get((session_key, user_id))
    if future is None:
        future = pending.futures[(session_key, user_id)] = loop.create_future()
        if pending.reading is None:
            pending.reading = loop.create_task(_read_pending(pending))
    # Shielded: one socket closing while it waits must not cancel the others' answer.
    return await asyncio.shield(future)


async def _read_pending(pending: _Pending) -> None:
    try:
        while pending.futures:
            batch, pending.futures = pending.futures, {}
            try:
                # Off the thread the renders share: a check must not wait behind renders,
                # nor they behind it (it only reads, on a connection of its own).
                verdicts = await database_sync_to_async(read_verdicts, thread_sensitive=False)(list(batch))
            except Exception as error:  # the database is down, say: each socket decides
                for future in batch.values():
                    if not future.done():
                        future.set_exception(error)
                continue
            for key, future in batch.items():
                if not future.done():
                    future.set_result(verdicts[key])
    finally:
        pending.reading = None


def permissions_of(user) -> frozenset[str]:
    """What a Verdict would list for `user`, from the permissions Django has cached on it."""
    return frozenset({ALL}) if user.is_superuser else frozenset(user.get_all_permissions())


def read_verdicts(keys: list[Key]) -> dict[Key, Verdict]:
    """One read of the database for many sockets."""
    sessions = _sessions({session_key for session_key, _ in keys})
    User = get_user_model()
    user_ids = {user_id for _, user_id in keys}
    # Only what the checks read (a deferred field would cost a query per user).
    rows = User._default_manager.filter(pk__in=user_ids).only("pk", "password", "is_active", "is_superuser")
    users = {user.pk: user for user in rows}
    permissions = _permissions(users)
    verdicts = {}
    for session_key, user_id in keys:
        user = users.get(user_id)
        if user is None or not _session_valid(sessions.get(session_key), user):
            verdicts[(session_key, user_id)] = Verdict(logged_in=False)
        else:
            verdicts[(session_key, user_id)] = Verdict(logged_in=True, permissions=permissions[user_id])
    return verdicts


class _Memo:
    """A bounded map from an input to what a pure function made of it, for the reads that
    repeat at every frame: the same session rows decoded, the same password hashed again."""

    def __init__(self, size: int = 20_000) -> None:
        self.size = size
        self._values: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = Lock()

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        value = make()
        with self._lock:
            self._values[key] = value
            while len(self._values) > self.size:
                self._values.popitem(last=False)
        return value


# A session row's data decodes to the same dict whenever it is the same text (what it
# holds changes only with the text; its expiry is the row's, checked by the query). A user's
# session hashes follow from their password hash and the secret keys. Both are kept, so a
# re-check of a thousand sockets does not decode and hash a thousand times again per frame.
_decoded = _Memo()
_auth_hashes = _Memo()


def _sessions(session_keys: set[str]) -> dict[str, dict]:
    store_class = import_module(settings.SESSION_ENGINE).SessionStore
    if hasattr(store_class, "get_model_class"):  # the database backends: one query for all
        rows = (
            store_class.get_model_class()
            .objects.filter(session_key__in=session_keys, expire_date__gt=timezone.now())
            .values_list("session_key", "session_data")
        )
        decode = store_class().decode
        return {session_key: _decoded.get(data, partial(decode, data)) for session_key, data in rows}
    return {session_key: store_class(session_key).load() for session_key in session_keys}


def _session_valid(session: dict | None, user) -> bool:
    if not session or session.get(SESSION_KEY) != user._meta.pk.value_to_string(user):
        return False
    if session.get(BACKEND_SESSION_KEY) not in settings.AUTHENTICATION_BACKENDS:
        return False
    if not getattr(user, "is_active", True):  # ModelBackend.user_can_authenticate
        return False
    session_hash = session.get(HASH_SESSION_KEY)
    if not session_hash:
        return False
    secrets = (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS)
    hashes = _auth_hashes.get(
        (user.pk, user.password, secrets), lambda: [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
    )
    return any(constant_time_compare(session_hash, known) for known in hashes)


def _permissions(users: dict) -> dict[int, frozenset[str]]:
    User = get_user_model()
    found: dict[int, set[str]] = {pk: set() for pk in users}
    ids = [pk for pk, user in users.items() if not user.is_superuser]
    direct = User.user_permissions.through.objects.filter(user_id__in=ids).values_list(
        "user_id", "permission__content_type__app_label", "permission__codename"
    )
    via_groups = User.groups.through.objects.filter(user_id__in=ids, group__permissions__isnull=False).values_list(
        "user_id", "group__permissions__content_type__app_label", "group__permissions__codename"
    )
    for user_id, app_label, codename in [*direct, *via_groups]:
        found[user_id].add(f"{app_label}.{codename}")
    for pk, user in users.items():
        if user.is_superuser:
            found[pk] = {ALL}
    return {pk: frozenset(perms) for pk, perms in found.items()}
