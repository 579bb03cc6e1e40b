"""The lab's seed chain and guests, checked on disk and on the guests' serial consoles."""

import json
import subprocess
import time

import pytest

from hosts.lab import build_lab, list_files_in_image, qemu_img_info_chain, wait_for_serial
from hosts.lab.domains import domain_id, domain_state
from hosts.lab.guest import MARKER_LS, MARKER_UP, MARKER_WRITE

pytestmark = pytest.mark.lab

GiB = 1024**3


def data_bytes_in_layer(path) -> int:
    """Bytes of data the image itself holds (not its backing files)."""
    out = subprocess.run(["qemu-img", "map", "-U", "--output=json", str(path)], capture_output=True, text=True, check=True).stdout
    return sum(entry["length"] for entry in json.loads(out) if entry["data"] and entry["depth"] == 0)


def test_snap2_chain_is_snap2_snap1_base(lab):
    chain = qemu_img_info_chain(lab.seed.snap2)

    assert [layer["filename"] for layer in chain] == [str(lab.seed.snap2), str(lab.seed.snap1), str(lab.seed.base)]
    assert [layer["format"] for layer in chain] == ["qcow2"] * 3
    assert [layer["virtual-size"] for layer in chain] == [GiB] * 3
    assert chain[0]["full-backing-filename"] == str(lab.seed.snap1)
    assert chain[1]["full-backing-filename"] == str(lab.seed.base)
    assert "backing-filename" not in chain[2]


def test_flattened_layers_list_their_files(lab):
    assert list_files_in_image(lab.seed.snap2) == ["bar", "baz", "foo"]
    assert list_files_in_image(lab.seed.snap1) == ["bar", "foo"]
    assert list_files_in_image(lab.seed.base) == ["foo"]


def test_overlays_hold_only_their_own_change(lab):
    base = data_bytes_in_layer(lab.seed.base)
    for overlay in (lab.seed.snap1, lab.seed.snap2):
        own = data_bytes_in_layer(overlay)
        assert 0 < own <= 512 * 1024
        assert own * 2 < base


def test_testvm_guest_sees_foo_bar_baz(lab):
    assert domain_state(lab.testvm) == "running"
    assert wait_for_serial(lab.testvm_serial, MARKER_UP, timeout=60).startswith(MARKER_UP)

    listing = wait_for_serial(lab.testvm_serial, MARKER_LS, timeout=30)

    assert {"foo", "bar", "baz"} <= set(listing.split(":", 1)[1].split())


def test_twodisk_guest_writes_to_its_raw_disk(lab):
    assert domain_state(lab.twodisk) == "running"
    wait_for_serial(lab.twodisk_serial, f"{MARKER_WRITE} vdb started", timeout=60)
    chain = qemu_img_info_chain(lab.twodisk_vda)
    assert [layer["filename"] for layer in chain] == [str(lab.twodisk_vda), str(lab.twodisk_base)]

    deadline = time.monotonic() + 20
    while lab.twodisk_vdb.stat().st_blocks == 0 and time.monotonic() < deadline:
        time.sleep(0.2)

    assert lab.twodisk_vdb.stat().st_blocks > 0, "the guest wrote nothing to vdb"


def test_building_the_lab_again_changes_nothing(lab):
    before = lab.seed.snap2.stat()
    ids = {name: domain_id(name) for name in (lab.testvm, lab.twodisk)}

    again = build_lab(lab.lab_dir, prefix=lab.prefix)

    after = lab.seed.snap2.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert again == lab
    assert {name: domain_id(name) for name in (lab.testvm, lab.twodisk)} == ids
    assert all(domain_state(name) == "running" for name in ids)
