"""Fault tier: a guest writing with fsync during the copy and the pivot loses no acknowledged
write, with and without synchronous writes.

The lab guest (`blockmig.ackwrite=vdb`, see hosts/lab/guest.py) writes record n as the 4 KiB
block n of its raw disk with O_DIRECT + fsync, and prints `BLOCKMIG-ACK n` only after the
write returned. It keeps writing while blockmig copies the disk, waits for the approval,
pivots and verifies. Then the guest is destroyed (no clean shutdown: acknowledged means
durable) and every acknowledged record 0..n is looked for on the destination file, which the
definition must point at. The source is checked too: it must lack the records acknowledged
after the pivot, so a verification that read the wrong file would fail.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from blockmig.lifecycle import DiskRequest, migration_approve, migration_request, migration_set_bandwidth
from blockmig.models import AuditEvent, Migration
from hosts.lab.domains import DiskSpec, domain_xml, virsh, wait_for_serial
from hosts.lab.guest import ACK_BLOCK, MARKER_ACK, MARKER_ACKWRITE, ack_record, acked_records, guest_cmdline
from tests.lab.engine_helpers import Disk, audit_trail, has_block_job, make_hypervisor, run
from tests.lab.engine_helpers import TestDomain as LabDomain  # not a test class

pytestmark = pytest.mark.lab

MiB = 2**20
VDB_SIZE = 64 * MiB
# Data far from the records (which start at offset 0 and grow by ~0.3 MiB/s under TCG), so the
# first pass of the copy has something to do while the bandwidth limit holds it in `copying`.
PREFILL = "write -P 0x5c 40M 16M"
ACKS_BEFORE_REQUEST = 20
ACKS_WHILE_COPYING = 200
ACKS_WHILE_READY = 100
ACKS_AFTER_PIVOT = 200
WAIT = 60.0  # generous limit for each wait; nothing asserts how long a step took


@dataclass
class Sample:
    at: float  # time.time(), comparable with the audit events' created_at
    state: str
    offset: int  # serial log size at that moment


def ackwrite_domain(domains, lab, label: str = "ackw") -> tuple[LabDomain, Path]:
    """A persistent lab kernel guest: vda (unused, 16 MiB raw) and vdb (64 MiB raw, prefilled),
    writing acknowledged records to vdb. Registered with `domains` so its cleanup removes it."""
    name = f"{lab.prefix}{label}-{uuid.uuid4().hex[:6]}"
    directory = domains.root / name
    directory.mkdir(parents=True)
    backups = directory / "backups"
    backups.mkdir()
    vda, vdb = directory / "vda.raw", directory / "vdb.raw"
    run("qemu-img", "create", "-q", "-f", "raw", vda, str(16 * MiB))
    run("qemu-img", "create", "-q", "-f", "raw", vdb, str(VDB_SIZE))
    run("qemu-io", "-f", "raw", "-c", PREFILL, vdb)
    serial = directory / "serial.log"
    xml = domain_xml(
        name,
        [DiskSpec(vda, "vda", "raw"), DiskSpec(vdb, "vdb", "raw")],
        lab.guest.kernel,
        lab.guest.initrd,
        guest_cmdline(ackwrite=("vdb",)),
        serial,
        lab.virt_type,
    )
    xml_path = directory / f"{name}.xml"
    xml_path.write_text(xml)
    domains.names.append(name)
    virsh("define", str(xml_path))
    virsh("start", name)
    domain_uuid = virsh("domuuid", name).stdout.strip()
    return LabDomain(name, domain_uuid, directory, backups, [Disk("vda", vda, "raw"), Disk("vdb", vdb, "raw")]), serial


class SerialWatch:
    """Reads the guest's serial log and remembers (time, migration state, log size) samples."""

    def __init__(self, log: Path):
        self.log = log
        self.samples: list[Sample] = []

    def size(self) -> int:
        try:
            return self.log.stat().st_size
        except FileNotFoundError:
            return 0

    def text(self, start: int = 0, end: int | None = None) -> str:
        with open(self.log, "rb") as handle:
            handle.seek(start)
            data = handle.read() if end is None else handle.read(max(0, end - start))
        return data.decode(errors="replace")

    def acks(self, start: int = 0, end: int | None = None) -> list[int]:
        return acked_records(self.text(start, end))

    def sample(self, migration: Migration) -> Sample:
        migration.refresh_from_db()
        point = Sample(time.time(), str(migration.state), self.size())
        self.samples.append(point)
        return point

    def wait(self, migration: Migration, until, what: str, timeout: float = WAIT) -> Sample:
        """Sample every 50 ms until `until(sample)` holds; fail (with the audit trail) if the
        migration fails or `timeout` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            point = self.sample(migration)
            if until(point):
                return point
            if point.state in ("failed", "aborted"):
                raise AssertionError(
                    f"migration #{migration.pk} {point.state} ({migration.failure_reason!r}) "
                    f"while waiting for {what}; audit: {audit_trail(migration)}"
                )
            if time.monotonic() > deadline:
                tail = "\n".join(self.text(max(0, self.size() - 600)).splitlines()[-8:])
                raise AssertionError(
                    f"no {what} within {timeout:.0f} s (migration {point.state}); "
                    f"audit: {audit_trail(migration)}; serial tail:\n{tail}"
                )
            time.sleep(0.05)

    def wait_acks(self, migration: Migration, after: int, count: int, what: str, state: str | None = None) -> Sample:
        """Wait for `count` ACK lines printed after log offset `after` (while in `state`)."""

        def enough(point: Sample) -> bool:
            if state is not None and point.state != state:
                raise AssertionError(f"migration left {state} ({point.state}) before {count} ACKs {what}")
            return len(self.acks(after)) >= count

        return self.wait(migration, enough, f"{count} ACKs {what}")

    def offset_at(self, moment) -> int:
        """Log size at the first sample taken at or after `moment` (an aware datetime): every
        byte past it was printed after `moment`."""
        stamp = moment.timestamp()
        for point in self.samples:
            if point.at >= stamp:
                return point.offset
        raise AssertionError(f"no serial sample after {moment}")


def block(data: bytes, n: int) -> bytes:
    return data[n * ACK_BLOCK : (n + 1) * ACK_BLOCK]


def as_raw(path: Path, fmt: str, scratch: Path) -> bytes:
    """The guest-visible bytes of an image (qcow2 converted to raw in `scratch`)."""
    if fmt == "raw":
        return path.read_bytes()
    raw = scratch / f"{path.name}.as-raw"
    run("qemu-img", "convert", "-f", fmt, "-O", "raw", path, raw)
    try:
        return raw.read_bytes()
    finally:
        raw.unlink()


def event_time(migration: Migration, event_type: str):
    event = AuditEvent.objects.filter(migration=migration, event_type=event_type).order_by("created_at").last()
    return event.created_at if event else None


@pytest.mark.parametrize("synchronous_writes", [False, True], ids=["background", "synchronous"])
def test_every_acknowledged_write_is_on_the_destination(lab, domains, people, worker, synchronous_writes):
    started = time.monotonic()
    vm, serial = ackwrite_domain(domains, lab)
    source = vm.disks[1].path
    destination = vm.backups / "vdb.qcow2"
    watch = SerialWatch(serial)
    wait_for_serial(serial, f"{MARKER_ACKWRITE} vdb started", timeout=WAIT)
    wait_for_serial(serial, f"{MARKER_ACK}{ACKS_BEFORE_REQUEST - 1}", timeout=WAIT)

    host = make_hypervisor([vm.backups])
    # 1 MiB/s holds the 16 MiB prefill in `copying` until the guest has written through it.
    migration = migration_request(
        user=people["operator"],
        hypervisor=host,
        domain_uuid=vm.uuid,
        disks=[DiskRequest("vdb", str(destination))],
        synchronous_writes=synchronous_writes,
        bandwidth_mib=1,
    )
    requested_at = watch.size()
    copying = watch.wait(migration, lambda p: p.state == "copying", "copying")
    watch.wait_acks(migration, copying.offset, ACKS_WHILE_COPYING, "while copying", state="copying")
    migration_set_bandwidth(migration=migration, user=people["operator"], bandwidth_mib=0)
    ready = watch.wait(migration, lambda p: p.state == "ready", "ready")
    watch.wait_acks(migration, ready.offset, ACKS_WHILE_READY, "while ready", state="ready")
    assert vm.sources()["vdb"] == str(source), "nothing pivots before the approval"

    migration_approve(migration=migration, user=people["approver"])
    watch.wait(migration, lambda p: p.state in ("completed", "failed"), "the end of the pivot")
    migration.refresh_from_db()
    assert migration.state == "completed", f"{migration.failure_reason}; audit: {audit_trail(migration)}"
    assert migration.synchronous_writes is synchronous_writes
    # The "completed" event comes after the pivot and its verification: every ACK printed
    # after it was a write the guest made on the destination.
    completed = event_time(migration, "completed") or migration.finished_at
    assert completed is not None, audit_trail(migration)
    after_pivot = watch.offset_at(completed)
    watch.wait_acks(migration, after_pivot, ACKS_AFTER_PIVOT, "after the pivot")

    # The guest runs on the destination, the persistent definition points there, no job is left.
    assert vm.sources()["vdb"] == str(destination)
    assert vm.sources(inactive=True)["vdb"] == str(destination)
    assert vm.is_persistent()
    assert not has_block_job(vm.name, "vdb")
    assert vm.state() == "running"

    # Power cut: whatever the guest was told is durable must be on the destination.
    virsh("destroy", vm.name)
    text = watch.text()
    acked = acked_records(text)
    assert acked, "the guest acknowledged no write"
    last = max(acked)
    # A repeated n would mean the guest restarted (and rewrote from 0) somewhere on the way.
    assert len(set(acked)) == len(acked), "an ACK line repeats a record"
    assert f"{MARKER_ACKWRITE} vdb error" not in text, re.findall(rf"{MARKER_ACKWRITE} vdb error.*", text)[:5]
    assert f"{MARKER_ACKWRITE} vdb done" not in text, "the disk filled up: records were not all written in one pass"

    dest_data = as_raw(destination, "qcow2", vm.directory)
    lost = [n for n in range(last + 1) if block(dest_data, n) != ack_record(n)]
    assert not lost, (
        f"{len(lost)} of {last + 1} acknowledged records are not on the destination "
        f"(first: {lost[:10]}; block {lost[0]} holds {block(dest_data, lost[0])[:32]!r})"
    )
    # The prefill beyond the records came along too.
    start = max(40 * MiB, (last + 1) * ACK_BLOCK)
    assert dest_data[start : 56 * MiB] == b"\x5c" * (56 * MiB - start)

    # The source stopped at the pivot: the records acknowledged after it exist only on the
    # destination, so checking the wrong file would have failed above.
    source_data = as_raw(source, "raw", vm.directory)
    post_pivot = watch.acks(after_pivot)
    on_source = [n for n in post_pivot if block(source_data, n) == ack_record(n)]
    assert post_pivot and not on_source, f"records acknowledged after the pivot found on the source: {on_source[:10]}"

    approval = event_time(migration, "approved")
    approved = watch.offset_at(approval) if approval else ready.offset
    counts = {
        "before request": len(watch.acks(0, requested_at)),
        "requested..copying": len(watch.acks(requested_at, copying.offset)),
        "copying": len(watch.acks(copying.offset, ready.offset)),
        "ready": len(watch.acks(ready.offset, approved)),
        "approved..completed": len(watch.acks(approved, after_pivot)),
        "after completed": len(post_pivot),
    }
    print(
        f"\n[ackwrite synchronous_writes={synchronous_writes}] {last + 1} acknowledged records verified on the "
        f"destination, {len(post_pivot)} acknowledged after the pivot completed; per phase: {counts}; "
        f"case took {time.monotonic() - started:.1f} s"
    )
