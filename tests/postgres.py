"""The private PostgreSQL cluster the suite uses (`make postgres`: 127.0.0.1:5439, trust
auth, throwaway data), started here if a test needs it and it is not up."""

import subprocess
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
PG_PORT = 5439
PG_SERVER = f"postgres://postgres@127.0.0.1:{PG_PORT}"


def ensure_postgres() -> None:
    try:
        psycopg.connect(f"{PG_SERVER}/postgres", connect_timeout=3).close()
    except psycopg.OperationalError:
        subprocess.run(["make", "-s", "postgres"], cwd=REPO, check=True)
