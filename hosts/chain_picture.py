"""Geometry of a disk's backing-chain picture.

Pure: given the chain's layers (active first) and the disk's block job, it returns boxes
and arrows in SVG user units. The template `hosts/disk_detail.html#chain_picture` only
draws what this module decides, so readability rules (compact rows for long chains,
truncated names, a collapsed middle in the small pictures) are tested here without HTML.

Layers and jobs are read by attribute, so both `hosts.records` dataclasses and
`hosts.models.ChainLayer` rows work.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

from hosts.records import BlockJobInfo

if TYPE_CHECKING:  # annotations only: the layout itself never touches the database
    from hosts.models import Disk


class Layer(Protocol):
    """What the layout reads of a layer: a hosts.records.ChainLayer or a hosts.models.ChainLayer row."""

    @property
    def depth(self) -> int: ...
    @property
    def path(self) -> str: ...
    @property
    def format(self) -> str: ...
    @property
    def capacity(self) -> int | None: ...
    @property
    def allocation(self) -> int | None: ...
    @property
    def missing(self) -> bool: ...


MARGIN = 16
BOX_WIDTH = 440
MIRROR_GAP = 150  # room between the active layer and the mirror target for the arrow label
MIRROR_WIDTH = 280
MIRROR_HEIGHT = 62

# Normal rows: two lines of text per box and a labelled "backed by" arrow between rows.
ROW_HEIGHT = 58
ROW_GAP = 34
FONT_SIZE = 13
# Long chains: one line per box, shorter arrows, the legend explains the arrow once.
COMPACT_AFTER = 12
COMPACT_ROW_HEIGHT = 30
COMPACT_ROW_GAP = 14
COMPACT_FONT_SIZE = 12
COMPACT_EXTRA_WIDTH = 80

PADDING = 12
PILL_FONT_SIZE = 11
# File names are drawn in a monospace font, so characters have a predictable width.
MONO_CHAR_EM = 0.62


def human_bytes(value: int | None) -> str:
    """1073741824 → '1.0 GiB'. Binary units, as qemu-img and libvirt report sizes."""
    if value is None:
        return "?"
    if value < 1024:
        return f"{value} B"
    exponent = min(int(math.log(value, 1024)), 5)
    unit = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")[exponent]
    return f"{value / 1024**exponent:.1f} {unit}"


def ellipsize(text: str, limit: int) -> str:
    """Shorten in the middle so both the start and the extension stay visible."""
    if len(text) <= limit:
        return text
    if limit < 5:
        return text[:limit]
    head = (limit - 1) // 2  # the tail gets any odd character: it holds the extension
    tail = limit - 1 - head
    return text[:head] + "…" + text[len(text) - tail :]


def _common_suffix_len(names: Sequence[str]) -> int:
    reversed_names = [name[::-1] for name in names]
    return len(posixpath.commonprefix(reversed_names))


def shorten_names(names: Sequence[str], limit: int) -> list[str]:
    """Shorten each name to `limit` characters, keeping the part that tells it apart.

    Snapshot chains are often named alike (nightly-2025-10-01-…-db.qcow2, …-02-…): a plain
    middle ellipsis would cut exactly the date that differs. So the characters shared by
    every name are what gets elided, and the end (the extension) stays.
    """
    if len(names) < 2:
        return [ellipsize(name, limit) for name in names]
    shortest = min(len(name) for name in names)
    prefix = len(posixpath.commonprefix(list(names)))
    suffix = min(_common_suffix_len(names), shortest - prefix)
    tail_keep = 8  # enough for ".qcow2" and a character or two before it
    shortened = []
    for name in names:
        if len(name) <= limit:
            shortened.append(name)
            continue
        core_end = len(name) - suffix  # name[prefix:core_end] differs between names
        tail = name[max(core_end, len(name) - tail_keep) :]
        room = limit - 1 - len(tail)  # characters left for the head, after "…" and the tail
        if core_end <= room:
            # The head reaches past the differing part: show as much as fits.
            shortened.append(name[:room] + "…" + tail)
        elif core_end - prefix + 1 <= room:
            # Elide part of the shared prefix instead, keeping the differing part whole.
            start = core_end - (room - 1)
            shortened.append("…" + name[start:core_end] + "…" + tail)
        else:
            shortened.append(ellipsize(name, limit))
    return shortened


def chars_that_fit(width: float, font_size: float) -> int:
    return max(4, int(width / (font_size * MONO_CHAR_EM)))


@dataclass(frozen=True)
class Box:
    kind: str  # active, backing, base, missing, mirror, collapsed
    x: float
    y: float
    w: float
    h: float
    name: str  # what fits in the box
    title: str  # the full path, shown as a tooltip
    detail: str = ""
    badge: str = ""
    depth: int | None = None
    font_size: int = FONT_SIZE
    compact: bool = False
    progress: float | None = None  # 0..1 for a mirror that is still copying
    dashed: bool = False
    medium: str = "file"  # file, block (a device: square corners, an inner edge) or network (NBD: round ends)

    @property
    def corner(self) -> float:
        """Corner radius: the shape tells a file from a block device from a network export."""
        return {"block": 0, "network": self.h / 2}.get(self.medium, 6)

    @property
    def edge_x(self) -> float:
        return self.x + 4

    @property
    def edge_y(self) -> float:
        return self.y + 4

    @property
    def edge_w(self) -> float:
        return max(0, self.w - 8)

    @property
    def edge_h(self) -> float:
        return max(0, self.h - 8)

    @property
    def text_x(self) -> float:
        return self.x + PADDING

    @property
    def right_x(self) -> float:
        return self.x + self.w - PADDING

    @property
    def name_y(self) -> float:
        if self.compact:
            return self.y + self.h / 2 + self.font_size * 0.35
        return self.y + 22

    @property
    def detail_y(self) -> float:
        return self.y + 44 if not self.compact else self.name_y

    @property
    def right_text(self) -> str:
        """Compact rows have one line: the badge joins the format and sizes on the right."""
        return f"{self.badge} · {self.detail}" if self.badge and self.detail else self.badge or self.detail

    # Full-size rows carry their badge as a small tab on the box's top edge, right-aligned.
    @property
    def pill_w(self) -> float:
        return round(len(self.badge) * PILL_FONT_SIZE * 0.62 + 14, 1)

    @property
    def pill_x(self) -> float:
        return self.x + self.w - PADDING - self.pill_w

    @property
    def pill_y(self) -> float:
        return self.y - 9

    @property
    def pill_text_x(self) -> float:
        return self.pill_x + self.pill_w / 2

    @property
    def pill_text_y(self) -> float:
        return self.y + 4

    @property
    def bar_y(self) -> float:
        return self.y + self.h - 8

    @property
    def bar_w(self) -> float:
        return self.w - 2 * PADDING

    @property
    def bar_done_w(self) -> float:
        return round(self.bar_w * (self.progress or 0), 1)


@dataclass(frozen=True)
class Arrow:
    kind: str  # backing, mirror
    x1: float
    y1: float
    x2: float
    y2: float
    label: str = ""
    sublabel: str = ""

    @property
    def label_x(self) -> float:
        return (self.x1 + self.x2) / 2 + (8 if self.kind == "backing" else 0)

    @property
    def label_y(self) -> float:
        if self.kind == "backing":
            return (self.y1 + self.y2) / 2 + 4
        return self.y1 - 8

    @property
    def sublabel_y(self) -> float:
        return self.y1 + 18


@dataclass(frozen=True)
class ChainPicture:
    width: float
    height: float
    boxes: tuple[Box, ...]
    arrows: tuple[Arrow, ...]
    layer_count: int
    compact: bool = False
    hidden: int = 0  # layers folded into the "more layers" box of a small picture
    missing: int = 0
    job_note: str = ""  # a block job without a mirror target (commit, pull) in words
    font_size: int = FONT_SIZE
    layers: tuple[Layer, ...] = field(default=(), repr=False)  # as given, for the text list under the picture

    @property
    def layer_boxes(self) -> tuple[Box, ...]:
        return tuple(b for b in self.boxes if b.kind not in ("mirror", "collapsed", "unknown"))

    @property
    def mirror(self) -> Box | None:
        return next((b for b in self.boxes if b.kind == "mirror"), None)


def job_percent(job: BlockJobInfo) -> int | None:
    """None before the job knows its size (end == 0)."""
    if not job.end:
        return None
    return min(100, int(job.cur * 100 / job.end))


def job_words(job: BlockJobInfo) -> str:
    percent = job_percent(job)
    if job.ready:
        return "ready to pivot"
    return "starting" if percent is None else f"copying {percent}%"


# What a layer's detail line starts with, by medium: a file needs no word.
MEDIUM_WORDS = {"file": "", "block": "block device · ", "network": "NBD export · "}


def medium_of(path: str, declared: str = "") -> str:
    """file, block or network: libvirt's disk type where known, else what the path says
    (a mirror target carries only its path: /dev/… is a device, nbd://… an export)."""
    if declared in ("block", "network"):
        return declared
    if "://" in path:
        return "network"
    if path.startswith("/dev/"):
        return "block"
    return "file"


def _layer_box(layer: Layer, index: int, count: int, x: float, y: float, w: float, h: float, compact: bool, mini: bool) -> Box:
    font = COMPACT_FONT_SIZE if compact else FONT_SIZE
    path = layer.path or ""
    if mini:
        sizes = human_bytes(layer.capacity)
    elif compact:
        sizes = (
            f"{human_bytes(layer.capacity)} / {human_bytes(layer.allocation)}"
            if layer.allocation is not None
            else human_bytes(layer.capacity)
        )
    else:
        sizes = f"{human_bytes(layer.capacity)} virtual"
        if layer.allocation is not None:
            sizes += f", {human_bytes(layer.allocation)} allocated"
    medium = medium_of(path, getattr(layer, "type", "file"))
    if layer.missing:
        kind = "missing"
        name = posixpath.basename(path) or "(unknown file)"
        detail = "missing: deleted or moved" if path else "not found on the host"
    else:
        kind = "active" if index == 0 else ("base" if index == count - 1 else "backing")
        name = posixpath.basename(path) or path or "(no path)"
        detail = f"{MEDIUM_WORDS[medium]}{layer.format or '?'} · {sizes}"
    if compact:
        badge = {"active": "ACTIVE", "base": "BASE", "missing": "MISSING", "backing": ""}[kind]
        # One line: the name takes the left half, badge, format and sizes the right half.
        name_chars = chars_that_fit(w * 0.5 - PADDING - 6, font)
    else:
        badge = {"active": "ACTIVE · takes writes", "base": "BASE", "missing": "MISSING", "backing": ""}[kind]
        name_chars = chars_that_fit(w - 2 * PADDING, font)
    return Box(
        kind=kind,
        x=x,
        y=y,
        w=w,
        h=h,
        name=ellipsize(name, name_chars),
        title=path or "(no path known)",
        detail=detail,
        badge=badge,
        depth=layer.depth,
        font_size=font,
        compact=compact,
        dashed=bool(layer.missing),
        medium=medium,
    )


def _collapsed_box(hidden: Sequence[Layer], x: float, y: float, w: float, h: float, compact: bool) -> Box:
    missing = sum(1 for layer in hidden if layer.missing)
    name = f"⋯ {len(hidden)} more layer{'s' if len(hidden) != 1 else ''}"
    if missing:
        name += f" ({missing} missing)"
    return Box(
        kind="collapsed",
        x=x,
        y=y,
        w=w,
        h=h,
        name=name,
        title="\n".join(layer.path or "(missing)" for layer in hidden),
        font_size=COMPACT_FONT_SIZE if compact else FONT_SIZE,
        compact=True,
        dashed=True,
    )


def _distinct_names(boxes: list[Box]) -> list[Box]:
    """Re-shorten the layer names together so that no two boxes read the same."""
    layer_boxes = [b for b in boxes if b.kind not in ("collapsed", "unknown")]
    if len(layer_boxes) < 2:
        return boxes
    full = [posixpath.basename(b.title) if "/" in b.title else b.name for b in layer_boxes]
    limit = max(len(b.name) for b in layer_boxes)
    names = iter(shorten_names(full, limit))
    return [b if b.kind in ("collapsed", "unknown") else replace(b, name=next(names)) for b in boxes]


def layout(
    layers: Sequence[Layer],
    job: BlockJobInfo | None = None,
    *,
    max_rows: int | None = None,
    box_width: float = BOX_WIDTH,
    unknown_below: str = "",
) -> ChainPicture:
    """Place the chain top-down (active first, base last) and a mirror target beside it.

    max_rows folds the middle of a long chain into one "more layers" box (for the small
    pictures on the domain page); the disk page passes None and shows every layer,
    switching to compact one-line rows above COMPACT_AFTER layers. `unknown_below` (why
    nothing could tell what lies under the last layer) adds a dashed "unknown" box there
    instead of letting the last layer pass for a base image.
    """
    layers = sorted(layers, key=lambda layer: layer.depth)
    count = len(layers)
    shown: list[Layer] = list(layers)
    hidden: list[Layer] = []
    fold_at: int | None = None
    if max_rows is not None and count > max_rows:
        keep_top = max(1, max_rows - 2)
        fold_at = keep_top
        hidden = layers[keep_top:-1]
        shown = layers[:keep_top] + layers[-1:]

    rows = len(shown) + (1 if hidden else 0)
    mini = max_rows is not None
    compact = rows > COMPACT_AFTER or mini
    if compact and not mini:
        box_width += COMPACT_EXTRA_WIDTH  # one-line rows need room for name and sizes side by side
    h = COMPACT_ROW_HEIGHT if compact else ROW_HEIGHT
    gap = COMPACT_ROW_GAP if compact else ROW_GAP
    if max_rows is not None:
        gap = 18

    x = MARGIN
    boxes: list[Box] = []
    row = 0
    for index, layer in enumerate(shown):
        if fold_at is not None and index == fold_at:
            boxes.append(_collapsed_box(hidden, x, MARGIN + row * (h + gap), box_width, h, compact))
            row += 1
        real_index = index if fold_at is None or index < fold_at else count - 1
        # Above an unknown rest, no layer is known to be the base.
        drawn_count = count + 1 if unknown_below else count
        boxes.append(_layer_box(layer, real_index, drawn_count, x, MARGIN + row * (h + gap), box_width, h, compact, mini))
        row += 1

    if unknown_below and boxes:
        boxes.append(
            Box(
                kind="unknown",
                x=x,
                y=MARGIN + row * (h + gap),
                w=box_width,
                h=h if compact else COMPACT_ROW_HEIGHT,
                name="? chain unknown while stopped",
                title=unknown_below,
                font_size=COMPACT_FONT_SIZE if compact else FONT_SIZE,
                compact=True,
                dashed=True,
            )
        )
    boxes = _distinct_names(boxes)

    arrows: list[Arrow] = []
    cx = x + box_width / 2
    for upper, lower in zip(boxes, boxes[1:]):
        label = "" if compact else "backed by"
        arrows.append(Arrow("backing", cx, upper.y + upper.h, cx, lower.y - 2, label=label))

    width = MARGIN + box_width + MARGIN
    bottom = boxes[-1].y + boxes[-1].h if boxes else MARGIN
    job_note = ""
    if job is not None and job.type:
        if job.mirror_path and boxes:
            active = boxes[0]
            mx = x + box_width + MIRROR_GAP
            mirror_h = max(MIRROR_HEIGHT, h)
            my = active.y + active.h / 2 - mirror_h / 2 if not compact else active.y
            my = max(MARGIN, my)
            percent = job_percent(job)
            boxes.append(
                Box(
                    kind="mirror",
                    x=mx,
                    y=my,
                    w=MIRROR_WIDTH,
                    h=mirror_h,
                    name=ellipsize(posixpath.basename(job.mirror_path), chars_that_fit(MIRROR_WIDTH - 2 * PADDING, FONT_SIZE)),
                    title=job.mirror_path,
                    detail=f"{MEDIUM_WORDS[medium_of(job.mirror_path)]}{job.type} job · {job_words(job)}",
                    badge="READY" if job.ready else "",
                    font_size=FONT_SIZE,
                    progress=1.0 if job.ready else (percent or 0) / 100,
                    medium=medium_of(job.mirror_path),
                )
            )
            y = active.y + active.h / 2
            arrows.append(
                Arrow(
                    "mirror",
                    x + box_width,
                    y,
                    mx - 2,
                    y,
                    label="mirroring →",
                    sublabel="ready" if job.ready else "not ready",
                )
            )
            width = mx + MIRROR_WIDTH + MARGIN
            bottom = max(bottom, my + mirror_h)
        else:
            percent = job_percent(job)
            job_note = f"A {job.type} block job is running on this disk" + (f" ({percent}%)" if percent is not None else "") + "."

    return ChainPicture(
        width=width,
        height=bottom + MARGIN,
        boxes=tuple(boxes),
        arrows=tuple(arrows),
        layer_count=count,
        compact=compact,
        hidden=len(hidden),
        missing=sum(1 for layer in layers if layer.missing),
        job_note=job_note,
        font_size=COMPACT_FONT_SIZE if compact else FONT_SIZE,
        layers=tuple(layers),
    )


def disk_job(disk: Disk) -> BlockJobInfo | None:
    """The block job stored on a hosts.models.Disk, as the plain record the layout reads."""
    if not disk.job_type:
        return None
    return BlockJobInfo(
        type=disk.job_type,
        cur=disk.job_cur,
        end=disk.job_end,
        mirror_path=disk.job_mirror_path,
        ready=disk.job_ready,
    )


def picture_for_disk(disk: Disk, *, max_rows: int | None = None, box_width: float = BOX_WIDTH) -> ChainPicture:
    """Layout for a Disk row; use a prefetched `layers` relation to keep queries bounded."""
    unknown = "" if getattr(disk, "chain_known", True) else disk.chain_note or "chain unknown while stopped"
    return layout(list(disk.layers.all()), disk_job(disk), max_rows=max_rows, box_width=box_width, unknown_below=unknown)
