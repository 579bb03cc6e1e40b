"""Words and pictures for a terminal: sizes, ETAs, the progress bar, plain tables."""

from __future__ import annotations

from typing import TextIO

from blockmig.cli.exits import AWAITING

BAR_WIDTH = 28


def format_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA —"
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"ETA {seconds} s"
    if seconds < 3600:
        return f"ETA {seconds // 60} min {seconds % 60:02d} s"
    return f"ETA {seconds // 3600} h {seconds % 3600 // 60:02d} min"


def progress_line(migration: dict) -> str:
    """`[#######.......]  50.0 %  512.0 MiB of 1.0 GiB  64.0 MiB/s  ETA 8 s  copying`; a queued
    migration says its place and what it waits for instead (no bar: nothing copies yet)."""
    queue = migration.get("queue")
    if queue:
        return f"queued, position {queue['position']}: {queue['reason']}"
    p = migration["progress"]
    percent = p.get("percent")
    filled = round(BAR_WIDTH * (percent or 0) / 100)
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    share = f"{percent:5.1f} %" if percent is not None else "  ? % "
    total = format_bytes(p["bytes_total"]) if p.get("bytes_total") else "?"
    rate = f"{format_bytes(p.get('rate_bps') or 0)}/s"
    eta = "mirror in sync" if migration["state"] == AWAITING else format_eta(p.get("eta_seconds"))
    return f"[{bar}] {share}  {format_bytes(p.get('bytes_done'))} of {total}  {rate}  {eta}  {migration['state']}"


def print_table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n")
