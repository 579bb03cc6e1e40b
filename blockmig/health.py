"""Health for load balancers and orchestrators, and the worker heartbeat it reads.

- `/healthz`: this process answers (no database, no Redis): restart me if this fails.
- `/readyz`: the database answers, Redis answers, and at least one worker is alive: send
  me traffic. 503 with JSON naming what is down otherwise.

A worker is alive while its heartbeat key in Redis has not lapsed: every worker's claim
loop sets `<prefix>:worker-alive:<worker id>` with a lifetime of BLOCKMIG_WORKER_ALIVE_SECONDS
and renews it every third of that, so a worker that died or hangs drops out by itself,
whatever process or machine asks.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from blockmig.live.publish import redis_client

log = logging.getLogger(__name__)


def _prefix() -> str:
    return settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("prefix", "blockmig")


def heartbeat_key(worker_id: str) -> str:
    return f"{_prefix()}:worker-alive:{worker_id}"


class WorkerHeartbeat:
    """Called from the worker's claim loop on every pass; writes at most every third of the
    lifetime and never raises (a Redis outage makes the worker look dead, not crash)."""

    def __init__(self, worker_id: str):
        self.worker_id = worker_id
        self.started = time.time()
        self.next_beat = 0.0

    def beat(self) -> None:
        now = time.monotonic()
        if now < self.next_beat:
            return
        lifetime = settings.BLOCKMIG_WORKER_ALIVE_SECONDS
        value = json.dumps({"worker": self.worker_id, "host": socket.gethostname(), "pid": os.getpid(), "started": self.started})
        try:
            redis_client().set(heartbeat_key(self.worker_id), value, px=int(lifetime * 1000))
            self.next_beat = now + lifetime / 3
        except Exception as error:
            log.warning("worker %s: heartbeat not written (%s)", self.worker_id, error)
            self.next_beat = now + 1

    def forget(self) -> None:
        """A worker that stops cleanly stops counting at once."""
        try:
            redis_client().delete(heartbeat_key(self.worker_id))
        except Exception as error:
            log.warning("worker %s: heartbeat not removed (%s); it lapses by itself", self.worker_id, error)


def live_workers() -> list[dict]:
    """The heartbeats that have not lapsed (raises if Redis does not answer)."""
    client = redis_client()
    keys = list(client.scan_iter(match=heartbeat_key("*"), count=500))
    found = []
    for raw in client.mget(keys) if keys else []:
        if raw:
            try:
                found.append(json.loads(raw))
            except ValueError:
                continue
    return found


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:
        return f"database: {error}".strip()
    return ""


def readiness() -> tuple[dict[str, str], list[str]]:
    """What each dependency says, and the ones that are down (with what to look at)."""
    checks: dict[str, str] = {}
    down: list[str] = []
    problem = _check_database()
    checks["database"] = "down" if problem else "ok"
    if problem:
        down.append(problem)
    try:
        redis_client().ping()
        checks["redis"] = "ok"
    except Exception as error:
        checks["redis"] = checks["workers"] = "down"
        down.append(f"redis: {error} (workers cannot be counted without it)")
        return checks, down
    workers = live_workers()
    checks["workers"] = str(len(workers))
    if not workers:
        down.append(
            f"workers: no worker heartbeat in the last {settings.BLOCKMIG_WORKER_ALIVE_SECONDS:g} s; start one with `manage.py run_worker`"
        )
    return checks, down


@login_not_required
@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@login_not_required
@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    checks, down = readiness()
    if down:
        return JsonResponse({"status": "unavailable", "checks": checks, "down": down}, status=503)
    return JsonResponse({"status": "ok", "checks": checks})
