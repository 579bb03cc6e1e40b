"""Run by tests/test_limits_postgres.py in a pytest of its own whose DATABASE_URL names the
private PostgreSQL cluster (`make postgres`): many threads, each with its own connection,
race for copy slots through lifecycle.migration_start_or_queue while others finish copies,
and the database never lets more copies run than the limits allow.

Not named test_*.py: the unit tier's own (SQLite) session must not collect it.
"""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from blockmig.lifecycle import StateMoved, migration_start_or_queue, migration_transition
from blockmig.limits import rules
from blockmig.models import Migration, MigrationDisk
from blockmig.states import State
from hosts.models import Hypervisor

HOST_LIMIT, ROOT_LIMIT = 3, 2
ROOT_A, ROOT_B = "/srv/a", "/srv/b"
THREADS = 16
MIGRATIONS = 60


def holding_counts() -> tuple[int, int]:
    """(copies holding a slot on the host, of them into ROOT_A), in one statement's snapshot."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(DISTINCT m.id), count(DISTINCT m.id) FILTER (WHERE d.destination LIKE %s)
            FROM blockmig_migration m JOIN blockmig_migrationdisk d ON d.migration_id = m.id
            WHERE m.state = ANY(%s)
            """,
            [ROOT_A + "/%", [str(state) for state in rules.HOLDS_SLOT]],
        )
        return cursor.fetchone()


@pytest.mark.django_db(transaction=True)
def test_threads_racing_for_slots_never_exceed_the_limits(users):
    assert connection.vendor == "postgresql"
    host = Hypervisor.objects.create(
        name="pg-race",
        uri="test:///default",
        allowed_roots=[ROOT_A, ROOT_B],
        max_copies=HOST_LIMIT,
        root_limits={ROOT_A: {"max_copies": ROOT_LIMIT, "bandwidth_mib": 0}},
    )
    start = timezone.now() - timedelta(hours=1)
    ids = []
    for n in range(MIGRATIONS):
        m = Migration.objects.create(
            hypervisor=host,
            domain_uuid=f"u-{n}",
            domain_name=f"vm{n}",
            state=State.PREFLIGHT,
            requested_by=users["operator"],
            created_at=start + timedelta(milliseconds=n),
        )
        root = ROOT_A if n % 3 else ROOT_B  # two of three into the root with its own limit
        MigrationDisk.objects.create(
            migration=m,
            hypervisor=host,
            domain_uuid=m.domain_uuid,
            target="vda",
            source_path=f"/i/{n}",
            destination=f"{root}/{n}",
        )
        ids.append(m.pk)

    barrier = threading.Barrier(THREADS + 1)
    stop = threading.Event()
    errors: list[str] = []
    worst = [0, 0]
    admitted = [0]
    lock = threading.Lock()

    def watch() -> None:
        try:
            while not stop.is_set():
                on_host, into_a = holding_counts()
                with lock:
                    worst[0], worst[1] = max(worst[0], on_host), max(worst[1], into_a)
        except Exception as error:
            errors.append(f"watcher: {error!r}")
        finally:
            connections.close_all()

    def race(seed: int) -> None:
        rng = random.Random(seed)
        try:
            barrier.wait()
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                waiting = list(
                    Migration.objects.filter(pk__in=ids, state__in=[State.PREFLIGHT, State.QUEUED]).values_list("pk", flat=True)
                )
                running = list(Migration.objects.filter(pk__in=ids, state=State.COPYING).values_list("pk", flat=True))
                if not waiting and not running:
                    return
                if running and rng.random() < 0.3:
                    try:  # a copy ends: its slot frees
                        migration_transition(rng.choice(running), State.FAILED, expect={State.COPYING}, failure_reason="done")
                    except StateMoved:
                        pass
                    continue
                if waiting:
                    try:
                        result = migration_start_or_queue(rng.choice(waiting[:4]), lease=None)
                    except StateMoved:
                        continue  # another thread moved it first
                    if isinstance(result, Migration):
                        with lock:
                            admitted[0] += 1
        except Exception as error:  # reported below: a thread must not fail silently
            errors.append(repr(error))
        finally:
            connections.close_all()

    watcher = threading.Thread(target=watch)
    racers = [threading.Thread(target=race, args=(n,)) for n in range(THREADS)]
    watcher.start()
    for thread in racers:
        thread.start()
    barrier.wait()
    for thread in racers:
        thread.join(30)
    stop.set()
    watcher.join(10)
    # The queue's coalesced page pushes (blockmig.limits.queue_push) read the database from
    # timer threads half a second after a change: let them finish before the database is
    # dropped, which one mid-query fails ("being accessed by other users").
    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer):
            thread.join(10)
    assert not [thread.name for thread in racers if thread.is_alive()], "a racer was still running"

    assert not errors, errors[:3]
    on_host, into_a = holding_counts()
    print(json.dumps({"admitted": admitted[0], "worst_on_host": worst[0], "worst_into_root": worst[1]}))
    assert admitted[0] >= 10, "the race must have started copies, or it proves nothing"
    assert worst[0] <= HOST_LIMIT and on_host <= HOST_LIMIT
    assert worst[1] <= ROOT_LIMIT and into_a <= ROOT_LIMIT
