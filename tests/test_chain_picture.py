"""The backing chain as a picture: order, highlighting, long chains, missing layers, mirrors."""

import re
from html.parser import HTMLParser

import pytest
from django.urls import reverse

from hosts.chain_picture.layout import layout
from hosts.chain_picture.shapes import COMPACT_AFTER
from hosts.chain_picture.text import ellipsize, human_bytes, shorten_names
from hosts.models import ChainLayer, Disk, Domain, Hypervisor
from hosts.records import BlockJobInfo
from hosts.records import ChainLayer as Layer

GIB = 1024**3


def chain(*names: str, missing: set[int] = frozenset()) -> list[Layer]:
    return [
        Layer(
            depth=depth,
            path=f"/var/lib/lab/{name}",
            format="qcow2",
            capacity=GIB,
            allocation=(depth + 1) * 196 * 1024,
            missing=depth in missing,
        )
        for depth, name in enumerate(names)
    ]


def overlaps(a, b) -> bool:
    return a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h


# ---- layout (pure) ------------------------------------------------------------------


def test_three_layers_stack_active_on_top_base_at_bottom():
    picture = layout(chain("snap2.qcow2", "snap1.qcow2", "base.qcow2"))
    boxes = picture.layer_boxes
    assert [b.name for b in boxes] == ["snap2.qcow2", "snap1.qcow2", "base.qcow2"]
    assert [b.kind for b in boxes] == ["active", "backing", "base"]
    assert boxes[0].y < boxes[1].y < boxes[2].y
    assert "ACTIVE" in boxes[0].badge and boxes[2].badge == "BASE"
    assert boxes[0].detail == "qcow2 · 1.0 GiB virtual, 196.0 KiB allocated"
    assert [a.label for a in picture.arrows] == ["backed by", "backed by"]
    # Each arrow leaves the bottom of one box and ends above the next.
    for arrow, upper, lower in zip(picture.arrows, boxes, boxes[1:]):
        assert arrow.y1 == upper.y + upper.h and arrow.y2 < lower.y
    assert not picture.compact


def test_layers_given_out_of_order_are_drawn_by_depth():
    layers = chain("top", "mid", "bottom")
    picture = layout(list(reversed(layers)))
    assert [b.depth for b in picture.layer_boxes] == [0, 1, 2]


def test_fifty_layers_stay_readable():
    """Readable means: every layer drawn, in order, none overlapping, one-line rows whose text
    is at least 12 px and fits its box, long names shortened (keeping the part that tells
    them apart) with the full path as tooltip, and the picture grows linearly rather than
    shrinking the text."""
    names = [f"snapshot-{i:02d}-of-a-rather-long-nightly-backup-series.qcow2" for i in range(50)]
    picture = layout(chain(*names))
    boxes = picture.layer_boxes
    assert picture.compact and len(boxes) == 50
    assert [b.depth for b in boxes] == list(range(50))
    assert all(not overlaps(a, b) for a, b in zip(boxes, boxes[1:]))
    assert all(b.h >= 26 and b.font_size >= 12 for b in boxes)
    for box, name in zip(boxes, names):
        assert box.title.endswith(name)
        assert box.name != name and "…" in box.name  # shortened …
        assert box.name.endswith(".qcow2")  # … in the middle, so the extension stays
        assert f"-{box.depth:02d}-" in box.name  # the number that differs stays visible
        # Monospace text at 0.62 em per character fits the left half of the box.
        assert len(box.name) * box.font_size * 0.62 <= box.w / 2
    assert len({b.name for b in boxes}) == 50  # no two rows read the same
    assert boxes[0].kind == "active" and boxes[-1].kind == "base"
    assert picture.height < 50 * 50  # compact rows: about 44 units per layer
    assert picture.height > 50 * 30


def test_compact_rows_start_after_the_threshold():
    assert not layout(chain(*[f"l{i}" for i in range(COMPACT_AFTER)])).compact
    assert layout(chain(*[f"l{i}" for i in range(COMPACT_AFTER + 1)])).compact


def test_missing_layer_is_dashed_and_named():
    picture = layout(chain("snap2.qcow2", "snap1.qcow2", "base.qcow2", missing={1}))
    middle = picture.layer_boxes[1]
    assert middle.kind == "missing" and middle.dashed
    assert middle.badge == "MISSING" and middle.detail == "missing: deleted or moved"
    assert middle.title.endswith("/snap1.qcow2")
    assert picture.missing == 1
    assert not picture.layer_boxes[0].dashed


def test_a_chain_unknown_below_its_last_layer_ends_in_a_dashed_unknown_box_and_has_no_base():
    picture = layout(chain("vm.qcow2"), unknown_below="Chain unknown while stopped below vm.qcow2: no pool")

    (only,) = picture.layer_boxes
    unknown = picture.boxes[-1]
    assert only.kind == "active" and only.badge != "BASE"
    assert (unknown.kind, unknown.name, unknown.dashed) == ("unknown", "? chain unknown while stopped", True)
    assert unknown.title.startswith("Chain unknown while stopped below vm.qcow2")
    assert unknown.y > only.y + only.h
    assert [arrow.kind for arrow in picture.arrows] == ["backing"]
    assert picture.layer_count == 1


def test_mirror_job_drawn_beside_active_layer():
    job = BlockJobInfo(type="copy", cur=42, end=100, mirror_path="/backups/copy.qcow2", ready=False)
    picture = layout(chain("snap2.qcow2", "snap1.qcow2", "base.qcow2"), job)
    active, mirror = picture.layer_boxes[0], picture.mirror
    assert mirror is not None and mirror.name == "copy.qcow2" and mirror.title == "/backups/copy.qcow2"
    assert mirror.x > active.x + active.w  # beside, not below
    assert mirror.y <= active.y + active.h / 2 <= mirror.y + mirror.h  # level with the active layer
    assert mirror.progress == pytest.approx(0.42)
    assert "copying 42%" in mirror.detail
    arrow = next(a for a in picture.arrows if a.kind == "mirror")
    assert arrow.label == "mirroring →" and arrow.sublabel == "not ready"
    assert arrow.x1 == active.x + active.w and arrow.x2 < mirror.x
    assert picture.width >= mirror.x + mirror.w


def test_ready_mirror_says_ready():
    job = BlockJobInfo(type="copy", cur=100, end=100, mirror_path="/backups/copy.qcow2", ready=True)
    picture = layout(chain("a.qcow2"), job)
    assert picture.mirror.badge == "READY" and "ready to pivot" in picture.mirror.detail
    assert next(a for a in picture.arrows if a.kind == "mirror").sublabel == "ready"


def test_job_before_it_knows_its_size_is_starting_not_zero_percent():
    job = BlockJobInfo(type="copy", cur=0, end=0, mirror_path="/backups/copy.qcow2")
    assert "starting" in layout(chain("a.qcow2"), job).mirror.detail


def test_job_without_mirror_is_described_in_words():
    picture = layout(chain("a.qcow2", "b.qcow2"), BlockJobInfo(type="commit", cur=5, end=10))
    assert picture.mirror is None and picture.job_note == "A commit block job is running on this disk (50%)."


def test_small_picture_folds_the_middle_and_counts_hidden_missing_layers():
    picture = layout(chain(*[f"l{i}.qcow2" for i in range(20)], missing={7}), max_rows=4)
    kinds = [b.kind for b in picture.boxes]
    assert kinds == ["active", "backing", "collapsed", "base"]
    folded = picture.boxes[2]
    assert folded.name == "⋯ 17 more layers (1 missing)" and picture.hidden == 17
    assert picture.boxes[-1].name == "l19.qcow2" and picture.boxes[-1].depth == 19


def test_shortened_names_keep_what_differs():
    names = [f"vm-disk-2024-01-{d:02d}T00:00:00Z-overlay-for-testing.qcow2" for d in (1, 2)]
    assert shorten_names(names, 32) == ["vm-disk-2024-01-01T00:0…ng.qcow2", "vm-disk-2024-01-02T00:0…ng.qcow2"]
    # A differing part far into the name: the shared prefix is elided instead.
    deep = [f"{'x' * 40}-{n}-tail.qcow2" for n in ("alpha", "bravo")]
    short = shorten_names(deep, 24)
    assert all(len(n) <= 24 for n in short) and "alpha" in short[0] and "bravo" in short[1]
    assert shorten_names(["a.qcow2", "b.qcow2"], 24) == ["a.qcow2", "b.qcow2"]


def test_helpers():
    assert human_bytes(None) == "?"
    assert human_bytes(512) == "512 B"
    assert human_bytes(GIB) == "1.0 GiB"
    assert human_bytes(1536 * 1024) == "1.5 MiB"
    assert ellipsize("abcdefghij.qcow2", 10) == "abcd…qcow2"
    assert ellipsize("abcdefghij.qcow2", 9) == "abcd…cow2"
    assert ellipsize("short", 9) == "short"


# ---- the rendered SVG on the disk page ----------------------------------------------


class SvgBoxes(HTMLParser):
    """Collects the layer groups of the chain SVG: kind, depth, rect attributes, texts."""

    def __init__(self):
        super().__init__()
        self.groups: list[dict] = []
        self._current: dict | None = None
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "g" and "layer" in attrs.get("class", ""):
            self._current = {"kind": attrs["data-kind"], "depth": attrs.get("data-depth"), "texts": [], "rects": [], "title": ""}
            self.groups.append(self._current)
        elif self._current is not None and tag == "rect":
            self._current["rects"].append(attrs)
        elif self._current is not None and tag in ("text", "title"):
            self._in = tag

    def handle_endtag(self, tag):
        if tag == "g":
            self._current = None
        self._in = None

    def handle_data(self, data):
        if self._current is not None and self._in == "text":
            self._current["texts"].append(data)
        elif self._current is not None and self._in == "title":
            self._current["title"] += data


@pytest.fixture
def disk(db):
    host = Hypervisor.objects.create(name="lab", uri="test:///default")
    domain = Domain.objects.create(hypervisor=host, uuid="00000000-0000-4000-8000-0000000000aa", name="testvm", state="running")
    return Disk.objects.create(domain=domain, target="vda", bus="virtio", format="qcow2", source="/lab/snap2.qcow2")


def page_groups(client, disk) -> tuple[str, list[dict]]:
    url = reverse("disk_detail", args=["lab", disk.domain.uuid, disk.target])
    html = client.get(url).content.decode()
    parser = SvgBoxes()
    parser.feed(html)
    return html, parser.groups


def add_layers(disk, names, missing=()):
    for depth, name in enumerate(names):
        ChainLayer.objects.create(
            disk=disk, depth=depth, path=f"/lab/{name}", format="qcow2", capacity=GIB, allocation=200704, missing=depth in missing
        )


def test_disk_page_draws_three_layers_in_order_with_active_highlighted(client_for, disk):
    add_layers(disk, ["snap2.qcow2", "snap1.qcow2", "base.qcow2"])
    html, groups = page_groups(client_for("viewer"), disk)
    assert f'id="chain-{disk.pk}"' in html
    assert [g["texts"][0] for g in groups] == ["snap2.qcow2", "snap1.qcow2", "base.qcow2"]
    assert [g["kind"] for g in groups] == ["active", "backing", "base"]
    assert groups[0]["title"] == "/lab/snap2.qcow2"
    assert "ACTIVE · takes writes" in groups[0]["texts"]
    assert "qcow2 · 1.0 GiB virtual, 196.0 KiB allocated" in groups[1]["texts"]
    assert html.count('class="arrow-label">backed by</text>') == 2
    ys = [float(g["rects"][0]["y"]) for g in groups]
    assert ys == sorted(ys)


def test_disk_page_draws_missing_layer_dashed(client_for, disk):
    add_layers(disk, ["snap2.qcow2", "snap1.qcow2", "base.qcow2"], missing={1})
    _, groups = page_groups(client_for("viewer"), disk)
    assert groups[1]["kind"] == "missing"
    assert groups[1]["rects"][0].get("stroke-dasharray") == "6 4"
    assert "stroke-dasharray" not in groups[0]["rects"][0]


def test_disk_page_draws_the_mirror_of_a_running_copy(client_for, disk):
    add_layers(disk, ["snap2.qcow2", "snap1.qcow2", "base.qcow2"])
    Disk.objects.filter(pk=disk.pk).update(job_type="copy", job_cur=42, job_end=100, job_mirror_path="/backups/copy.qcow2")
    html, groups = page_groups(client_for("viewer"), disk)
    mirror = next(g for g in groups if g["kind"] == "mirror")
    assert mirror["texts"][0] == "copy.qcow2" and mirror["title"] == "/backups/copy.qcow2"
    assert "copy job · copying 42%" in mirror["texts"]
    assert "mirroring →" in html and ">not ready</text>" in html
    assert "block job (copy, 42%) — not started by blockmig" in html


def test_disk_page_with_fifty_layers_lists_every_layer(client_for, disk):
    add_layers(disk, [f"layer-{i:02d}.qcow2" for i in range(50)])
    html, groups = page_groups(client_for("viewer"), disk)
    assert len(groups) == 50 and [int(g["depth"]) for g in groups] == list(range(50))
    assert "chain--compact" in html
    assert all(g["title"] == f"/lab/layer-{i:02d}.qcow2" for i, g in enumerate(groups))
    # The text list under the picture names every path too.
    assert len(re.findall(r"/lab/layer-\d\d\.qcow2", html)) >= 150  # desc + title + table
