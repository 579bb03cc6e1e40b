"""The seed scenario through the command-line client: `blockmig migrate … --wait` starts the
shallow copy of the seed chain and follows it, another person's `blockmig approve` lets it
pivot, and the guest ends on the copy. A real server (pytest-django's live_server), a real
worker process, real libvirtd and QEMU; the CLI runs as its installed entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from blockmig.api.tokens import token_create
from blockmig.models import AuditEvent, Migration
from hosts.lab.seed import list_files_in_image
from hosts.sync.hypervisor import hypervisor_sync
from tests.helpers import wait_for_state, wait_until
from tests.lab.engine_helpers import chain_paths, make_hypervisor

pytestmark = pytest.mark.lab

BLOCKMIG = str(Path(sys.executable).with_name("blockmig"))


def signed_in(live_server, user, config: Path) -> dict:
    """An environment whose `blockmig` is signed in as `user` (through `blockmig login`)."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(config)}
    env.pop("BLOCKMIG_URL", None)
    env.pop("BLOCKMIG_TOKEN", None)
    _, token = token_create(user=user, name="lab cli")
    done = subprocess.run(
        [BLOCKMIG, "login", live_server.url, "--token", token], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return env


def blockmig(env: dict, *args) -> subprocess.CompletedProcess:
    return subprocess.run([BLOCKMIG, *map(str, args)], env=env, capture_output=True, text=True, timeout=120)


def test_seed_migration_started_watched_and_approved_through_the_cli(domains, people, worker, live_server, tmp_path):
    vm = domains.seed()
    snap2, snap1, base = (str(p) for p in [vm.disks[0].path, vm.directory / "snap1.qcow2", vm.directory / "base.qcow2"])
    copy = str(vm.backups / "copy.qcow2")
    host = make_hypervisor([vm.backups])
    assert hypervisor_sync(host).ok
    operator = signed_in(live_server, people["operator"], tmp_path / "operator")
    approver = signed_in(live_server, people["approver"], tmp_path / "approver")

    hosts = blockmig(operator, "hosts")
    assert hosts.returncode == 0 and "lab" in hosts.stdout.split()
    chain = blockmig(operator, "chain", "lab", vm.name, "vda")
    assert chain.returncode == 0 and chain.stdout == f"{base} ← {snap1} ← {snap2}\n"

    watcher = subprocess.Popen(
        [BLOCKMIG, "migrate", "lab", vm.name, "vda", copy, "--shallow", "--wait"],
        env=operator, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(watcher.stderr), daemon=True)
    reader.start()
    try:
        migration = wait_until(lambda: Migration.objects.filter(domain_uuid=vm.uuid).first(), "the CLI's request", timeout=60)
        wait_for_state(migration, "ready", timeout=60, why=lambda: worker.log_path.read_text())
        # The watcher tells the person what it waits for; the approver acts on that.
        wait_until(
            lambda: any("Mirror ready" in line for line in lines), f"the watcher's ready line (so far: {lines})", timeout=30
        )
        assert vm.sources()["vda"] == snap2  # nothing pivots before an approval

        own = blockmig(operator, "approve", migration.pk)  # the operator has no approver role
        assert own.returncode == 4 and "Only a user with the approver role can approve a pivot." in own.stderr
        approved = blockmig(approver, "approve", migration.pk)
        assert approved.returncode == 0, approved.stderr
        assert approved.stdout == f"Migration #{migration.pk} approved: pivoting.\n"

        out = watcher.stdout.read()
        watcher.wait(120)
        reader.join(30)
        err = "".join(lines)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0, f"{out}\n{err}\n{worker.log_path.read_text()}"
    assert out == f"Migration #{migration.pk} requested (shallow: vda → {copy}).\nMigration #{migration.pk} completed\n"
    # The progress bar went through the copy and said what it waited for.
    assert "mirror in sync  ready" in err and f"`blockmig approve {migration.pk}`" in err
    assert "  completed" in err.splitlines()[-1] and "100.0 %" in err.splitlines()[-1]

    assert vm.sources()["vda"] == copy and vm.sources(inactive=True)["vda"] == copy
    assert chain_paths(copy) == [copy, snap1, base]
    assert list_files_in_image(copy) == ["bar", "baz", "foo"]
    trail = {e.event_type: e for e in AuditEvent.objects.filter(migration=migration)}
    assert trail["requested"].actor_name == "operator" and trail["requested"].via == "api token “lab cli”"
    assert trail["approved"].actor_name == "approver" and trail["approved"].via == "api token “lab cli”"
    assert trail["completed"].via == ""  # the engine's own step

    audit = blockmig(approver, "audit", "--since", "1h", "--migration", migration.pk, "--format", "json")
    assert audit.returncode == 0
    types = [e["event_type"] for e in json.loads(audit.stdout)]
    for expected in ("requested", "copying", "ready", "approved", "completed"):
        assert expected in types, types
