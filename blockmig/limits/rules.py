"""Copy limits: whether a migration may start its copy now, and how fast each copy may go.

CONTRACT (the one place these rules live):

    slot_for(migration, usage=None) -> Wait | None
        None: `migration` may start copying now (or already holds a slot). A Wait says why
        not, in words a person reads ("2 copies already run on local (limit 2); next slot
        when #41 finishes"), with its place in the host's queue (1 = next) and the ids of
        the migrations it waits for. It only reads the database.
        The decision that counts is made by `blockmig.lifecycle.migration_start_or_queue`,
        which calls slot_for while it holds the hypervisor's row lock (SELECT … FOR NO KEY
        UPDATE on PostgreSQL; on SQLite every write transaction is IMMEDIATE, which
        serialises them), and moves the row to copying or queued in that same transaction.
        So the database decides, whichever worker asks: two never both take the last slot.
        `usage` (from usage_of) lets a page answer for many migrations of a host at once.

    GATES, then CONDITIONS: the functions slot_for asks, in that order, each
        (me: Copy, usage: Usage, ahead: list[Copy]) -> str | None,
        `ahead` being the host's queued migrations requested before `me` (for CONDITIONS,
        only those no gate holds). The first that returns a reason makes the migration wait
        with it: its reason then shows on the migration page and the dashboard, is pushed
        live, and is written in the `queued` audit event.
        - GATES hold one migration for a reason of its own ("the plan is paused", "outside
          the plan's maintenance window"): a migration a gate holds keeps its place in the
          queue but reserves no seat at the limits, so a paused plan never holds back
          anyone else's copies. A gate is one more function in GATES.
        - CONDITIONS are the copy limits (host_limit, root_limit).
        A queued migration is claimed by a worker again only once slot_for answers None for
        it (startable_queued), so a reason that ends by itself (a window opening) is noticed
        at the workers' next poll (BLOCKMIG_POLL_SECONDS); code that ends one (a plan
        resumed) calls queue_changed_on_commit(hypervisor_id) (blockmig.limits.queue_push) to
        wake them at once.

    Request order: an earlier queued migration keeps its place at every limit it is subject
    to, so a later request never takes a slot it waits for (it may pass it at a limit the
    earlier one does not need: another root with room).

    bandwidth_for(migration, disks, usage=None) -> {target: MiB/s}
        each disk copy's speed: min(the migration's own limit, the root's shared total / the
        copies running into that root); 0 = unlimited. The worker that holds the migration
        applies it (blockmig.engine), never a web request.

A slot is held by a migration that is copying, ready, pivoting or aborting (a block job may
run on the host for it). A queued or preflighting migration holds none. A migration counts
once against its host and once against each root its destinations lie in (a network
destination lies in none); bandwidth is shared per disk copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from django.db.models import Prefetch

from blockmig.models import Migration, MigrationDisk
from blockmig.plans.rules import plan_paused
from blockmig.preflight.files import destination_root
from blockmig.states import State
from hosts.models import Hypervisor

HOLDS_SLOT = frozenset({State.COPYING, State.READY, State.PIVOTING, State.ABORTING})


@dataclass(frozen=True)
class Copy:
    """What the limits need to know of one migration."""

    id: int
    state: str
    order: tuple  # (created_at, id): request order
    roots: frozenset[str]
    disk_roots: dict[str, str | None] = field(hash=False)  # target → root
    done: float = 0.0  # share copied, to guess which running copy ends first


@dataclass
class Usage:
    """One host's running and queued migrations, read once."""

    hypervisor: Hypervisor
    running: list[Copy]
    queued: list[Copy]  # request order
    _held: set[int] | None = None

    def held(self) -> set[int]:
        """The queued migrations a gate holds (asked once per read: a gate may query)."""
        if self._held is None:
            self._held = {c.id for c in self.queued if any(gate(c, self, []) for gate in GATES)}
        return self._held


@dataclass(frozen=True)
class Wait:
    position: int  # 1 = the next to start on this host
    reason: str
    behind: tuple[int, ...] = ()  # the migrations it waits for

    @property
    def text(self) -> str:
        return f"{ordinal(self.position)} in the queue: {self.reason}"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _copy_of(migration: Migration, disks: list[MigrationDisk], roots: list[str]) -> Copy:
    disk_roots = {d.target: destination_root(d.destination, roots) for d in disks}
    done = migration.bytes_done / migration.bytes_total if migration.bytes_total else 0.0
    if migration.state in (State.READY, State.PIVOTING):
        done = 2.0  # a ready mirror ends at its pivot, the soonest of all
    return Copy(
        id=migration.pk,
        state=migration.state,
        order=(migration.created_at, migration.pk),
        roots=frozenset(r for r in disk_roots.values() if r),
        disk_roots=disk_roots,
        done=done,
    )


def usage_of(hypervisor: Hypervisor) -> Usage:
    """The host's slot holders and queue: one query for the rows, one for their disks."""
    rows = (
        Migration.objects.filter(hypervisor=hypervisor, state__in=[*HOLDS_SLOT, State.QUEUED])
        .only("pk", "state", "created_at", "bytes_done", "bytes_total", "hypervisor_id")
        .prefetch_related(Prefetch("disks", queryset=MigrationDisk.objects.only("migration_id", "target", "destination")))
        .order_by("created_at", "pk")
    )
    roots = hypervisor.allowed_roots or []
    copies = [_copy_of(m, list(m.disks.all()), roots) for m in rows]
    return Usage(
        hypervisor=hypervisor,
        running=[c for c in copies if c.state in HOLDS_SLOT],
        queued=[c for c in copies if c.state == State.QUEUED],
    )


# -- the conditions ---------------------------------------------------------------------------


def _copies(n: int) -> str:
    return f"{n} cop{'y' if n == 1 else 'ies'}"


def _full(running: list[Copy], limit: int, where: str, verb: str) -> str:
    finishing = sorted(running, key=lambda c: (-c.done, c.order))
    need = len(running) - limit + 1
    if need == 1:
        then = f"next slot when #{finishing[0].id} finishes"
    else:
        then = f"next slot when {need} of them finish (#{', #'.join(str(c.id) for c in finishing[:need])} are furthest)"
    verb = verb + "s" if len(running) == 1 else verb
    return f"{_copies(len(running))} already {verb} {where} (limit {limit}); {then}"


def _queue_first(ahead: list[Copy], running: list[Copy], limit: int, where: str) -> str:
    ids = ", ".join(f"#{c.id}" for c in ahead[:5]) + (" …" if len(ahead) > 5 else "")
    requests = "1 earlier request waits" if len(ahead) == 1 else f"{len(ahead)} earlier requests wait"
    return f"{requests} for {where} first ({ids}); {len(running)} of {limit} copies run there"


def host_limit(me: Copy, usage: Usage, ahead: list[Copy]) -> str | None:
    limit = usage.hypervisor.max_copies
    if not limit:
        return None
    name = usage.hypervisor.name
    if len(usage.running) >= limit:
        return _full(usage.running, limit, f"on {name}", "run")
    if len(usage.running) + len(ahead) >= limit:
        return _queue_first(ahead, usage.running, limit, name)
    return None


def root_limit(me: Copy, usage: Usage, ahead: list[Copy]) -> str | None:
    for root in sorted(me.roots):
        limit = usage.hypervisor.root_limit(root)[0]
        if not limit:
            continue
        running = [c for c in usage.running if root in c.roots]
        waiting = [c for c in ahead if root in c.roots]
        if len(running) >= limit:
            return _full(running, limit, f"into {root}", "write")
        if len(running) + len(waiting) >= limit:
            return _queue_first(waiting, running, limit, root)
    return None


Condition = Callable[[Copy, Usage, list[Copy]], str | None]
# plan_paused: a paused evacuation plan starts no new copies (blockmig.plans.rules).
GATES: list[Condition] = [plan_paused]
CONDITIONS: list[Condition] = [host_limit, root_limit]


def _reason(me: Copy, usage: Usage) -> tuple[str | None, list[Copy]]:
    """Why `me` must wait (None: it may start), and every queued migration ahead of it."""
    ahead = [c for c in usage.queued if c.order < me.order]
    for gate in GATES:
        reason = gate(me, usage, ahead)
        if reason:
            return reason, ahead
    held = usage.held()
    competing = [c for c in ahead if c.id not in held]
    for condition in CONDITIONS:
        reason = condition(me, usage, competing)
        if reason:
            return reason, ahead
    return None, ahead


def slot_for(migration: Migration, usage: Usage | None = None) -> Wait | None:
    """See the contract at the top of this module."""
    if migration.state in HOLDS_SLOT:
        return None
    usage = usage or usage_of(migration.hypervisor)
    me = next((c for c in usage.queued if c.id == migration.pk), None)
    if me is None:
        me = _copy_of(migration, list(migration.disks.all()), usage.hypervisor.allowed_roots or [])
    reason, ahead = _reason(me, usage)
    if reason is None:
        return None
    behind = tuple(c.id for c in ahead) or tuple(c.id for c in usage.running)
    return Wait(position=len(ahead) + 1, reason=reason, behind=behind)


def waits_of(migrations) -> dict[int, Wait]:
    """migration id → its Wait, for the queued ones among `migrations` (one usage read per host)."""
    queued = [m for m in migrations if m.state == State.QUEUED]
    usages: dict[int, Usage] = {}
    found = {}
    for m in queued:
        if m.hypervisor_id not in usages:
            usages[m.hypervisor_id] = usage_of(m.hypervisor)
        wait = slot_for(m, usages[m.hypervisor_id])
        if wait is not None:
            found[m.pk] = wait
    return found


def startable_queued() -> list[int]:
    """Queued migrations that would get a slot now, oldest first: the only queued ones a
    worker claims (waiting ones cost no driver, no libvirt connection, no claim churn)."""
    hosts = Hypervisor.objects.filter(migrations__state=State.QUEUED).distinct()
    startable: list[int] = []
    for hypervisor in hosts:
        usage = usage_of(hypervisor)
        startable.extend(copy.id for copy in usage.queued if _reason(copy, usage)[0] is None)
    return startable


# -- bandwidth ---------------------------------------------------------------------------------


def shares_bandwidth(hypervisor: Hypervisor) -> bool:
    return any(bandwidth for _root, _copies, bandwidth in hypervisor.root_limit_rows)


def bandwidth_for(migration: Migration, disks: list[MigrationDisk], usage: Usage | None = None) -> dict[str, int]:
    """See the contract at the top of this module."""
    own = migration.bandwidth_mib
    hypervisor = migration.hypervisor
    if not shares_bandwidth(hypervisor):
        return {d.target: own for d in disks}
    usage = usage or usage_of(hypervisor)
    roots = hypervisor.allowed_roots or []
    speeds = {}
    for disk in disks:
        root = destination_root(disk.destination, roots)
        total = hypervisor.root_limit(root)[1] if root else 0
        if not total:
            speeds[disk.target] = own
            continue
        copies = sum(1 for c in usage.running if c.id != migration.pk for r in c.disk_roots.values() if r == root)
        copies += sum(1 for d in disks if destination_root(d.destination, roots) == root)
        share = max(1, total // copies)
        speeds[disk.target] = min(own, share) if own else share
    return speeds
