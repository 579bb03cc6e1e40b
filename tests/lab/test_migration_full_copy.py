"""A full (flattened) copy of a disk holding 1 GiB of written data, through the app and a real
worker: after the pivot `qemu-img compare` finds source and copy identical, and the copy
stands alone (no backing file).

The source is a two-layer chain so flattening is really exercised: data lives in the base,
in the overlay, and partly in both (the overlay's data must win). Several byte patterns and
pseudo-random blocks at different offsets, plus an unwritten tail, so a copy that drops,
shifts or zero-fills a region cannot pass by accident.
"""

import json
import os
import subprocess

import pytest

from blockmig.lifecycle import DiskRequest, migration_approve, migration_request
from tests.helpers import wait_for_state
from tests.lab.engine_helpers import Disk, chain_paths, make_hypervisor, run

pytestmark = pytest.mark.lab
MiB = 2**20
VIRTUAL_SIZE = 1280 * MiB

# (layer, qemu-io write command). Union of the written ranges: [0, 1024 MiB) plus a 1 MiB
# marker at the end; [1024, 1279) MiB is never written and must read back as zeros.
WRITES = [
    ("base", "write -q -P 0x11 0 384M"),
    ("base", "write -q -s {rand1} 384M 128M"),
    ("top", "write -q -P 0xab 256M 256M"),  # overwrites the end of 0x11 and all of rand1
    ("top", "write -q -P 0x5a 512M 384M"),
    ("top", "write -q -s {rand2} 896M 128M"),
    ("top", "write -q -P 0xee 1279M 1M"),
]


def build_chain(directory):
    """base.qcow2 ← top.qcow2 with the writes above; returns the domain's disks."""
    base, top = directory / "base.qcow2", directory / "top.qcow2"
    rand = {}
    for key in ("rand1", "rand2"):  # 1 MiB of random bytes, repeated by qemu-io -s
        rand[key] = directory / f"{key}.bin"
        rand[key].write_bytes(os.urandom(MiB))
    run("qemu-img", "create", "-q", "-f", "qcow2", base, str(VIRTUAL_SIZE))
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
    for layer, path in (("base", base), ("top", top)):
        commands = [c.format(**rand) for name, c in WRITES if name == layer]
        args = ["qemu-io", "-f", "qcow2"]
        for command in commands:
            args += ["-c", command]
        run(*args, path)
    return [Disk("vda", top)]


def test_full_copy_of_1gib_is_identical_and_flat(domains, people, worker):
    vm = domains.prepared("fullcopy", build_chain)
    source = str(vm.disks[0].path)
    assert chain_paths(source) == [source, str(vm.directory / "base.qcow2")]
    copy = str(vm.backups / "full.qcow2")

    migration = migration_request(
        user=people["operator"],
        hypervisor=make_hypervisor([vm.backups]),
        domain_uuid=vm.uuid,
        disks=[DiskRequest("vda", copy)],
        mode="full",
        dest_format="qcow2",
    )
    migration = wait_for_state(migration, ["ready", "failed"], timeout=120)
    assert migration.state == "ready", migration.failure_reason
    assert vm.sources()["vda"] == source  # nothing pivots before an approval

    migration_approve(migration=migration, user=people["approver"])
    migration = wait_for_state(migration, ["completed", "failed"], timeout=60)
    assert migration.state == "completed", migration.failure_reason
    assert vm.sources()["vda"] == copy
    assert vm.sources(inactive=True)["vda"] == copy

    info = json.loads(run("qemu-img", "info", "-U", "--output=json", copy))
    assert "backing-filename" not in info, info
    assert "full-backing-filename" not in info, info
    assert info["virtual-size"] == VIRTUAL_SIZE

    # -U: QEMU holds the copy now. Exit 0 = identical, 1 = differ (stdout names the offset).
    compared = subprocess.run(["qemu-img", "compare", "-U", source, copy], capture_output=True, text=True)
    assert compared.returncode == 0, compared.stdout + compared.stderr

    # Guard against a vacuous compare: the source really holds the data laid out above.
    probe = subprocess.run(
        [
            "qemu-io",
            "-U",
            "-r",
            "-f",
            "qcow2",
            "-c",
            "read -q -P 0x11 0 1M",
            "-c",
            "read -q -P 0xab 300M 1M",
            "-c",
            "read -q -P 0x5a 600M 1M",
            "-c",
            "read -q -P 0xee 1279M 1M",
            "-c",
            "read -q -P 0x00 1100M 1M",
            copy,
        ],
        capture_output=True,
        text=True,
    )
    assert probe.returncode == 0 and "Pattern verification failed" not in probe.stdout + probe.stderr, probe.stdout + probe.stderr
