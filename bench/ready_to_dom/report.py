"""bench_ready_to_dom.py's report: every run, READY → DOM broken down, the baseline, the ratio."""

from __future__ import annotations

import statistics

from ws_client import percentile


def ms(value) -> str:
    return "     n/a" if value is None else f"{value * 1000:8.1f}"


def stats_line(label: str, values: list) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return f"  {label:40}{'n/a':>9}"
    return (
        f"  {label:40}{statistics.median(known) * 1000:9.1f}{percentile(known, 95) * 1000:9.1f}"
        f"{min(known) * 1000:9.1f}{max(known) * 1000:9.1f}"
    )


def report(runs: list[dict], base: list[dict], args) -> None:
    valid = [r for r in runs if r["valid"]]
    print()
    print(
        f"READY → DOM in Chromium, {len(runs)} runs ({len(valid)} valid: socket open before READY), "
        f"shallow copy at {args.bandwidth} MiB/s; baseline {len(base)} publish → DOM samples, same site and browser"
    )
    print()
    print(
        "per run (ms)   READY→engine  engine→ready_at  ready_at→frame  frame→DOM   READY→DOM   DOM→paint  (socket open before READY)"
    )
    for i, r in enumerate(runs, 1):
        flag = "" if r["valid"] else "   NOT COUNTED"
        print(
            f"  run {i:2} #{r['id']:<4}{ms(r['libvirt_to_engine']):>12}{ms(r['engine_to_ready_at']):>16}"
            f"{ms(r['ready_at_to_frame']):>16}{ms(r['frame_to_dom']):>11}{ms(r['total']):>12}{ms(r['dom_to_paint']):>12}"
            f"  ({ms(r['page_open_before_ready']).strip()} ms){flag}"
        )
    print()
    print(f"  {'(ms)':40}{'p50':>9}{'p95':>9}{'min':>9}{'max':>9}")
    print("  READY → DOM, broken down")
    for key, label in (
        ("libvirt_to_engine", "libvirt READY (virsh) → engine callback"),
        ("engine_to_ready_at", "engine callback → row ready_at"),
        ("libvirt_to_ready_at", "libvirt READY → row ready_at (DB)"),
        ("ready_at_to_frame", "row ready_at → ws frame in browser"),
        ("frame_to_dom", "ws frame → DOM (htmx swap)"),
        ("ready_at_to_dom", "row ready_at → DOM"),
        ("total", "libvirt READY → DOM  (t1 − t0)"),
        ("total_engine", "engine callback → DOM"),
        ("dom_to_paint", "DOM → next animation frame"),
    ):
        print(stats_line(label, [r[key] for r in valid]))
    print("  baseline: bare push transport, no libvirt/engine")
    for key, label in (
        ("publish_to_frame", "publish call → ws frame in browser"),
        ("frame_to_dom", "ws frame → DOM (htmx swap)"),
        ("total", "publish.migration_changed → DOM"),
        ("dom_to_paint", "DOM → next animation frame"),
    ):
        print(stats_line(label, [b[key] for b in base]))
    totals = [r["total"] for r in valid if r["total"] is not None]
    base_totals = [b["total"] for b in base]
    if totals and base_totals:
        p50 = statistics.median(totals) / statistics.median(base_totals)
        p95 = percentile(totals, 95) / percentile(base_totals, 95)
        print()
        print(
            f"READY → DOM: p50 {statistics.median(totals) * 1000:.1f} ms, p95 {percentile(totals, 95) * 1000:.1f} ms;"
            f" publish → DOM: p50 {statistics.median(base_totals) * 1000:.1f} ms, p95 {percentile(base_totals, 95) * 1000:.1f} ms"
        )
        print(f"ratio READY→DOM / publish→DOM: p50 {p50:.2f}x, p95 {p95:.2f}x")
    skew = [abs(r["clock_skew_ms"]) for r in runs]
    print(f"(page clock check: |Date.now() − timeOrigin+now()| ≤ {max(skew):.1f} ms at the DOM update)")
