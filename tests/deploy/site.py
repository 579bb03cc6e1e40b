"""One deployment: PostgreSQL + Redis + `run_worker` and daphne processes on a database of its
own, started and torn down by `running_deployment` (the deployment and browser tiers)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.request import urlopen

import psycopg
import redis
from django.conf import settings

from tests.deploy.processes import REPO, START_TIMEOUT, CallServer, Process
from tests.pids import pid_alive
from tests.postgres import PG_SERVER, ensure_postgres

BIN = Path(sys.executable).parent  # the venv's bin: python, daphne
LOG_ROOT = Path("/var/tmp")
# Short leases so a takeover after kill -9 happens within seconds (production: 6 s / 1.5 s / 1 s).
LEASES = {"BLOCKMIG_LEASE_SECONDS": "3", "BLOCKMIG_HEARTBEAT_SECONDS": "1", "BLOCKMIG_POLL_SECONDS": "1"}


# -- services ---------------------------------------------------------------------------------


def admin_connection() -> psycopg.Connection:
    return psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=3)


def ensure_redis() -> None:
    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2).ping()
    except redis.ConnectionError:
        subprocess.run(["make", "-s", "redis"], cwd=REPO, check=True)


def drop_stale_databases(connection: psycopg.Connection, prefix: str) -> None:
    """Databases of sessions that died without tearing down."""
    names = connection.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [prefix + "%"]).fetchall()
    for (name,) in names:
        pid = name.removeprefix(prefix)
        if pid.isdigit() and not pid_alive(int(pid)):
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Daphne:
    process: Process
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


@dataclass
class Deployment:
    database: str
    env: dict[str, str]
    log_dir: Path
    daphnes: list[Daphne] = field(default_factory=list)
    workers: list[Process] = field(default_factory=list)
    server: CallServer | None = None

    def manage(self, *args: str) -> None:
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}{done.stderr}")

    def start_worker(self, index: int) -> Process:
        worker = Process(
            f"worker-{index}",
            [sys.executable, "manage.py", "run_worker", "-v", "1"],
            {**self.env, **LEASES},
            self.log_dir / f"worker-{index}.log",
        ).start()
        if index < len(self.workers):
            self.workers[index] = worker
        else:
            self.workers.append(worker)
        return worker

    def start_daphne(self, index: int) -> Daphne:
        # Port 0: the kernel picks a free port and daphne logs it; no race with other sessions.
        process = Process(
            f"daphne-{index}",
            [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", "0", "blockmig.asgi:application"],
            self.env,
            self.log_dir / f"daphne-{index}.log",
        ).start()
        daphne = Daphne(process)
        self.daphnes.append(daphne)
        return daphne

    def worker_with_pid(self, pid: int) -> Process:
        return next(w for w in self.workers if w.pid == pid)

    def revive_workers(self) -> None:
        """Restart any worker a test killed, so the next test has two again."""
        for index, worker in enumerate(self.workers):
            if not worker.alive():
                wait_for_worker(self.start_worker(index))

    def call(self, function: Callable, **kwargs):
        return self.server.call(function, **kwargs)

    def stop(self) -> None:
        for process in [*self.workers, *(d.process for d in self.daphnes)]:
            process.stop()
        if self.server is not None:
            self.server.stop()


def wait_for_worker(worker: Process) -> None:
    worker.wait_for_log(r"worker \S+: \d+ migration slots")


def wait_for_daphne(daphne: Daphne) -> None:
    daphne.port = int(daphne.process.wait_for_log(r"Listening on TCP address 127\.0\.0\.1:(\d+)").group(1))
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            with urlopen(f"{daphne.url}/accounts/login/", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def deployment_env(database: str, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(
        DJANGO_SETTINGS_MODULE="blockmig.settings",
        DATABASE_URL=f"{PG_SERVER}/{database}",
        REDIS_URL=settings.REDIS_URL,
        BLOCKMIG_CHANNEL_PREFIX=prefix,
        DJANGO_DEBUG="0",
        # Both daphnes must share it: the session's auth hash is signed with it.
        DJANGO_SECRET_KEY=f"deploy-test-{uuid.uuid4().hex}{uuid.uuid4().hex}",
        PYTHONUNBUFFERED="1",
    )
    return env


@contextmanager
def running_deployment(kind: str, processes: int) -> Iterator[Deployment]:
    """A database of its own, `processes` workers and as many daphne, all torn down after."""
    ensure_postgres()
    ensure_redis()
    pid = os.getpid()
    prefix = f"blockmig_{kind}_"
    database = f"{prefix}{pid}"
    log_dir = LOG_ROOT / f"blockmig-{kind}-{pid}"
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    with admin_connection() as admin:
        drop_stale_databases(admin, prefix)
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{database}"')
    deployment = Deployment(database, deployment_env(database, f"bm{kind}{pid}-{uuid.uuid4().hex[:6]}"), log_dir)
    try:
        deployment.manage("migrate", "--noinput")
        deployment.manage("setup_roles")
        for index in range(processes):
            deployment.start_worker(index)
            deployment.start_daphne(index)
        deployment.server = CallServer(deployment.env, log_dir / "calls.log")
        for worker in deployment.workers:
            wait_for_worker(worker)
        for daphne in deployment.daphnes:
            wait_for_daphne(daphne)
        yield deployment
    finally:
        deployment.stop()
        with admin_connection() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        r = redis.Redis.from_url(settings.REDIS_URL)
        for key in r.scan_iter(f"{deployment.env['BLOCKMIG_CHANNEL_PREFIX']}*"):
            r.delete(key)
        shutil.rmtree(log_dir, ignore_errors=True)
