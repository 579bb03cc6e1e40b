"""Fitting text into a chain picture's boxes: sizes in binary units, names shortened so that
the part that tells them apart stays visible. Separate from the geometry because the pages
use the same words outside the picture (template tags)."""

from __future__ import annotations

import math
import posixpath
from collections.abc import Sequence

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
