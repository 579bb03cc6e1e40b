"""After the pivot (invariant 3): the engine's verdict on what libvirt reports, decided by
blockmig.verification.pivot_problems. Unit: records and XML strings, no libvirt."""

import pytest

from blockmig.models import Migration, MigrationDisk
from blockmig.verification import SHALLOW, pivot_problems
from hosts.domxml import parse_disks
from hosts.records import ChainLayer, DiskRecord

SOURCE_CHAIN = ["/lab/snap2.qcow2", "/lab/snap1.qcow2", "/lab/base.qcow2"]
COPY = "/backups/copy.qcow2"


def moved(target="vda", destination=COPY, chain=SOURCE_CHAIN) -> MigrationDisk:
    return MigrationDisk(target=target, destination=destination, source_chain=list(chain), source_path=chain[0])


def record(source: str, *backing: str, target: str = "vda") -> DiskRecord:
    layers = tuple(ChainLayer(depth=i, path=path) for i, path in enumerate((source, *backing)))
    return DiskRecord(target=target, source=source, chain=layers)


SHALLOW_DONE = {"vda": record(COPY, "/lab/snap1.qcow2", "/lab/base.qcow2")}
FULL_DONE = {"vda": record(COPY)}


def problems(mode=SHALLOW, disks=None, live=None, inactive=None, persistent=True, strategy="transient_job"):
    return pivot_problems(
        mode,
        disks if disks is not None else [moved()],
        SHALLOW_DONE if live is None else live,
        {"vda": record(COPY)} if inactive is None else inactive,
        persistent,
        strategy,
    )


def test_mode_names_are_the_models():
    assert SHALLOW == Migration.Mode.SHALLOW


def test_shallow_copy_on_the_old_backing_chain_is_right():
    assert problems() == []


def test_full_copy_alone_is_right():
    assert problems(mode=Migration.Mode.FULL, live=FULL_DONE) == []


def test_guest_still_on_its_source():
    live = {"vda": record(*SOURCE_CHAIN)}
    assert problems(live=live) == [f"live vda is /lab/snap2.qcow2, not {COPY}"]


def test_disk_gone_from_the_live_xml():
    assert problems(live={}) == [f"live vda is missing, not {COPY}"]


def test_shallow_copy_that_lost_its_backing_chain():
    assert problems(live=FULL_DONE) == [f"vda chain is {COPY}, expected {COPY} ← /lab/snap1.qcow2 ← /lab/base.qcow2"]


def test_full_copy_that_still_has_a_backing_file():
    assert problems(mode=Migration.Mode.FULL) == [f"vda chain is {COPY} ← /lab/snap1.qcow2 ← /lab/base.qcow2, expected {COPY}"]


def test_persistent_definition_still_on_the_source():
    assert problems(inactive={"vda": record("/lab/snap2.qcow2")}) == [
        f"the persistent definition's vda is /lab/snap2.qcow2, not {COPY}"
    ]


def test_persistent_definition_without_the_disk():
    assert problems(inactive={}) == [f"the persistent definition's vda is missing, not {COPY}"]


@pytest.mark.parametrize("strategy", ["transient_job", "undefine"])
def test_a_domain_that_was_persistent_must_still_be(strategy):
    assert problems(persistent=False, inactive={}, strategy=strategy) == ["the domain is no longer persistent"]


def test_a_transient_domain_has_no_definition_to_check():
    assert problems(persistent=False, inactive={}, strategy="none") == []


def test_every_disk_is_checked_live_problems_first():
    disks = [moved("vda"), moved("vdb", "/backups/b.raw", ["/lab/b.raw"])]
    live = {**SHALLOW_DONE, "vdb": record("/lab/b.raw", target="vdb")}
    inactive = {"vda": record("/lab/snap2.qcow2"), "vdb": record("/backups/b.raw", target="vdb")}
    assert problems(disks=disks, live=live, inactive=inactive) == [
        "live vdb is /lab/b.raw, not /backups/b.raw",
        f"the persistent definition's vda is /lab/snap2.qcow2, not {COPY}",
    ]


def test_disks_not_moved_are_not_checked():
    live = {**SHALLOW_DONE, "vdb": record("/lab/other.raw", target="vdb")}
    assert problems(live=live) == []


def test_verdict_on_the_xml_libvirt_writes_after_a_shallow_pivot():
    """The records as the adapter makes them: parsed from the live and inactive XML."""
    live_xml = f"""<domain><devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='{COPY}' index='4'/>
      <backingStore type='file' index='2'><format type='qcow2'/><source file='/lab/snap1.qcow2'/>
        <backingStore type='file' index='1'><format type='qcow2'/><source file='/lab/base.qcow2'/><backingStore/></backingStore>
      </backingStore><target dev='vda' bus='virtio'/></disk></devices></domain>"""
    inactive_xml = f"""<domain><devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='{COPY}'/><target dev='vda' bus='virtio'/></disk></devices></domain>"""
    live = {d.target: d for d in parse_disks(live_xml)}
    inactive = {d.target: d for d in parse_disks(inactive_xml)}
    assert pivot_problems(SHALLOW, [moved()], live, inactive, True, "transient_job") == []
    assert pivot_problems(Migration.Mode.FULL, [moved()], live, inactive, True, "transient_job") != []
