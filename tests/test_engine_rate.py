"""The rate the engine stores is blockmig.progress's moving average of what libvirt reported
(one rule: the pages' rate and ETA read what the engine stored)."""

from blockmig import progress
from blockmig.engine.driver import Driver
from blockmig.leases import lease_claim_next
from blockmig.models import Migration, MigrationDisk
from blockmig.states import State
from hosts.models import Hypervisor
from hosts.records import BlockJobInfo

GIB = 1024**3
MIB = 1024**2


def test_stored_rate_is_the_moving_average_of_the_samples_the_driver_kept(users):
    host = Hypervisor.objects.create(name="h1", uri="test:///default")
    migration = Migration.objects.create(
        hypervisor=host, domain_uuid="u-1", domain_name="vm1", state=State.COPYING, requested_by=users["operator"]
    )
    disk = MigrationDisk.objects.create(
        migration=migration,
        hypervisor=host,
        domain_uuid="u-1",
        target="vda",
        source_path="/lab/a.qcow2",
        destination="/b/a.qcow2",
    )
    driver = Driver(lease_claim_next("w1"))
    for cur in (0, 64 * MIB, 192 * MIB):
        jobs = {"vda": BlockJobInfo("copy", cur=cur, end=GIB)}
        driver.record_progress(migration, [disk], jobs, {"vda": False}, force=True)

    stored = Migration.objects.get(pk=migration.pk)
    assert len(driver.history) == 3 and stored.rate_bps > 0
    assert stored.rate_bps == progress.moving_rate(driver.history)
    assert (stored.bytes_done, stored.bytes_total) == (192 * MIB, GIB)
    assert MigrationDisk.objects.get(pk=disk.pk).cur == 192 * MIB
