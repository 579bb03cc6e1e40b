"""Where the boxes of a chain picture go: the layers top-down, a folded middle for the
small pictures, an "unknown" box under a chain nothing could read, the mirror target
beside the active layer and the arrows between them. The one place that decides
positions; the shapes and the words they carry come from the sibling modules."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from hosts.chain_picture.jobs_and_media import MEDIUM_WORDS, disk_job, job_percent, job_words, medium_of
from hosts.chain_picture.shapes import (
    BOX_WIDTH,
    COMPACT_AFTER,
    COMPACT_EXTRA_WIDTH,
    COMPACT_FONT_SIZE,
    COMPACT_ROW_GAP,
    COMPACT_ROW_HEIGHT,
    FONT_SIZE,
    MARGIN,
    MIRROR_GAP,
    MIRROR_HEIGHT,
    MIRROR_WIDTH,
    PADDING,
    ROW_GAP,
    ROW_HEIGHT,
    Arrow,
    Box,
    ChainPicture,
    Layer,
)
from hosts.chain_picture.text import chars_that_fit, ellipsize, human_bytes, shorten_names
from hosts.records import BlockJobInfo

if TYPE_CHECKING:  # annotations only: the layout itself never touches the database
    from hosts.models import Disk


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


def picture_for_disk(disk: Disk, *, max_rows: int | None = None, box_width: float = BOX_WIDTH) -> ChainPicture:
    """Layout for a Disk row; use a prefetched `layers` relation to keep queries bounded."""
    unknown = "" if getattr(disk, "chain_known", True) else disk.chain_note or "chain unknown while stopped"
    return layout(list(disk.layers.all()), disk_job(disk), max_rows=max_rows, box_width=box_width, unknown_below=unknown)
