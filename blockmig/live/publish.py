"""The publish side of the live push: what lifecycle functions and the inventory sync call.

    publish.migration_changed(migration_id)    a migration's row (state, progress, timeline)
    publish.plan_changed(plan_id)              an evacuation plan's state or window
    publish.inventory_changed(hypervisor_id)   a sync (or a pivot) changed a host's inventory

Call them from `transaction.on_commit`, so a message never announces a state the database
does not have. A message is only a small event, `{"type": "migration.changed", "id": 7,
"seq": 42}`: each open page re-reads the committed rows and renders its own fragments (the
consumers of blockmig.live), so role filtering stays in the templates and a lost message is
harmless: the next one, a reconnect or the periodic resync renders the database as it is.

`seq` comes from a Redis INCR taken after the commit, one counter per subject. A consumer
that has rendered seq N read the database after every commit whose seq is <= N, so it may
drop any older message that arrives late (from another process) without missing a change.

Publishing never raises into its caller: a Redis outage must not fail a migration. Browsers
then catch up when they reconnect or at their next periodic resync.

A new kind of pushed subject: a group name and a function here that calls
`announce("thing.changed", "thing", thing_id, [groups])`, and a consumer that joins the group
(channels calls its `thing_changed` method, which hands the seq to `LiveConsumer.note`).
"""

from __future__ import annotations

import asyncio
import logging
import threading

import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

from blockmig.models import Migration

log = logging.getLogger(__name__)

DASHBOARD_GROUP = "dashboard"


def migration_group(migration_id: int) -> str:
    return f"migration-{migration_id}"


def hypervisor_group(hypervisor_id: int) -> str:
    return f"hypervisor-{hypervisor_id}"


def plan_group(plan_id: int) -> str:
    return f"plan-{plan_id}"


def seq_key(subject: str) -> str:
    prefix = settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("prefix", "blockmig")
    return f"{prefix}:seq:{subject}"


_redis_lock = threading.Lock()
_redis: redis.Redis | None = None


def redis_client() -> redis.Redis:
    """This process's Redis connection (the channel layer's server), made on first use."""
    global _redis
    with _redis_lock:
        if _redis is None:
            _redis = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        return _redis


def next_seq(subject: str) -> int:
    """The next number in `subject`'s sequence (atomic across processes and machines)."""
    return int(redis_client().incr(seq_key(subject)))


def current_seq(subject: str) -> int:
    value = redis_client().get(seq_key(subject))
    return int(value) if value is not None else 0


def _send(groups: list[str], message: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return

    async def send_all() -> None:
        for group in groups:
            await layer.group_send(group, message)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        async_to_sync(send_all)()
        return
    # This thread runs an event loop (an async driver calling back into sync code):
    # AsyncToSync refuses here, so send from a short-lived thread and wait for it.
    sender = threading.Thread(target=async_to_sync(send_all), name="blockmig-publish")
    sender.start()
    sender.join(timeout=5)


def announce(event: str, subject: str, ident: int, groups: list[str], **extra: object) -> None:
    """Send `{"type": event, "id": ident, "seq": <next of subject:ident>, **extra}` to
    `groups`. Raises on a Redis outage; the functions below catch and log it."""
    seq = next_seq(f"{subject}:{ident}")
    _send(groups, {"type": event, "id": ident, "seq": seq, **extra})


def migration_changed(migration_id: int) -> None:
    """A migration's state, progress or timeline changed and is committed."""
    try:
        row = Migration.objects.filter(pk=migration_id).values("hypervisor_id", "state", "plan_id").first()
        if row is None:
            return
        groups = [migration_group(migration_id), DASHBOARD_GROUP, hypervisor_group(row["hypervisor_id"])]
        if row["plan_id"]:
            groups.append(plan_group(row["plan_id"]))  # the plan page's bars and totals
        announce("migration.changed", "migration", migration_id, groups, state=row["state"], hypervisor_id=row["hypervisor_id"])
    except Exception:
        log.exception("could not publish the change of migration %s; browsers catch up on resync", migration_id)


def plan_changed(plan_id: int) -> None:
    """An evacuation plan's state or window changed and is committed (its migrations'
    progress reaches the plan page through migration_changed)."""
    try:
        announce("plan.changed", "plan", plan_id, [plan_group(plan_id)])
    except Exception:
        log.exception("could not publish the change of plan %s; browsers catch up on resync", plan_id)


def inventory_changed(hypervisor_id: int) -> None:
    """A sync (or a pivot) changed a hypervisor's domains, disks or chains, and is committed."""
    try:
        announce("inventory.changed", "hypervisor", hypervisor_id, [hypervisor_group(hypervisor_id), DASHBOARD_GROUP])
    except Exception:
        log.exception("could not publish the inventory change of hypervisor %s", hypervisor_id)
