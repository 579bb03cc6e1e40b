"""/healthz and /readyz: readiness needs the database, Redis and a live worker, and the
worker counted is a real `manage.py run_worker` process."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client

from blockmig.health import WorkerHeartbeat, heartbeat_key
from blockmig.live.publish import redis_client
from tests.helpers import wait_until

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def redis_prefix(settings):
    """A key prefix of this test's own, so other engineers' workers on the shared Redis do
    not count here; its keys are removed afterwards."""
    prefix = f"test-health-{uuid.uuid4().hex[:8]}"
    layers = copy.deepcopy(django_settings.CHANNEL_LAYERS)
    layers["default"].setdefault("CONFIG", {})["prefix"] = prefix
    settings.CHANNEL_LAYERS = layers
    yield prefix
    client = redis_client()
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)


def test_healthz_answers_without_touching_the_database():
    # No database fixture: pytest-django makes any database access here an error.
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_health_needs_no_login(db):
    anonymous = Client()
    assert anonymous.get("/healthz").status_code == 200
    assert anonymous.get("/readyz").status_code in (200, 503)  # never the login page


def test_readyz_is_503_and_names_the_workers_when_none_is_alive(db, redis_prefix):
    response = Client().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"] == {"database": "ok", "redis": "ok", "workers": "0"}
    assert any(line.startswith("workers: no worker heartbeat") and "run_worker" in line for line in body["down"])


def test_a_lapsed_heartbeat_does_not_count(db, redis_prefix, settings):
    settings.BLOCKMIG_WORKER_ALIVE_SECONDS = 0.2
    WorkerHeartbeat("w-gone").beat()
    assert redis_client().exists(heartbeat_key("w-gone"))
    wait_until(lambda: not redis_client().exists(heartbeat_key("w-gone")), "the heartbeat lapsing", timeout=10)
    assert Client().get("/readyz").status_code == 503


def test_readyz_is_200_while_a_real_worker_runs_and_503_after_it_stops(transactional_db, redis_prefix, tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{connection.settings_dict['NAME']}",
        "DJANGO_SECRET_KEY": django_settings.SECRET_KEY,
        "BLOCKMIG_CHANNEL_PREFIX": redis_prefix,
        "BLOCKMIG_POLL_SECONDS": "0.5",
    }
    log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "run_worker"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        response = wait_until(
            lambda: (r := Client().get("/readyz")).status_code == 200 and r,
            "readyz turning 200 with a worker running",
            timeout=60,
        )
        assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok", "workers": "1"}}
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    # A worker that stops cleanly takes its heartbeat with it.
    assert Client().get("/readyz").status_code == 503, (tmp_path / "worker.log").read_text()
