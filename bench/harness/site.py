"""The lab benches' throwaway site: a database and var dir of their own (SQLite, or a
database in the private PostgreSQL on port 5439), a wake/channel prefix of their own in the
shared Redis, and real `manage.py run_worker` processes on it."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.machine import ROOT, proc_cpu_seconds

PG_SERVER = "postgres://postgres@127.0.0.1:5439"


class Environment:
    """A throwaway database and var dir, shared by the bench process and its workers."""

    def __init__(self, db: str):
        self.db = db
        self.var = Path(tempfile.mkdtemp(prefix="blockmig-bench-engine-"))
        self.pg_name = f"blockmig_bench_{os.getpid()}"
        os.environ["BLOCKMIG_VAR_DIR"] = str(self.var)
        os.environ["BLOCKMIG_CHANNEL_PREFIX"] = f"benchengine{os.getpid()}"
        os.environ["BLOCKMIG_LOG_LEVEL"] = "WARNING"
        os.environ["DJANGO_DEBUG"] = "0"
        # Production settings refuse to start without a key; a throwaway one for the bench,
        # its workers and the bench_migration.py subprocess.
        os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
        if db == "postgres":
            import psycopg

            with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=3) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')
                admin.execute(f'CREATE DATABASE "{self.pg_name}"')
            os.environ["DATABASE_URL"] = f"{PG_SERVER}/{self.pg_name}"
        else:
            os.environ["DATABASE_URL"] = f"sqlite:///{self.var / 'db.sqlite3'}"
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "blockmig.settings")
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)

    def cleanup(self) -> None:
        from django.db import connections

        connections.close_all()
        if self.db == "postgres":
            try:
                import psycopg

                with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=3) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')
            except Exception as error:
                print(f"could not drop database {self.pg_name}: {error}")
        shutil.rmtree(self.var, ignore_errors=True)


class WorkerProcess:
    """One real `manage.py run_worker` on the bench's database."""

    count = 0

    def __init__(self, var: Path, slots: int):
        WorkerProcess.count += 1
        self.label = f"worker-{WorkerProcess.count}"
        self.log_path = var / f"{self.label}.log"
        env = {**os.environ, "BLOCKMIG_WORKER_SLOTS": str(slots), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "run_worker"],
            cwd=ROOT,
            env=env,
            stdout=open(self.log_path, "w"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Up once it logged its slots line; the wake-up subscription follows on a thread."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "migration slots" in self.log_path.read_text(errors="replace"):
                time.sleep(0.5)
                return
            if not self.alive():
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.label} did not start:\n{self.log_path.read_text(errors='replace')[-3000:]}")

    def cpu(self) -> float:
        return proc_cpu_seconds(self.pid)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def owner_pid(owner: str) -> int | None:
    """lease_owner is `<host>:<pid>:<random>` (blockmig.leases.new_worker_id)."""
    parts = owner.split(":")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None


def workers_cpu(workers: list[WorkerProcess]) -> float:
    return sum(w.cpu() for w in workers)
