"""Idempotency on PostgreSQL: tests/test_api_idempotency.py (two concurrent requests with one
key among them) runs again in a pytest of its own against a fresh database in the private
cluster of `make postgres` (127.0.0.1:5439), where the unique constraint on (user, key) is
PostgreSQL's, with real concurrent transactions rather than SQLite's one writer."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from django.conf import settings

from tests.postgres import PG_SERVER, ensure_postgres

REPO = Path(__file__).resolve().parents[1]


def test_idempotency_holds_on_postgresql(tmp_path):
    ensure_postgres()
    env = {
        **os.environ,
        "DATABASE_URL": f"{PG_SERVER}/blockmig_idem_{os.getpid()}",
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "BLOCKMIG_CHANNEL_PREFIX": f"idem-{uuid.uuid4().hex[:8]}",
        "BLOCKMIG_VAR_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--create-db", "tests/test_api_idempotency.py"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert " passed" in output and "failed" not in output
