"""Continuing an interrupted approval on PostgreSQL, where the plan's row lock is a real
`SELECT … FOR UPDATE` (SQLite's IMMEDIATE transactions serialize writers instead): the
tests of tests/test_plan_continue.py, two presses at once among them, run in a pytest of
their own against a fresh database in the private cluster of `make postgres`."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from django.conf import settings

from tests.postgres import PG_SERVER, ensure_postgres

REPO = Path(__file__).resolve().parents[1]


def test_continue_and_two_presses_at_once_on_postgresql(tmp_path):
    ensure_postgres()
    env = {
        **os.environ,
        "DATABASE_URL": f"{PG_SERVER}/blockmig_continue_{os.getpid()}",
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "BLOCKMIG_CHANNEL_PREFIX": f"plan-continue-{uuid.uuid4().hex[:8]}",
        "BLOCKMIG_VAR_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--create-db", "tests/test_plan_continue.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert " passed" in output and "skipped" not in output, output[-4000:]
