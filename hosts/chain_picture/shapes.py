"""What a chain picture is made of: boxes, arrows and the picture itself, with the
dimensions they are drawn at. Frozen dataclasses whose properties give the template every
coordinate it draws; where they go is the layout's business (hosts.chain_picture.layout)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


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
