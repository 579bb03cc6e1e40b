"""What one successful read of a host stores: domains upserted, the disks and chains of the
re-read domains replaced, the host's facts, all in one transaction. The rows are written
with bulk statements (hosts.sync.bulk), so the number of statements does not grow with
the number of domains."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from hosts import models
from hosts.records import DiskRecord, DomainRecord, HostFacts, Inventory
from hosts.signals import announce_inventory_changed
from hosts.sync.bulk import chunks, delete_in_chunks, insert_rows

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


@transaction.atomic
def store(hypervisor: models.Hypervisor, inventory: Inventory) -> None:
    now = timezone.now()
    # Open pages redraw from the committed rows (health, domain table, chain pictures).
    announce_inventory_changed(hypervisor.pk)
    # Read again inside the transaction: another sync of this host may have committed
    # since `known` was read, and this is the state the writes below must build on.
    stored = {
        row[0]: row[1:] for row in models.Domain.objects.filter(hypervisor=hypervisor).values_list("uuid", "id", *DOMAIN_FIELDS)
    }
    seen = {record.uuid for record in inventory.domains}
    delete_in_chunks(models.Domain, [row[0] for uuid, row in stored.items() if uuid not in seen])
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
    returned = insert_rows(
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
    for chunk in chunks(sorted(previously_stored)):
        for disk_id, domain_id, target in models.Disk.objects.filter(domain_id__in=chunk).values_list(
            "id", "domain_id", "target"
        ):
            if (domain_id, target) not in wanted:
                gone.append(disk_id)
        models.ChainLayer.objects.filter(disk__domain_id__in=chunk).delete()
    delete_in_chunks(models.Disk, gone)

    returned = insert_rows(
        models.Disk,
        [_disk_values(domain_id, disk) for domain_id, disks in reread for disk in disks],
        conflict=("domain_id", "target"),
        update=DISK_FIELDS,
        returning=("domain_id", "target", "id"),
    )
    disk_ids = {(domain_id, target): disk_id for domain_id, target, disk_id in returned}
    insert_rows(
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
