"""How a migration's progress reads to a person: phase wording, percent, rate, ETA.

Pure: plain numbers in, numbers and short strings out, so the migration page, the list
rows, the dashboard and the live fragments (issue 4) all say the same thing, and it is
tested without a database. The rate the engine stores (`rate_bps`) is `moving_rate` over
the samples `add_sample` keeps; the pages only read what it stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from blockmig.states import State

MIB = 1024 * 1024
UNKNOWN = "—"

PHASES: dict[str, str] = {
    State.REQUESTED: "Requested — waiting for a worker",
    State.PREFLIGHT: "Checking the host (preflight)",
    State.QUEUED: "Queued — waiting for a copy slot",
    State.COPYING: "Copying",
    State.READY: "Ready — awaiting approval",
    State.PIVOTING: "Pivoting to the copy",
    State.COMPLETED: "Completed",
    State.ABORTING: "Aborting",
    State.ABORTED: "Aborted — the VM stays on its source",
    State.FAILED: "Failed",
}


def phase_label(state: str, *, auto_pivot: bool = False) -> str:
    """The human wording for a state ("Ready — awaiting approval")."""
    if state == State.READY and auto_pivot:
        return "Ready — pivoting automatically (host policy)"
    return PHASES.get(state, str(state).capitalize())


def percent(done: int, total: int) -> float | None:
    """Share of `total` copied, 0–100; None while the total is unknown (end == 0)."""
    if total <= 0:
        return None
    return max(0.0, min(100.0, done * 100.0 / total))


def eta_seconds(done: int, total: int, rate_bps: float) -> float | None:
    """Seconds left at the current (moving-average) rate; None when it cannot be told."""
    if total <= 0 or rate_bps <= 0:
        return None
    return max(0, total - done) / rate_bps


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return UNKNOWN
    seconds = round(seconds)
    if seconds < 1:
        return "< 1 s"
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def format_rate(rate_bps: float) -> str:
    if rate_bps <= 0:
        return UNKNOWN
    return f"{rate_bps / MIB:.1f} MiB/s"


def format_bytes(n: int | None) -> str:
    """IEC units, as qemu-img and virsh print them: 512 B, 1.5 KiB, 2.0 GiB."""
    if n is None:
        return UNKNOWN
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_percent(value: float | None) -> str:
    if value is None:
        return UNKNOWN
    return f"{value:.1f} %" if value < 100 else "100 %"


def growth_note(*, total_grew: bool, synchronous_writes: bool, host_supports_sync: bool) -> str:
    """Why the total moves while copying, and whether synchronous writes would help."""
    if not total_grew:
        return ""
    note = "The total grows because the guest keeps writing while the copy runs."
    if synchronous_writes:
        return note + " Synchronous writes are on, so the copy will still converge."
    if host_supports_sync:
        return note + (
            " If it never catches up, abort and start again with synchronous writes:"
            " the guest's writes then go to both copies at once."
        )
    return note + (
        " This host cannot do synchronous writes; raise the bandwidth limit or lighten the guest's writes so the copy catches up."
    )


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    rate_bps: float
    state: str = ""

    @property
    def percent(self) -> float | None:
        if self.state == State.COMPLETED:
            return 100.0
        return percent(self.done, self.total)

    @property
    def percent_text(self) -> str:
        return format_percent(self.percent)

    @property
    def bar_width(self) -> str:
        """CSS width for the bar, with a dot as decimal mark whatever the locale."""
        return f"{(self.percent or 0):.1f}%"

    @property
    def known(self) -> bool:
        return self.percent is not None

    @property
    def done_text(self) -> str:
        return format_bytes(self.done)

    @property
    def total_text(self) -> str:
        return format_bytes(self.total) if self.total > 0 else UNKNOWN

    @property
    def running(self) -> bool:
        return self.state in (State.COPYING, State.READY, State.PIVOTING)

    @property
    def rate_text(self) -> str:
        return format_rate(self.rate_bps) if self.running else UNKNOWN

    @property
    def eta(self) -> float | None:
        if self.state != State.COPYING:
            return None
        return eta_seconds(self.done, self.total, self.rate_bps)

    @property
    def eta_text(self) -> str:
        if self.state == State.READY:
            return "mirror in sync"
        return format_eta(self.eta)


class MigrationFigures(Protocol):
    """The fields of a Migration row that its progress reads."""

    bytes_done: int
    bytes_total: int
    rate_bps: float
    state: str


class DiskFigures(Protocol):
    """The fields of a MigrationDisk row (or a block job) that its progress reads."""

    cur: int
    end: int


def of_migration(migration: MigrationFigures) -> Progress:
    """Progress of a Migration row (read by attribute, so any object with the fields works)."""
    return Progress(migration.bytes_done, migration.bytes_total, migration.rate_bps, migration.state)


def of_disk(disk: DiskFigures, state: str = "") -> Progress:
    return Progress(disk.cur, disk.end, 0.0, state)


RATE_WINDOW = 5.0  # seconds of history behind the moving-average rate

Sample = tuple[float, int]  # (monotonic seconds, bytes copied so far)


def add_sample(samples: Sequence[Sample], t: float, cur: int, window: float = RATE_WINDOW) -> tuple[Sample, ...]:
    """`samples` plus (t, cur), without those taken more than `window` seconds before t."""
    return tuple(sample for sample in (*samples, (t, cur)) if t - sample[0] <= window)


def moving_rate(samples: Sequence[Sample]) -> float:
    """Bytes per second from the oldest sample to the newest.

    A moving window, not the last delta: block-job progress arrives in bursts, and an ETA
    that jumps every second is worse than none. Never negative (a job that started again
    reads 0 until the window has moved past the restart); 0 with fewer than two samples.
    """
    if len(samples) < 2:
        return 0.0
    (t0, c0), (t1, c1) = samples[0], samples[-1]
    return max((c1 - c0) / (t1 - t0), 0.0) if t1 > t0 else 0.0


def detail_items(details: Mapping[str, object] | None) -> list[tuple[str, str]]:
    """An event's details as short (key, text) pairs; empty values are left out."""
    items = []
    for key, value in (details or {}).items():
        if value in (None, "", [], {}):
            continue
        if isinstance(value, dict):
            text = "; ".join(
                f"{k}: {' → '.join(str(x) for x in v.values()) if isinstance(v, dict) else v}" for k, v in value.items()
            )
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, list):
            text = ", ".join(str(x) for x in value)
        else:
            text = str(value)
        items.append((key.replace("_", " "), text))
    return items
