"""Faults on the real deployment (PostgreSQL + Redis + two workers + two daphne): issue 8.

PostgreSQL restarted while copying. The private cluster of `make postgres` is restarted
under the running deployment, mid-copy: once with `pg_ctl restart -m fast` (down for well
under a second) and once stopped for two leases before it starts again (every heartbeat and
progress write in that window fails, and the lease runs out meanwhile). Either way the
copy must go on in QEMU, both workers must stay up, and the migration must finish as if
nothing had happened: completed, one copy, the guest on the destination.

This restarts the one private cluster on 127.0.0.1:5439: other test sessions using it at
the same moment see their connections drop. Run the tier on its own.

The people here have names of their own (fault-operator, fault-approver), so this module's
session fixture never collides with test_deployment.py's `people`.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from tests.deploy.processes import RemoteError
from tests.deploy.site import admin_connection
from tests.deploy.test_deployment import count
from tests.helpers import make_people, migration_row, wait_for_state
from tests.lab.engine_helpers import has_block_job
from tests.postgres import PG_PORT

MiB = 2**20
PASSWORD = "pw-deploy-faults"
OPERATOR, APPROVER = "fault-operator", "fault-approver"
PG_DIR = Path(os.environ.get("PG_DIR", "/var/tmp/blockmig-pg"))  # the Makefile's PG_DIR
LEASE_SECONDS = 3  # conftest.LEASES


# -- run inside the deployment ------------------------------------------------------------------


def on_deployment_create_fault_people() -> None:
    make_people([(OPERATOR, "operator"), (APPROVER, "approver")], password=PASSWORD)


def on_deployment_request(domain_uuid: str, destination: str, allowed_root: str, bandwidth_mib: int) -> int:
    from django.contrib.auth.models import User

    from blockmig.lifecycle import DiskRequest, migration_request
    from hosts.models import Hypervisor

    hypervisor = Hypervisor.objects.create(name=f"fault-{domain_uuid[:8]}", uri="qemu:///system", allowed_roots=[allowed_root])
    migration = migration_request(
        user=User.objects.get(username=OPERATOR),
        hypervisor=hypervisor,
        domain_uuid=domain_uuid,
        disks=[DiskRequest("vda", destination)],
        bandwidth_mib=bandwidth_mib,
    )
    return migration.pk


def on_deployment_set_bandwidth(migration_id: int, bandwidth_mib: int) -> None:
    from django.contrib.auth.models import User

    from blockmig.lifecycle import migration_set_bandwidth
    from blockmig.models import Migration

    migration_set_bandwidth(
        migration=Migration.objects.get(pk=migration_id), user=User.objects.get(username=OPERATOR), bandwidth_mib=bandwidth_mib
    )


def on_deployment_approve(migration_id: int) -> None:
    from django.contrib.auth.models import User

    from blockmig.lifecycle import migration_approve
    from blockmig.models import Migration

    migration_approve(migration=Migration.objects.get(pk=migration_id), user=User.objects.get(username=APPROVER))


@pytest.fixture(scope="session")
def fault_people(deployment_session) -> None:
    deployment_session.call(on_deployment_create_fault_people)


# -- the private PostgreSQL ---------------------------------------------------------------------


def pg_ctl(action: str, *options: str) -> None:
    """pg_ctl on the cluster of `make postgres`, as the postgres user (it refuses root).
    The server binary and its options come from postmaster.opts, i.e. what the Makefile used."""
    opts_file = PG_DIR / "data" / "postmaster.opts"
    if not opts_file.exists():
        pytest.fail(f"{opts_file} is missing: is the private PostgreSQL of `make postgres` running?")
    server = Path(shlex.split(opts_file.read_text())[0])
    command = [
        str(server.parent / "pg_ctl"),
        "-D",
        str(PG_DIR / "data"),
        "-l",
        str(PG_DIR / "postgres.log"),
        "-w",
        "-t",
        "60",
        *options,
        action,
    ]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90)
    if done.returncode != 0:
        log = (PG_DIR / "postgres.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"pg_ctl {action} failed: {done.stdout}{done.stderr}\n{log}")


def server_options() -> str:
    """The postgres options of the running cluster (postmaster.opts without the binary and -D),
    for a `pg_ctl start` after a stop (`pg_ctl restart` reuses them by itself)."""
    words = shlex.split((PG_DIR / "data" / "postmaster.opts").read_text())[1:]
    kept = []
    while words:
        word = words.pop(0)
        if word == "-D":
            words.pop(0)
        else:
            kept.append(word)
    return shlex.join(kept)


def postgres_up() -> bool:
    try:
        admin_connection().close()
        return True
    except psycopg.OperationalError:
        return False


def restart_fast() -> None:
    pg_ctl("restart", "-m", "fast")


def stopped_for_two_leases(deployment, migration_id: int) -> None:
    options = server_options()
    pg_ctl("stop", "-m", "fast")
    try:
        assert not postgres_up()
        down_until = time.monotonic() + 2 * LEASE_SECONDS
        # The deployment itself cannot read its database meanwhile (proof the outage is real).
        with pytest.raises(RemoteError, match="OperationalError"):
            deployment.call(migration_row, migration_id=migration_id)
        time.sleep(max(0.0, down_until - time.monotonic()))
    finally:
        pg_ctl("start", "-o", options)


OUTAGES = pytest.mark.parametrize("outage", ["restart", "down_two_leases"])


# -- the test -----------------------------------------------------------------------------------


@pytest.mark.lab
@OUTAGES
def test_postgresql_restarted_while_copying(deployment, fault_people, lab_domains, outage):
    workers_before = {worker.name: worker.pid for worker in deployment.workers}
    vm = lab_domains.images(f"pg-{outage[:4]}", [("vda", "qcow2", 64 * MiB, "write -P 0x5a 0 32M")])
    copy = str(vm.backups / "copy.qcow2")
    # 1 MiB/s keeps 32 MiB copying for half a minute: the outage falls in the middle of it.
    migration_id = deployment.call(
        on_deployment_request, domain_uuid=vm.uuid, destination=copy, allowed_root=str(vm.backups), bandwidth_mib=1
    )
    wait_for_state(migration_id, {"copying"}, timeout=30, on=deployment, why=lambda: logs(deployment))
    time.sleep(1.5)  # a heartbeat and a progress write or two before the fault

    try:
        if outage == "restart":
            restart_fast()
        else:
            stopped_for_two_leases(deployment, migration_id)
    finally:
        if not postgres_up():  # never leave the shared cluster down for the next test
            pg_ctl("start", "-o", server_options())
    assert postgres_up(), f"PostgreSQL does not answer on {PG_PORT} after the {outage}"

    # The copy went on in QEMU, and the row still says so.
    assert has_block_job(vm.name, "vda"), "the block job is gone after the database outage"
    time.sleep(2 * LEASE_SECONDS)  # heartbeats, progress writes (and a takeover, if any) resume
    assert all(worker.alive() for worker in deployment.workers), f"a worker exited:\n{logs(deployment)}"
    row = deployment.call(migration_row, migration_id=migration_id)
    assert row["state"] == "copying", f"{row['state']} ({row['failure_reason']!r})\n{logs(deployment)}"

    deployment.call(on_deployment_set_bandwidth, migration_id=migration_id, bandwidth_mib=0)
    row = wait_for_state(migration_id, {"ready", "failed"}, timeout=60, on=deployment, why=lambda: logs(deployment))
    assert row["state"] == "ready", f"{row['failure_reason']!r}\n{logs(deployment)}"
    assert vm.sources()["vda"] == str(vm.disks[0].path)  # no pivot before the approval
    deployment.call(on_deployment_approve, migration_id=migration_id)
    row = wait_for_state(migration_id, {"completed", "failed"}, timeout=60, on=deployment, why=lambda: logs(deployment))
    assert row["state"] == "completed", f"{row['failure_reason']!r}\n{logs(deployment)}"

    # Both workers rode it out: same processes, still running.
    assert {worker.name: worker.pid for worker in deployment.workers} == workers_before
    assert all(worker.alive() for worker in deployment.workers), f"a worker exited:\n{logs(deployment)}"
    # One copy, never failed or cancelled, the guest and its definition on the destination.
    assert count(row, type="copying") == 1, [(e["type"], e["to_state"]) for e in row["events"]]
    for bad in ("failed", "aborting", "aborted"):
        assert count(row, type=bad) == 0, [(e["type"], e["to_state"]) for e in row["events"]]
    assert count(row, type="bandwidth_changed") == 1
    assert count(row, type="approved", actor=APPROVER) == 1
    assert vm.sources()["vda"] == copy and vm.sources(inactive=True)["vda"] == copy
    assert not has_block_job(vm.name, "vda")


def logs(deployment) -> str:
    """The workers' last lines, for a failure message."""
    return "\n".join(f"--- {w.name} (pid {w.pid}, alive={w.alive()}):\n{w.log()[-3000:]}" for w in deployment.workers)
