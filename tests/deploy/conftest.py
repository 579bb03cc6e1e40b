"""The deployment tier: PostgreSQL + Redis + two `run_worker` + two daphne, all real processes.

One deployment per test session, on a fresh database `blockmig_deploy_<pid>` in the private
cluster of `make postgres`, with a channel prefix of its own in the shared Redis so that
parallel sessions never hear each other. Every process runs in its own process group and is
killed with it at the end; the database is dropped.

The test process keeps its own (pytest-django) database. Everything that must happen on the
deployment's database runs in a helper process with the deployment's environment:
`deployment.call(function, **kwargs)` imports `function` by name there, calls it and returns
its JSON result. So lifecycle functions run exactly as a web or worker process runs them,
publishing to the deployment's Redis channels.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from urllib.request import urlopen

import psycopg
import pytest
import redis
from django.conf import settings

from tests.pids import pid_alive
from tests.postgres import PG_PORT, PG_SERVER, ensure_postgres

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's bin: python, daphne
LOG_ROOT = Path("/var/tmp")
# Short leases so a takeover after kill -9 happens within seconds (production: 6 s / 1.5 s / 1 s).
LEASES = {"BLOCKMIG_LEASE_SECONDS": "3", "BLOCKMIG_HEARTBEAT_SECONDS": "1", "BLOCKMIG_POLL_SECONDS": "1"}
START_TIMEOUT = 60.0


# -- services ---------------------------------------------------------------------------------


def _admin_connection() -> psycopg.Connection:
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


# -- processes --------------------------------------------------------------------------------


@dataclass
class Process:
    """One long-running process in its own process group, its output in a log file."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen | None = None

    def start(self) -> Process:
        with open(self.log_path, "a") as log:
            self.popen = subprocess.Popen(
                self.args,
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log())
            if match:
                return match
            if not self.alive():
                break
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not log {pattern!r} (exit code {self.popen.poll()}):\n{self.log()[-3000:]}")

    def kill9(self) -> None:
        """kill -9 of the whole group: what a crashed machine does to a worker."""
        self.signal_group(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen is None:
            return
        if self.alive():
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Also whatever the process left behind in its group.
        self.signal_group(signal.SIGKILL)
        self.popen.wait(10)

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass


SERVE_CALLS = r"""
import importlib, json, sys, traceback
import django
django.setup()
from django.db import close_old_connections
for line in sys.stdin:
    request = json.loads(line)
    module, _, name = request["function"].partition(":")
    try:
        reply = {"result": getattr(importlib.import_module(module), name)(**request["kwargs"])}
    except BaseException:
        reply = {"error": traceback.format_exc()}
    close_old_connections()
    sys.__stdout__.write("\x1eREPLY " + json.dumps(reply, default=str) + "\n")
    sys.__stdout__.flush()
"""


class RemoteError(AssertionError):
    """A function called on the deployment raised; the message is its traceback."""


class CallServer:
    """A Django process on the deployment's database that runs module-level functions for
    the tests (as the web and the workers would run them: same settings, same Redis)."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.log = open(log_path, "a")
        self.popen = subprocess.Popen(
            [sys.executable, "-c", SERVE_CALLS],
            cwd=REPO,
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            start_new_session=True,
        )

    def call(self, function: Callable, **kwargs):
        request = {"function": f"{function.__module__}:{function.__qualname__}", "kwargs": kwargs}
        self.popen.stdin.write(json.dumps(request) + "\n")
        self.popen.stdin.flush()
        for line in self.popen.stdout:
            if line.startswith("\x1eREPLY "):
                reply = json.loads(line.removeprefix("\x1eREPLY "))
                if "error" in reply:
                    raise RemoteError(f"{request['function']} failed on the deployment:\n{reply['error']}")
                return reply["result"]
        raise RemoteError(f"the call server exited ({self.popen.poll()}); see {self.log.name}")

    def stop(self) -> None:
        self.popen.stdin.close()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)
        self.log.close()


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
    with _admin_connection() as admin:
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
        with _admin_connection() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        r = redis.Redis.from_url(settings.REDIS_URL)
        for key in r.scan_iter(f"{deployment.env['BLOCKMIG_CHANNEL_PREFIX']}*"):
            r.delete(key)
        shutil.rmtree(log_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def deployment_session() -> Iterator[Deployment]:
    with running_deployment("deploy", processes=2) as deployment:
        yield deployment


@pytest.fixture
def deployment(deployment_session: Deployment) -> Iterator[Deployment]:
    yield deployment_session
    deployment_session.revive_workers()


# -- lab domains --------------------------------------------------------------------------------


@pytest.fixture
def lab_domains():
    """Small BIOS-only domains on the real libvirtd (tests/lab/engine_helpers.DomainFactory).

    Not the full `lab` fixture: these tests need running domains with qcow2 disks, not the
    seed guest, and building it would cost this tier most of its time budget. The names
    start with `bmtest-<pid>-`, so the lab tier's stale-lab cleanup removes them too.
    """
    if os.geteuid() != 0 or shutil.which("virsh") is None:
        pytest.fail("needs root and libvirt (make services)")
    from hosts.lab.services import ensure_libvirtd
    from tests.lab.engine_helpers import DomainFactory

    ensure_libvirtd()
    verdict = LOG_ROOT / "blockmig-test-virt_type"
    # A BIOS-only guest runs under either; use KVM only where the lab tier found it works.
    virt_type = verdict.read_text().strip() if verdict.exists() else "qemu"
    lab = SimpleNamespace(prefix=f"bmtest-{os.getpid()}-deploy-", virt_type=virt_type)
    factory = DomainFactory(lab, LOG_ROOT / f"blockmig-deploy-lab-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    yield factory
    factory.cleanup()
