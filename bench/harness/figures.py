"""Figures: percentiles and milliseconds as the lab benches print them, and the anomalies
a bench noted on the way (printed at its end)."""

from __future__ import annotations

ANOMALIES: list[str] = []  # engine behaviour worth a look, printed at the end


def pct(values: list[float], q: float) -> float:
    """Percentile with linear interpolation (q in 0..100)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def ms(value: float | None) -> str:
    return "   n/a" if value is None else f"{value * 1000:7.1f}"
