"""Waking workers at once when a migration needs them (Redis pub/sub).

A request, an approval, an abort or a bandwidth change publishes the migration's id after
commit. Every worker listens: the one driving that migration wakes its driver (so a pivot
follows an approval without waiting for a tick), the others wake their claim loop (so a new
request starts in milliseconds). A lost message costs only latency: each worker also polls
every BLOCKMIG_POLL_SECONDS, which is also how an expired lease is noticed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis
from django.conf import settings

from blockmig.live.publish import redis_client

log = logging.getLogger(__name__)


def wake_channel() -> str:
    prefix = settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("prefix", "blockmig")
    return f"{prefix}:wake-workers"


def wake_workers(migration_id: int) -> None:
    """Never raises: without Redis the workers' poll still finds the migration."""
    try:
        redis_client().publish(wake_channel(), str(migration_id))
    except Exception as error:
        log.warning("could not wake the workers for migration %s (%s); their poll will find it", migration_id, error)


class WakeListener(threading.Thread):
    """Calls on_wake(migration_id) for every wake-up, reconnecting after a Redis outage."""

    def __init__(self, on_wake: Callable[[int], None], stopping: threading.Event):
        super().__init__(daemon=True, name="wake-listener")
        self.on_wake = on_wake
        self.stopping = stopping

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(wake_channel())
                while not self.stopping.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "message":
                        try:
                            self.on_wake(int(message["data"]))
                        except ValueError:
                            pass
                pubsub.close()
            except Exception as error:
                log.warning("wake-ups unavailable (%s); polling until Redis answers", error)
                self.stopping.wait(2)
