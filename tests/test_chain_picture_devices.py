"""Chain pictures of disks on block devices and NBD exports: each medium has its own shape
and words, on the layer and on a mirror target."""

from __future__ import annotations

import pytest

from hosts.chain_picture.jobs_and_media import medium_of
from hosts.chain_picture.layout import layout
from hosts.models import ChainLayer, Disk, Domain, Hypervisor
from hosts.records import BlockJobInfo
from hosts.records import ChainLayer as Layer
from tests.test_chain_picture import page_groups

GIB = 1024**3


@pytest.mark.parametrize(
    ("path", "declared", "medium"),
    [
        ("/srv/images/a.qcow2", "file", "file"),
        ("/dev/vg0/lv1", "block", "block"),
        ("/dev/vg0/lv1", "", "block"),  # a mirror target: only its path is known
        ("nbd://10.0.0.5:10809/vm1", "", "network"),
        ("vm1", "network", "network"),
    ],
)
def test_medium_of_a_layer(path, declared, medium):
    assert medium_of(path, declared) == medium


def test_block_layer_drawn_as_a_device():
    picture = layout([Layer(depth=0, path="/dev/vg0/lv1", format="raw", type="block", capacity=GIB)])
    (box,) = picture.layer_boxes
    assert (box.kind, box.medium, box.corner) == ("active", "block", 0)
    assert box.detail == "block device · raw · 1.0 GiB virtual"
    assert box.edge_w == box.w - 8


def test_network_layer_drawn_with_round_ends():
    picture = layout([Layer(depth=0, path="nbd://10.0.0.5:10809/vm1", format="raw", type="network", capacity=GIB)])
    (box,) = picture.layer_boxes
    assert (box.medium, box.corner, box.name) == ("network", box.h / 2, "vm1")
    assert box.detail.startswith("NBD export · raw")


def test_file_layers_keep_their_look():
    picture = layout([Layer(depth=0, path="/srv/a.qcow2", format="qcow2", capacity=GIB)])
    (box,) = picture.layer_boxes
    assert (box.medium, box.corner, box.detail) == ("file", 6, "qcow2 · 1.0 GiB virtual")


def test_mirror_onto_a_device_says_so():
    job = BlockJobInfo(type="copy", cur=1, end=4, mirror_path="/dev/vg0/lv1")
    picture = layout([Layer(depth=0, path="/srv/a.qcow2", format="qcow2", capacity=GIB)], job)
    mirror = next(b for b in picture.boxes if b.kind == "mirror")
    assert (mirror.medium, mirror.detail) == ("block", "block device · copy job · copying 25%")


@pytest.fixture
def block_disk(db):
    host = Hypervisor.objects.create(name="lab", uri="test:///default")
    domain = Domain.objects.create(hypervisor=host, uuid="00000000-0000-4000-8000-0000000000bb", name="lvmvm", state="running")
    disk = Disk.objects.create(domain=domain, target="vda", bus="virtio", type="block", format="raw", source="/dev/vg0/lv1")
    ChainLayer.objects.create(disk=disk, depth=0, path="/dev/vg0/lv1", format="raw", type="block", capacity=GIB)
    return disk


def test_disk_page_draws_a_block_device_layer(client_for, block_disk):
    html, groups = page_groups(client_for("viewer"), block_disk)
    (group,) = groups
    assert group["kind"] == "active"
    outer, edge = group["rects"][:2]
    assert outer["rx"] == "0" and edge["class"] == "device-edge"
    assert "block device · raw · 1.0 GiB virtual" in group["texts"]
    assert 'data-medium="block"' in html
