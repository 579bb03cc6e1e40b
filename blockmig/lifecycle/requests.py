"""A person asks for a migration: preflight against the host, then the rows and the
`requested` event; a refused request leaves no row, only its audit event."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from blockmig.audit import audit_record
from blockmig.errors import Refused
from blockmig.lifecycle.transitions import publish_on_commit, wake_on_commit
from blockmig.models import Migration, MigrationDisk
from blockmig.preflight import preflight_request
from blockmig.preflight.options import check_bandwidth
from blockmig.preflight.records import DiskRequest
from blockmig.states import State
from hosts.models import Domain


def _audit_refused_request(refused: Refused, *, user, hypervisor, domain_uuid: str, disks: list[DiskRequest]) -> None:
    """A refused start leaves no migration row, only this audit event (committed even
    though the request fails)."""
    name = Domain.objects.filter(hypervisor=hypervisor, uuid=domain_uuid).values_list("name", flat=True).first()
    with transaction.atomic():
        audit_record(
            event_type="refused",
            actor=user,
            hypervisor_name=hypervisor.name,
            domain_name=name or domain_uuid,
            details={
                "action": "request",
                "reason": refused.message,
                "domain_uuid": domain_uuid,
                "disks": {d.target: d.destination for d in disks},
            },
        )


def migration_request_invalid(*, user, hypervisor, domain_uuid: str, errors: dict[str, list[str]]) -> None:
    """A request form sent with errors (a bad destination, bandwidth …) never reaches
    preflight, but it is a refused start all the same: audited with what was wrong."""
    reason = "; ".join(f"{field or 'form'}: {' '.join(messages)}" for field, messages in errors.items())
    _audit_refused_request(Refused(reason), user=user, hypervisor=hypervisor, domain_uuid=domain_uuid, disks=[])


def migration_request(
    *,
    user,
    hypervisor,
    domain_uuid: str,
    disks: list[DiskRequest],
    mode: str = "shallow",
    dest_format: str = "qcow2",
    reuse_destination: bool = False,
    bandwidth_mib=0,
    synchronous_writes: bool = False,
    granularity: int | None = None,
    buf_size: int | None = None,
    force_undefine: bool = False,
    plan=None,
) -> Migration:
    """`plan`: the evacuation plan asking (blockmig.plans), recorded on the migration."""
    evacuation = plan
    try:
        plan = preflight_request(
            user=user,
            hypervisor=hypervisor,
            domain_uuid=domain_uuid,
            disks=disks,
            mode=mode,
            dest_format=dest_format,
            reuse_destination=reuse_destination,
            bandwidth_mib=bandwidth_mib,
            synchronous_writes=synchronous_writes,
            granularity=granularity,
            buf_size=buf_size,
        )
    except Refused as refused:
        _audit_refused_request(refused, user=user, hypervisor=hypervisor, domain_uuid=domain_uuid, disks=disks)
        raise
    try:
        with transaction.atomic():
            migration = Migration.objects.create(
                hypervisor=hypervisor,
                domain_uuid=domain_uuid,
                domain_name=plan.domain_name,
                mode=mode,
                dest_format=dest_format,
                reuse_destination=reuse_destination,
                bandwidth_mib=check_bandwidth(bandwidth_mib),
                synchronous_writes=synchronous_writes,
                granularity=granularity,
                buf_size=buf_size,
                force_undefine=force_undefine,
                requested_by=user,
                plan=evacuation,
            )
            for disk in plan.disks:
                # The conditional unique constraint makes a concurrent second request of
                # the same disk fail here, whatever the preflight saw a moment ago.
                MigrationDisk.objects.create(
                    migration=migration,
                    hypervisor=hypervisor,
                    domain_uuid=domain_uuid,
                    target=disk.target,
                    source_path=disk.source_path,
                    source_chain=disk.source_chain,
                    destination=disk.destination,
                )
            audit_record(
                event_type="requested",
                migration=migration,
                actor=user,
                to_state=State.REQUESTED,
                details={
                    "disks": {
                        d.target: {"source": d.source_path, "destination": d.destination, "kind": d.kind} for d in plan.disks
                    },
                    "mode": mode,
                    "dest_format": dest_format,
                    "reuse_destination": reuse_destination,
                    "bandwidth_mib": migration.bandwidth_mib,
                    "synchronous_writes": synchronous_writes,
                    "granularity": granularity,
                    "buf_size": buf_size,
                    "force_undefine": force_undefine,
                    **({"plan": evacuation.pk} if evacuation is not None else {}),
                },
            )
            publish_on_commit(migration.pk)
            wake_on_commit(migration.pk)
    except IntegrityError:
        race = Refused("Another migration of one of these disks has just started: wait for it to finish.", "disks")
        _audit_refused_request(race, user=user, hypervisor=hypervisor, domain_uuid=domain_uuid, disks=disks)
        raise race from None
    return migration
