"""hypervisor_sync: read one hypervisor through the adapter and store what it says.

Cost is bounded on both sides. libvirt: a constant number of bulk calls plus one XML read
per new or changed domain (see HostConnection.inventory). Database: a constant number of
statements per sync, whatever the number of domains, because every write is a bulk
statement; only hosts with tens of thousands of rows split a statement into chunks.
A host that cannot be read keeps its last-known rows; the failure is recorded beside them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection, connections, transaction
from django.utils import timezone

from hosts import models
from hosts.adapter import ConnectFailure, HostConnection, LibvirtFailure
from hosts.records import DiskRecord, DomainRecord, HostFacts, Inventory
from hosts.signals import announce_inventory_changed, reports_sync

logger = logging.getLogger(__name__)

DOMAIN_FIELDS = ("name", "state", "persistent", "autostart", "signature")
DISK_FIELDS = (
    "bus",
    "device",
    "type",
    "format",
    "source",
    "readonly",
    "chain_known",
    "chain_note",
    "job_type",
    "job_cur",
    "job_end",
    "job_mirror_path",
    "job_ready",
)
FACT_FIELDS = (
    "hostname",
    "driver",
    "libvirt_version",
    "hypervisor_version",
    "virt_type",
    "supports_transient_job",
    "supports_sync_writes",
)


@dataclass(frozen=True)
class SyncResult:
    ok: bool
    error: str = ""
    domains_seen: int = 0
    domains_reread: int = 0  # domains whose XML was read (new, changed, or all when forced)
    libvirt_calls: int = 0  # round trips, the connection's open included
    duration: float = 0.0  # seconds, libvirt and database together


@reports_sync
def hypervisor_sync(hypervisor: models.Hypervisor, *, force: bool = False, reread: Iterable[str] = ()) -> SyncResult:
    """Bring the stored inventory of `hypervisor` in line with what libvirt reports now.

    `force` reads every domain's XML again; `reread` names the uuids of domains to read
    again whatever their stats say (the engine's refresh after it started a block copy:
    the bulk calls plus one XML read, not one per domain of the host).

    Never raises for a host that cannot be reached or refuses: the result says so and the
    hypervisor row carries the error, while its domains keep their last-known data.
    """
    started = time.perf_counter()
    refusal = _refusal(hypervisor)
    if refusal:
        logger.info("sync of %s refused: %s", hypervisor.name, refusal)
        return SyncResult(ok=False, error=refusal, duration=time.perf_counter() - started)
    known = _known_signatures(hypervisor)
    for uuid in reread:
        known.pop(uuid, None)
    host = HostConnection(hypervisor.uri, timeout=settings.BLOCKMIG_CONNECT_TIMEOUT, keepalive=_keepalive())
    try:
        with host:
            inventory = host.inventory(known=known, force=force)
    except (ConnectFailure, LibvirtFailure) as failure:
        message = getattr(failure, "message", None) or str(failure)
        _record_failure(hypervisor, message)
        logger.warning("sync of %s failed: %s", hypervisor.name, message)
        return SyncResult(ok=False, error=message, libvirt_calls=host.calls, duration=time.perf_counter() - started)
    _store(hypervisor, inventory)
    reread_count = sum(1 for d in inventory.domains if d.disks is not None)
    return SyncResult(
        ok=True,
        domains_seen=len(inventory.domains),
        domains_reread=reread_count,
        libvirt_calls=host.calls,
        duration=time.perf_counter() - started,
    )


def _keepalive() -> tuple[int, int] | None:
    interval = settings.BLOCKMIG_KEEPALIVE_INTERVAL
    return (interval, settings.BLOCKMIG_KEEPALIVE_COUNT) if interval > 0 else None


def fleet_sync(
    hypervisors: Iterable[models.Hypervisor],
    *,
    workers: int | None = None,
    pool: ThreadPoolExecutor | None = None,
    on_result: Callable[[models.Hypervisor, SyncResult], None] | None = None,
) -> dict[int, SyncResult]:
    """Sync many hypervisors, at most `workers` (BLOCKMIG_SYNC_WORKERS) at a time.

    Each host runs in a thread of its own with its own connection and deadline, so a host
    that hangs or drops packets costs its thread its own time-out and nobody else anything.
    `on_result` is called from the caller's thread as each host finishes (finishing order).
    Returns hypervisor id -> result; a sync that crashed is a failed result, not an exception.
    """
    own_pool = pool is None
    if pool is None:
        pool = ThreadPoolExecutor(max_workers=max(1, workers or settings.BLOCKMIG_SYNC_WORKERS), thread_name_prefix="sync")
    results: dict[int, SyncResult] = {}
    try:
        futures = {pool.submit(_sync_in_thread, hypervisor): hypervisor for hypervisor in hypervisors}
        for future in as_completed(futures):
            hypervisor = futures[future]
            results[hypervisor.pk] = future.result()
            if on_result is not None:
                on_result(hypervisor, results[hypervisor.pk])
    finally:
        if own_pool:
            pool.shutdown(wait=True)
    return results


def _sync_in_thread(hypervisor: models.Hypervisor) -> SyncResult:
    try:
        return hypervisor_sync(hypervisor)
    except Exception:
        # A database or programming error for one host must not stop the others' syncs.
        logger.exception("sync of %s crashed", hypervisor.name)
        return SyncResult(ok=False, error=f"The sync of {hypervisor.name} crashed; the log of the sync says why.")
    finally:
        # Pool threads each hold their own database connection; give it back after every host.
        connections.close_all()


def _refusal(hypervisor: models.Hypervisor) -> str:
    """Why this host must not be connected to now ("" if it may be). Read from the row, not
    the object: the sync loop and the engine hold objects loaded before an admin disabled it."""
    enabled = models.Hypervisor.objects.filter(pk=hypervisor.pk).values_list("enabled", flat=True).first()
    if enabled is None:
        return f"{hypervisor.name} no longer exists."
    if not enabled:
        return f"{hypervisor.name} is disabled, so blockmig does not connect to it: an admin can enable it on its edit page."
    return ""


def _known_signatures(hypervisor: models.Hypervisor) -> dict[str, str]:
    """uuid → stats signature of the domains whose stored disks may be kept as they are.

    Domains with a block job are left out so that they are read again every sync: a
    mirror turning ready, and a job's progress, do not change the bulk stats.
    """
    known = dict(models.Domain.objects.filter(hypervisor=hypervisor).values_list("uuid", "signature"))
    with_jobs = models.Disk.objects.filter(domain__hypervisor=hypervisor).exclude(job_type="")
    for uuid in with_jobs.values_list("domain__uuid", flat=True):
        known.pop(uuid, None)
    return known


def _record_failure(hypervisor: models.Hypervisor, message: str) -> None:
    hypervisor.last_sync_attempt_at = timezone.now()
    hypervisor.last_sync_error = message
    hypervisor.save(update_fields=["last_sync_attempt_at", "last_sync_error"])
    announce_inventory_changed(hypervisor.pk)


@transaction.atomic
def _store(hypervisor: models.Hypervisor, inventory: Inventory) -> None:
    now = timezone.now()
    # Open pages redraw from the committed rows (health, domain table, chain pictures).
    announce_inventory_changed(hypervisor.pk)
    # Read again inside the transaction: another sync of this host may have committed
    # since `known` was read, and this is the state the writes below must build on.
    stored = {
        row[0]: row[1:] for row in models.Domain.objects.filter(hypervisor=hypervisor).values_list("uuid", "id", *DOMAIN_FIELDS)
    }
    seen = {record.uuid for record in inventory.domains}
    _delete_in_chunks(models.Domain, [row[0] for uuid, row in stored.items() if uuid not in seen])
    ids = _upsert_domains(hypervisor, inventory, stored, now)
    reread = [(ids[d.uuid], d.disks) for d in inventory.domains if d.disks is not None]
    previously_stored = {ids[d.uuid] for d in inventory.domains if d.disks is not None and d.uuid in stored}
    _replace_disks(reread, previously_stored)
    # One statement says "seen in this sync" for every domain of the host.
    models.Domain.objects.filter(hypervisor=hypervisor).update(synced_at=now)
    _store_facts(hypervisor, inventory.facts, now)


def _upsert_domains(
    hypervisor: models.Hypervisor, inventory: Inventory, stored: dict[str, tuple], now: datetime
) -> dict[str, int]:
    """Insert new domains and update changed ones; return uuid → id for all of them."""
    ids = {uuid: row[0] for uuid, row in stored.items()}
    writes: list[dict[str, object]] = []
    for record in inventory.domains:
        values = _domain_values(record, inventory.signatures.get(record.uuid, ""), record.uuid in stored)
        row = stored.get(record.uuid)
        if row is None or tuple(row[1:]) != values:
            writes.append(
                {"hypervisor_id": hypervisor.pk, "uuid": record.uuid, "synced_at": now, **dict(zip(DOMAIN_FIELDS, values))}
            )
    # An upsert rather than insert + update: one statement either way, and a concurrent
    # sync that inserted the same domain first cannot make this one fail.
    returned = _insert_rows(
        models.Domain,
        writes,
        conflict=("hypervisor_id", "uuid"),
        update=(*DOMAIN_FIELDS, "synced_at"),
        returning=("uuid", "id"),
    )
    ids.update(returned)
    return ids


def _domain_values(record: DomainRecord, signature: str, is_stored: bool) -> tuple:
    if record.disks is None and not is_stored:
        # Unchanged by the stats but not in the database (deleted under us): leave the
        # signature empty so that the next sync reads its disks.
        signature = ""
    return (record.name, record.state, record.persistent, record.autostart, signature)


def _replace_disks(reread: list[tuple[int, tuple[DiskRecord, ...]]], previously_stored: set[int]) -> None:
    """Make the stored disks and chains of the re-read domains exactly what libvirt said.

    Disk rows are updated in place (their ids stay stable for anything that points at
    them); layers are derived data and are simply replaced.
    """
    wanted = {(domain_id, disk.target) for domain_id, disks in reread for disk in disks}
    gone: list[int] = []
    for chunk in _chunks(sorted(previously_stored)):
        for disk_id, domain_id, target in models.Disk.objects.filter(domain_id__in=chunk).values_list(
            "id", "domain_id", "target"
        ):
            if (domain_id, target) not in wanted:
                gone.append(disk_id)
        models.ChainLayer.objects.filter(disk__domain_id__in=chunk).delete()
    _delete_in_chunks(models.Disk, gone)

    returned = _insert_rows(
        models.Disk,
        [_disk_values(domain_id, disk) for domain_id, disks in reread for disk in disks],
        conflict=("domain_id", "target"),
        update=DISK_FIELDS,
        returning=("domain_id", "target", "id"),
    )
    disk_ids = {(domain_id, target): disk_id for domain_id, target, disk_id in returned}
    _insert_rows(
        models.ChainLayer,
        [
            {
                "disk_id": disk_ids[(domain_id, disk.target)],
                "depth": layer.depth,
                "path": layer.path,
                "format": layer.format,
                "type": layer.type,
                "capacity": layer.capacity,
                "allocation": layer.allocation,
                "missing": layer.missing,
            }
            for domain_id, disks in reread
            for disk in disks
            for layer in disk.chain
        ],
    )


# Field types whose Python values the database driver cannot take as they are.
_PREPARED_TYPES = frozenset({"DateTimeField", "DateField", "TimeField", "JSONField", "DecimalField", "UUIDField"})


def _insert_rows(
    model: type[models.Domain] | type[models.Disk] | type[models.ChainLayer],
    rows: list[dict[str, object]],
    *,
    conflict: Sequence[str] = (),
    update: Sequence[str] = (),
    returning: Sequence[str] = (),
) -> list[tuple]:
    """Insert (or upsert) plain rows, one multi-row statement per chunk, as bulk_create
    would, but without a model instance and a per-value preparation step for every cell:
    at a first sync of 1,000 domains those were most of its cost. Values are given as the
    driver takes them (str, int, bool, None); fields a row leaves out get their default,
    so a field added to the model later needs no change here.
    """
    if not rows:
        return []
    quote = connection.ops.quote_name
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    defaults = {field.attname: field.get_db_prep_save(field.get_default(), connection) for field in fields}
    prepared = [field for field in fields if field.get_internal_type() in _PREPARED_TYPES]
    column_of = {field.name: str(field.column) for field in fields}
    columns = ", ".join(quote(column_of[field.name]) for field in fields)
    tail = ""
    if conflict:
        updates = ", ".join(f"{quote(column_of[name])} = EXCLUDED.{quote(column_of[name])}" for name in update)
        tail += f" ON CONFLICT ({', '.join(quote(name) for name in conflict)}) DO UPDATE SET {updates}"
    if returning:
        tail += " RETURNING " + ", ".join(quote(name) for name in returning)
    placeholders = "(" + ", ".join(["%s"] * len(fields)) + ")"
    out: list[tuple] = []
    with connection.cursor() as cursor:
        for chunk in _chunks(rows, max(1, _max_params() // len(fields))):
            params: list[Any] = []
            for row in chunk:
                for field in prepared:
                    if field.attname in row:
                        row = {**row, field.attname: field.get_db_prep_save(row[field.attname], connection)}
                params.extend(row.get(field.attname, defaults[field.attname]) for field in fields)
            cursor.execute(
                f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES {', '.join([placeholders] * len(chunk))}{tail}",
                params,
            )
            if returning:
                out.extend(tuple(row) for row in cursor.fetchall())
    return out


def _disk_values(domain_id: int, disk: DiskRecord) -> dict[str, object]:
    job = disk.job
    return dict(
        domain_id=domain_id,
        target=disk.target,
        bus=disk.bus,
        device=disk.device,
        type=disk.type,
        format=disk.format,
        source=disk.source,
        readonly=disk.readonly,
        chain_known=disk.chain_known,
        chain_note=disk.chain_note,
        job_type=job.type if job else "",
        job_cur=job.cur if job else 0,
        job_end=job.end if job else 0,
        job_mirror_path=job.mirror_path if job else "",
        job_ready=job.ready if job else False,
    )


def _store_facts(hypervisor: models.Hypervisor, facts: HostFacts, now: datetime) -> None:
    for name in FACT_FIELDS:
        setattr(hypervisor, name, getattr(facts, name))
    hypervisor.last_sync_attempt_at = now
    hypervisor.last_sync_ok_at = now
    hypervisor.last_sync_error = ""
    # update_fields: an admin may have edited name/URI/roots while libvirt was being read.
    hypervisor.save(update_fields=[*FACT_FIELDS, "last_sync_attempt_at", "last_sync_ok_at", "last_sync_error"])


def _delete_in_chunks(model: type[models.Domain] | type[models.Disk], ids: Sequence[int]) -> None:
    # Through the ORM's collector (not a raw DELETE): whatever else comes to point at these
    # rows (migrations, audit) keeps its on_delete rules. Only deletions cost per-row work,
    # and those are as rare as domains and disks that disappear.
    for chunk in _chunks(ids):
        model.objects.filter(id__in=chunk).delete()


def _chunks(items: Sequence, size: int | None = None) -> Iterator[Sequence]:
    """Slices small enough for the database's limit on parameters in one statement."""
    size = size or _max_params()
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _max_params() -> int:
    # SQLite builds differ (999 in old ones, 32766 or 250000 in newer); PostgreSQL
    # reports None but its protocol stops at 65535 parameters.
    return min(connection.features.max_query_params or 65535, 65535) - 100


def hypervisors_to_sync() -> Iterable[models.Hypervisor]:
    """The hypervisors the periodic sync visits."""
    return models.Hypervisor.objects.filter(enabled=True).order_by("name")
