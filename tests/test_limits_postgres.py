"""The copy limits hold when many threads race for slots on PostgreSQL (the database decides,
with the hypervisor's row lock): tests/limits_race_on_postgres.py runs in a pytest of its own
against a fresh database in the private cluster of `make postgres` (127.0.0.1:5439)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from django.conf import settings

from tests.postgres import PG_SERVER, ensure_postgres

REPO = Path(__file__).resolve().parents[1]


def test_slots_never_exceed_the_limits_when_threads_race_on_postgresql(tmp_path):
    ensure_postgres()
    name = f"blockmig_limits_{os.getpid()}"
    env = {
        **os.environ,
        "DATABASE_URL": f"{PG_SERVER}/{name}",
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "BLOCKMIG_CHANNEL_PREFIX": f"limits-race-{uuid.uuid4().hex[:8]}",
        "BLOCKMIG_VAR_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s", "--create-db", "tests/limits_race_on_postgres.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    figures = json.loads(next(line for line in done.stdout.splitlines() if line.startswith('{"admitted"')))
    assert figures["worst_on_host"] <= 3 and figures["worst_into_root"] <= 2
    assert figures["admitted"] >= 10
