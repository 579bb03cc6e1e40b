"""Telling a host's queue that what it waits for changed: the workers woken at once, the
queued migrations' pages pushed (coalesced, from a timer thread). Apart from the rules
(blockmig.limits.rules), which decide; this only tells."""

from __future__ import annotations

import logging
import threading

from django.db import connection, transaction

from blockmig.limits.rules import HOLDS_SLOT
from blockmig.live import publish
from blockmig.models import Migration
from blockmig.states import State
from blockmig.wake import wake_workers

log = logging.getLogger(__name__)


def changes_queue(before: str, after: str) -> bool:
    """A move that changes what the host's queued migrations wait for (a slot taken or
    freed, the queue grown or shrunk)."""
    return (before in HOLDS_SLOT) != (after in HOLDS_SLOT) or (before == State.QUEUED) != (after == State.QUEUED)


# A host's queued pages are pushed at most this often per process: with 16 waiting, every
# slot taken or freed would otherwise cost 16 renders' worth of messages at once.
QUEUE_PUSH_EVERY = 0.5
_pushes_due: set[int] = set()
_pushes_lock = threading.Lock()


def queue_changed_on_commit(hypervisor_id: int, exclude: int = 0) -> None:
    """After commit: wake the workers at once (their next claim starts what now fits), and
    push every queued migration of the host (its place and reason may have changed) within
    QUEUE_PUSH_EVERY, several changes in one push. `exclude`: a migration its own change
    publishes already."""

    def tell() -> None:
        first = (
            Migration.objects.filter(hypervisor_id=hypervisor_id, state=State.QUEUED)
            .exclude(pk=exclude)
            .order_by("created_at", "pk")
            .values_list("pk", flat=True)
            .first()
        )
        if first is not None:
            wake_workers(first)
            _push_soon(hypervisor_id)

    transaction.on_commit(tell)


def _push_soon(hypervisor_id: int) -> None:
    with _pushes_lock:
        if hypervisor_id in _pushes_due:
            return  # the push already due reads the database after this change
        _pushes_due.add(hypervisor_id)
    timer = threading.Timer(QUEUE_PUSH_EVERY, _push_queue, args=(hypervisor_id,))
    timer.daemon = True
    timer.start()


def _push_queue(hypervisor_id: int) -> None:
    with _pushes_lock:
        _pushes_due.discard(hypervisor_id)  # before the read: a later change schedules again
    try:
        ids = Migration.objects.filter(hypervisor_id=hypervisor_id, state=State.QUEUED).values_list("pk", flat=True)
        for migration_id in ids:
            publish.migration_changed(migration_id)
    except Exception:
        log.exception("could not push the queue of hypervisor %s; pages catch up on resync", hypervisor_id)
    finally:
        connection.close()  # this timer thread's own connection
