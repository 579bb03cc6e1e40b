"""The `blockmig` command-line client against a live server (pytest-django's live_server:
real HTTP, the real API, the test database), never a mock. Each test has its own config
directory; the token is stored 0600."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.core.cache import caches

from blockmig import cli
from blockmig.api.models import ApiToken
from blockmig.api.tokens import token_create
from blockmig.cli import client, commands, exits
from blockmig.models import AuditEvent, Migration, MigrationDisk
from blockmig.states import State
from hosts.models import ChainLayer, Disk, Domain, Hypervisor
from tests.helpers import PASSWORD

REPO = Path(__file__).resolve().parent.parent
UUID = "0b1e0000-0000-4000-8000-0000000000c1"
GIB = 1024**3


@pytest.fixture(autouse=True)
def fresh_rate_limits():
    """Each test starts with empty rate-limit counts (the token sign-in's bucket is per address)."""
    caches["api"].clear()


@pytest.fixture
def config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("BLOCKMIG_URL", raising=False)
    monkeypatch.delenv("BLOCKMIG_TOKEN", raising=False)
    monkeypatch.setattr(commands, "POLL_SECONDS", 0.05)
    return tmp_path / "config"


@pytest.fixture
def inventory(transactional_db):
    host = Hypervisor.objects.create(name="kvm01", uri="qemu+tcp://unreachable.invalid/system", allowed_roots=["/backups"])
    domain = Domain.objects.create(hypervisor=host, uuid=UUID, name="testvm", state="running")
    disk = Disk.objects.create(domain=domain, target="vda", format="qcow2", source="/images/snap2.qcow2")
    for depth, name in enumerate(["snap2", "snap1", "base"]):
        ChainLayer.objects.create(
            disk=disk, depth=depth, path=f"/images/{name}.qcow2", format="qcow2", allocation=(3 - depth) * 2**20
        )
    return host


def migration(host, user, state=State.READY, **fields) -> Migration:
    m = Migration.objects.create(
        hypervisor=host, domain_uuid=UUID, domain_name="testvm", state=state, requested_by=user, **fields
    )
    MigrationDisk.objects.create(migration=m, hypervisor=host, domain_uuid=f"u-{m.pk}", target="vda",
                                 source_path="/images/snap2.qcow2", destination="/backups/copy.qcow2")  # fmt: skip
    return m


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def login(live_server, config_home, users, capsys):
    """login("approver") signs the CLI in with a fresh token of that user."""

    def sign_in(role: str) -> str:
        _, plain = token_create(user=users[role], name=f"cli-{role}-{ApiToken.objects.count()}")
        code, out, err = run(capsys, "login", live_server.url, "--token", plain)
        assert code == 0, err
        return out

    return sign_in


def test_login_with_a_token_stores_it_0600(login, live_server, config_home):
    out = login("viewer")
    assert f"Signed in to {live_server.url} as viewer (viewer)" in out
    path = config_home / "blockmig" / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = json.loads(path.read_text())
    assert stored["url"] == live_server.url and stored["token"].startswith("bm_")


def test_login_with_user_and_password_creates_a_token(live_server, config_home, users, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    code, out, err = run(capsys, "login", live_server.url, "--user", "operator", "--password-stdin", "--name", "laptop")
    assert code == 0, err
    assert "Created the token “laptop”" in out and "as operator (operator)" in out
    token = ApiToken.objects.get(user=users["operator"])
    assert token.name == "laptop" and token.last_used_at is not None


def test_login_with_a_wrong_password_exits_4(live_server, config_home, users, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("wrong\n"))
    code, _, err = run(capsys, "login", live_server.url, "--user", "operator", "--password-stdin")
    assert code == exits.DENIED and "do not match an active account" in err
    assert not (config_home / "blockmig" / "config.json").exists()


def test_not_signed_in_exits_4_saying_how(config_home, capsys):
    code, _, err = run(capsys, "hosts")
    assert code == exits.DENIED and "blockmig login URL" in err


def test_unreachable_server_exits_6(config_home, capsys, monkeypatch):
    monkeypatch.setenv("BLOCKMIG_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("BLOCKMIG_TOKEN", "bm_abcdefgh_" + "x" * 43)
    monkeypatch.setattr(client.time, "sleep", lambda s: None)
    code, _, err = run(capsys, "hosts")
    assert code == exits.UNREACHABLE and "cannot reach http://127.0.0.1:9" in err


def test_usage_error_exits_2(config_home, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["migrate", "kvm01"])
    assert exited.value.code == exits.USAGE


def test_hosts_and_chain(login, inventory, capsys):
    login("viewer")
    code, out, _ = run(capsys, "hosts")
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:4] == ["NAME", "HEALTH", "DOMAINS", "RUNNING"] and row.split()[:4] == ["kvm01", "unknown", "1", "1"]
    code, out, _ = run(capsys, "chain", "kvm01", "testvm", "vda")
    assert code == 0 and out == "/images/base.qcow2 ← /images/snap1.qcow2 ← /images/snap2.qcow2\n"
    code, out, _ = run(capsys, "chain", "kvm01", UUID, "vda", "-v")
    assert "active     /images/snap2.qcow2  qcow2  3.0 MiB" in out and "backing 2  /images/base.qcow2" in out


def test_unknown_disk_exits_4_naming_the_disks(login, inventory, capsys):
    login("viewer")
    code, _, err = run(capsys, "chain", "kvm01", "testvm", "vdz")
    assert code == exits.DENIED and "testvm has no disk vdz (it has vda)." in err


def test_migrate_refused_with_the_forms_message_exits_3(login, inventory, capsys):
    login("operator")
    code, out, err = run(capsys, "migrate", "kvm01", "testvm", "vda", "/etc/copy.qcow2")
    assert code == exits.REFUSED and out == ""
    assert "/etc/copy.qcow2 is outside the allowed roots (/backups)." in err
    assert Migration.objects.count() == 0


def test_migrate_as_viewer_exits_4(login, inventory, capsys):
    login("viewer")
    code, _, err = run(capsys, "migrate", "kvm01", "testvm", "vda", "/backups/c.qcow2", "--full")
    assert code == exits.DENIED and "Starting a migration needs the operator role." in err


def test_approve_four_eyes_then_another_approver(login, inventory, users, capsys):
    m = migration(inventory, users["approver"])
    login("approver")
    code, _, err = run(capsys, "approve", m.pk)
    assert code == exits.REFUSED and "another approver must approve it (four eyes)" in err
    login("admin")
    code, out, _ = run(capsys, "approve", m.pk)
    assert code == 0 and out == f"Migration #{m.pk} approved: pivoting.\n"
    event = AuditEvent.objects.get(migration=m, event_type="approved")
    assert event.actor == users["admin"] and event.via.startswith("api token “cli-admin")


def test_abort_and_bandwidth(login, inventory, users, capsys):
    m = migration(inventory, users["operator"], State.COPYING)
    login("operator")
    code, out, _ = run(capsys, "bandwidth", m.pk, 25)
    assert code == 0 and "bandwidth limit 25 MiB/s" in out
    code, out, _ = run(capsys, "abort", m.pk)
    assert code == 0 and out == f"Migration #{m.pk}: aborting; the guest stays on its source.\n"
    code, _, err = run(capsys, "approve", m.pk)
    assert code == exits.DENIED and "Only a user with the approver role" in err


def test_migrations_listing(login, inventory, users, capsys):
    migration(inventory, users["operator"], State.COPYING, bytes_done=GIB // 4, bytes_total=GIB)
    login("viewer")
    code, out, _ = run(capsys, "migrations", "--state", "copying")
    assert code == 0 and "25.0 %" in out and "testvm" in out


@pytest.mark.parametrize(("end", "exit_code"), [(State.COMPLETED, exits.OK), (State.FAILED, exits.MIGRATION_FAILED)])
def test_watch_draws_progress_and_exits_by_the_end(login, inventory, users, capsys, end, exit_code):
    m = migration(inventory, users["operator"], State.COPYING, bytes_done=GIB // 2, bytes_total=GIB, rate_bps=64 * 2**20)
    login("viewer")

    def finish():
        time.sleep(0.5)
        Migration.objects.filter(pk=m.pk).update(state=State.READY, bytes_done=GIB)
        time.sleep(0.5)
        Migration.objects.filter(pk=m.pk).update(state=end, failure_reason="disk full" if end == State.FAILED else "")

    worker = threading.Thread(target=finish)
    worker.start()
    try:
        code, out, err = run(capsys, "watch", m.pk)
    finally:
        worker.join()
    assert code == exit_code
    assert "[##############..............]  50.0 %  512.0 MiB of 1.0 GiB  64.0 MiB/s  ETA 8 s  copying" in err
    assert "mirror in sync  ready" in err and f"blockmig approve {m.pk}" in err
    assert out == (f"Migration #{m.pk} completed\n" if end == State.COMPLETED else f"Migration #{m.pk} failed: disk full\n")


def test_watch_of_a_queued_migration_says_its_place_and_what_it_waits_for(login, inventory, users, capsys):
    for _ in range(2):  # the host's default limit: two copies at once
        migration(inventory, users["operator"], State.COPYING, bytes_done=GIB // 2, bytes_total=GIB)
    queued = migration(inventory, users["operator"], State.QUEUED)
    login("viewer")

    def aborted():
        time.sleep(0.5)
        Migration.objects.filter(pk=queued.pk).update(state=State.ABORTED)

    worker = threading.Thread(target=aborted)
    worker.start()
    try:
        code, out, err = run(capsys, "watch", queued.pk)
    finally:
        worker.join()
    assert code == exits.MIGRATION_FAILED  # aborted: the copy did not happen
    assert "queued, position 1: 2 copies already run on" in err
    assert out == f"Migration #{queued.pk} aborted\n"


def test_audit_since_as_json_and_csv(login, inventory, users, capsys):
    m = migration(inventory, users["operator"], State.READY)
    login("approver")
    run(capsys, "approve", m.pk)
    code, out, _ = run(capsys, "audit", "--since", "1h", "--format", "json")
    events = json.loads(out)
    assert code == 0 and [e["event_type"] for e in events if e["migration"] == m.pk] == ["approved"]
    assert events[0]["via"].startswith("api token")
    code, out, _ = run(capsys, "audit", "--since", "1h", "--format", "csv", "--event-type", "approved")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [(r["event_type"], r["actor"], r["migration"]) for r in rows] == [("approved", "approver", str(m.pk))]
    code, _, err = run(capsys, "audit", "--since", "yesterday")
    assert code == exits.USAGE and "give an age like 1h" in err


def test_since_reads_ages_and_times():
    from datetime import UTC, datetime

    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    assert commands.since_to_iso("1h", now) == "2026-12-03T11:00:00+00:00"
    assert commands.since_to_iso("90m", now) == "2026-12-03T10:30:00+00:00"
    assert commands.since_to_iso("2026-12-01T08:00") == "2026-12-01T08:00:00+00:00"


def test_the_client_does_not_import_django():
    """The CLI runs where Django is not installed: importing it pulls in no Django module, and
    the installed entry point answers --help."""
    probe = "import sys, blockmig.cli; print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
    script = Path(sys.executable).with_name("blockmig")
    helped = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "Exit codes: 0 ok" in helped.stdout
