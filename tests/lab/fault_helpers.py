"""Pieces of the fault tier (tests/lab/test_faults*.py): waiting for audit events, looking at
what QEMU really holds open, and the one check every fault test ends with.

Everything here reads real state: libvirt through virsh, QEMU through /proc, the files on
disk, the rows in the database. Nothing is mocked.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

from blockmig.models import AuditEvent, Migration
from tests.helpers import wait_for_state, wait_until
from tests.lab.engine_helpers import TestDomain, audit_trail, chain_paths, has_block_job

MiB = 2**20
TERMINAL = {"completed", "failed", "aborted"}


# -- waiting ----------------------------------------------------------------------------------


def wait_for_progress(migration: Migration, timeout: float = 30.0) -> None:
    def moved():
        migration.refresh_from_db()
        return migration.bytes_done > 0

    wait_until(moved, f"progress of migration #{migration.pk}", timeout, 0.1)


def events(migration: Migration, event_type: str | None = None) -> list[AuditEvent]:
    found = AuditEvent.objects.filter(migration=migration)
    if event_type:
        found = found.filter(event_type=event_type)
    return list(found.order_by("created_at", "id"))


def wait_for_event(
    migration: Migration, event_type: str, where: Callable[[AuditEvent], bool] = lambda e: True, timeout: float = 60.0
) -> AuditEvent:
    def found():
        event = next((e for e in events(migration, event_type) if where(e)), None)
        if event is None:
            migration.refresh_from_db()
            if migration.state in TERMINAL:  # it will not come any more: say so at once
                event = next((e for e in events(migration, event_type) if where(e)), None)
                if event is None:
                    raise AssertionError(
                        f"migration #{migration.pk} ended {migration.state} "
                        f"({migration.failure_reason!r}) without an audit event {event_type!r}; "
                        f"audit: {audit_trail(migration)}"
                    )
        return event

    try:
        return wait_until(found, f"audit event {event_type!r} of migration #{migration.pk}", timeout)
    except AssertionError as error:
        migration.refresh_from_db()
        raise AssertionError(
            f"{error}; migration is {migration.state} ({migration.failure_reason!r}); audit: {audit_trail(migration)}"
        ) from None


def wait_for_end(migration: Migration, timeout: float = 90.0) -> Migration:
    """Wait for a terminal state, whichever it is (the test then says which one it wanted)."""
    return wait_for_state(migration, TERMINAL, timeout)


def log_contains(path: Path, text: str) -> bool:
    try:
        return text in Path(path).read_text(errors="replace")
    except OSError:
        return False


# -- worker ids -------------------------------------------------------------------------------


def worker_pid(worker_id: str) -> int | None:
    """The pid inside a worker id "<hostname>:<pid>:<random8>"."""
    parts = str(worker_id).rsplit(":", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def engine_events(migration: Migration) -> list[AuditEvent]:
    """Events the engine wrote (no person behind them)."""
    return [e for e in events(migration) if e.actor_id is None and e.actor_name == "blockmig"]


def driver_of(migration: Migration) -> str:
    """The worker id that started the copy (from the "copying" event, else "preflight")."""
    for event_type in ("copying", "preflight"):
        for event in events(migration, event_type):
            worker = (event.details or {}).get("worker")
            if worker:
                return worker
    raise AssertionError(f"no preflight/copying audit event names its worker: {audit_trail(migration)}")


# -- what QEMU holds --------------------------------------------------------------------------


def qemu_pid(name: str) -> int | None:
    try:
        pid = int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def qemu_open_files(name: str) -> list[tuple[str, bool, os.stat_result]]:
    """(path, deleted, stat of the open file) for each regular file QEMU holds open."""
    pid = qemu_pid(name)
    assert pid is not None, f"QEMU of {name} is not running"
    held = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
            info = os.stat(fd)  # follows the magic link to the open file, deleted or not
        except OSError:
            continue
        if not target.startswith("/") or not (info.st_mode & 0o170000 == 0o100000):
            continue
        deleted = target.endswith(" (deleted)")
        held.append((target.removesuffix(" (deleted)"), deleted, info))
    return held


def assert_qemu_holds_the_file_on_disk(vm: TestDomain, path: str, watched_dirs: Iterable[Path]) -> None:
    """QEMU has `path` open and it is the very file now at that path (same device and inode),
    and QEMU holds no deleted image under the test's directories (a pivot onto an unlinked
    destination would show as one)."""
    held = qemu_open_files(vm.name)
    on_disk = os.stat(path)
    same = [info for p, deleted, info in held if p == path and not deleted]
    assert same, f"QEMU of {vm.name} does not hold {path} open; it holds {[(p, d) for p, d, _ in held]}"
    assert all((i.st_dev, i.st_ino) == (on_disk.st_dev, on_disk.st_ino) for i in same), (
        f"QEMU holds another file than the one now at {path}"
    )
    dirs = [str(d).rstrip("/") + "/" for d in watched_dirs]
    ghosts = [p for p, deleted, _ in held if deleted and any(p.startswith(d) for d in dirs)]
    assert not ghosts, f"QEMU of {vm.name} still writes into deleted files: {ghosts}"


def read_pattern_ok(path: str, byte: int, length: int, fmt: str = "qcow2") -> None:
    done = subprocess.run(
        ["qemu-io", "-U", "-r", "-f", fmt, "-c", f"read -P {byte:#x} 0 {length}", path],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "Pattern verification failed" not in done.stdout, (
        f"{path} does not hold the guest's data ({byte:#x} × {length}): {done.stdout.strip()} {done.stderr.strip()}"
    )


# -- the audit story ----------------------------------------------------------------------------


def assert_subsequence(story: list[str], trail: list[str]) -> None:
    position = 0
    for step in story:
        try:
            position = trail.index(step, position) + 1
        except ValueError:
            raise AssertionError(f"audit trail {trail} does not tell {story} (missing or out of order: {step!r})") from None


def assert_fenced_trail(migration: Migration) -> None:
    """Every engine event names its worker and lease epoch; an epoch belongs to one worker;
    epochs never go back (no event from an older lease after a newer one); each takeover
    names the worker it took over from."""
    owners: dict[int, str] = {}
    newest = None
    for event in engine_events(migration):
        details = event.details or {}
        worker, epoch = details.get("worker"), details.get("epoch")
        where = f"engine event {event.event_type!r} #{event.pk} ({details})"
        assert isinstance(worker, str) and worker, f"{where} carries no worker id"
        assert worker_pid(worker) is not None, f"{where}: worker id is not <hostname>:<pid>:<random8>"
        assert isinstance(epoch, int) and not isinstance(epoch, bool), f"{where} carries no integer lease epoch"
        assert owners.setdefault(epoch, worker) == worker, f"{where}: epoch {epoch} was {owners[epoch]}'s"
        assert newest is None or epoch >= newest, f"{where}: written under epoch {epoch} after epoch {newest}"
        newest = epoch
        if event.event_type == "takeover":
            previous = details.get("previous_worker")
            assert previous and previous != worker, f"{where}: a takeover names the previous worker"


# -- the end of every fault test ----------------------------------------------------------------


def assert_clean_outcome(
    vm: TestDomain,
    migration: Migration,
    *,
    on: dict[str, str] | None,
    story: list[str],
    domain: str = "running",
    kept: dict[str, tuple[int, int]] | None = None,
    pattern: tuple[int, int] | None = None,
) -> None:
    """What an operator finds after the fault, checked on the host and in the database.

    on: target → the file the guest must be on (live and inactive), or None when the domain
        must be gone.
    story: audit event types that must appear, in this order (others may come between).
    domain: "running", "shut off" or "gone".
    kept: destination → (st_dev, st_ino) of a file somebody else put there, which must stay.
    pattern: (byte, length) the guest's data at offset 0 of each completed destination.
    """
    migration.refresh_from_db()
    assert migration.state in TERMINAL, f"migration #{migration.pk} is {migration.state}"
    disks = list(migration.disks.all())
    kept = kept or {}
    watched = {vm.directory} | {Path(d.destination).parent for d in disks}

    if domain == "gone":
        assert vm.state() is None, f"{vm.name} exists again ({vm.state()}), though it was undefined"
    else:
        assert vm.state() == domain, f"{vm.name} is {vm.state()}, not {domain}"
        assert vm.is_persistent(), f"{vm.name} is no longer persistent: its definition would be lost"
        inactive = vm.sources(inactive=True)
        for target, path in on.items():
            assert inactive[target] == path, f"the definition's {target} is {inactive[target]}, not {path}"
            assert os.path.exists(path), f"the definition's {target} points at {path}, which does not exist"
    if domain == "running":
        live = vm.sources()
        for target, path in on.items():
            assert live[target] == path, f"the guest's {target} runs on {live[target]}, not {path}"
            assert_qemu_holds_the_file_on_disk(vm, path, watched)
            assert not has_block_job(vm.name, target), f"a block job is left on {vm.name} {target}"
    else:
        assert qemu_pid(vm.name) is None, f"QEMU of {vm.name} still runs"

    if migration.state == "completed":
        for disk in disks:
            expected = [disk.destination] + (disk.source_chain[1:] if migration.mode == "shallow" else [])
            assert chain_paths(disk.destination) == expected, f"{disk.target}: chain is not {expected}"
            if pattern:
                read_pattern_ok(disk.destination, *pattern, fmt=migration.dest_format)
    else:
        for disk in disks:
            path = disk.destination
            if path in kept:
                assert os.path.lexists(path), (
                    f"{path} was removed, but it is a file somebody else put there, not the copy blockmig created; "
                    f"the engine's last word: {events(migration)[-1].details}"
                )
                info = os.stat(path)
                assert (info.st_dev, info.st_ino) == kept[path], f"{path} is not the file somebody else put there"
            else:
                assert not os.path.lexists(path), (
                    f"the partial destination {path} is left on disk; the engine's last word: {events(migration)[-1].details}"
                )

    trail = [e.event_type for e in events(migration)]
    assert_subsequence(story, trail)
    last = events(migration)[-1]
    assert last.to_state == migration.state, f"the last audit event ({last.event_type}) does not say {migration.state}"
    assert_fenced_trail(migration)
