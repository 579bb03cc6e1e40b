"""The private PostgreSQL cluster the suite uses (`make postgres`: 127.0.0.1:5439, trust
auth, throwaway data), started here if a test needs it and it is not up."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
from django.conf import settings

REPO = Path(__file__).resolve().parents[1]
PG_PORT = 5439
PG_SERVER = f"postgres://postgres@127.0.0.1:{PG_PORT}"


def ensure_postgres() -> None:
    try:
        psycopg.connect(f"{PG_SERVER}/postgres", connect_timeout=3).close()
    except psycopg.OperationalError:
        subprocess.run(["make", "-s", "postgres"], cwd=REPO, check=True)


def pytest_on_postgres(module: str, name: str, tmp_path: Path, *options: str) -> subprocess.CompletedProcess:
    """Run the tests of `module` in a pytest of its own against a fresh database `name` in
    this cluster (its own channel prefix and var dir); fails with the output's tail unless
    they all passed. Returns the run, for tests that read figures from its output."""
    ensure_postgres()
    env = {
        **os.environ,
        "DATABASE_URL": f"{PG_SERVER}/{name}_{os.getpid()}",
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "BLOCKMIG_CHANNEL_PREFIX": f"{name}-{uuid.uuid4().hex[:8]}",
        "BLOCKMIG_VAR_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *options, "--create-db", module],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert " passed" in output and "skipped" not in output and "failed" not in output, output[-4000:]
    return done
