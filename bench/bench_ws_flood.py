"""A flood of websocket handshakes by one viewer, and what it costs another user, through a
real daphne on loopback.

    .venv/bin/python bench/bench_ws_flood.py [--flood 300] [--waves 5] [--no-uncapped]

The flood: one viewer (one session cookie) opens --flood sockets to a migration page at
once, waits until each is open with its first frame or refused, closes them all, and starts
again, --waves times. It runs in a process of its own so that its client work does not
delay the measuring client.

Measured: a second viewer opens sockets to the same page one after another (connect, first
frame, close). Handshake = TCP connect to 101 Switching Protocols; first frame = to the
page's catch-up frame. The figure is the second viewer's handshake p95 during the flood
against the same p95 with no flood, in the same run against the same daphne (the ratio).

For scale, in the same run:
- the same flood sent with a foreign Origin, refused before anything is read: what 300
  handshakes cost daphne itself (HTTP parsing, the websocket handshake), a floor no check
  inside the application can go below;
- a second daphne with the cap and the per-user turns lifted (BLOCKMIG_WS_MAX_PER_USER and
  BLOCKMIG_WS_HANDSHAKES_PER_USER at 100000): the console as before, which shows what they buy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Beside this script: the client side (bench/ws_flood/), the throwaway site, the live pages'
# rows, daphne and the helpers.
from harness.live_rows import copying_migration, viewer_cookie  # noqa: E402
from throwaway import throwaway_site  # noqa: E402
from ws_client import free_port, percentile, start_daphne  # noqa: E402
from ws_flood.client import flood, measure, measure_during_flood, sample  # noqa: E402

# The comparison daphne: cap and per-user turns lifted, the protection as before issue 9.
UNPROTECTED = {"BLOCKMIG_WS_MAX_PER_USER": "100000", "BLOCKMIG_WS_HANDSHAKES_PER_USER": "100000"}


# -- the server side ---------------------------------------------------------------------------


def setup_environment() -> Path:
    return throwaway_site(
        "blockmig-bench-flood-",
        env={"BLOCKMIG_CHANNEL_PREFIX": f"benchflood{os.getpid()}", "BLOCKMIG_LOG_LEVEL": "ERROR", "DJANGO_DEBUG": "0"},
        migrate=True,
    )


def create_rows() -> tuple[int, dict[str, str]]:
    migration_id = copying_migration("00000000-0000-4000-8000-0000000000f1", "floodvm", bytes_done=1 << 28)
    return migration_id, {name: viewer_cookie(name) for name in ("flooder", "flooder-uncapped", "measured")}


def on_daphne(
    overrides: dict[str, str], path: str, cookies: dict[str, str], floods: list[tuple[str, str, str | None]], args, log: Path
) -> list:
    """Against one daphne (its output in `log`): the baseline, then each (label, flooding
    user, Origin) flood. Returns [(label, samples, waves)], the baseline first."""
    port = free_port()
    daphne = start_daphne(port, log, env={**os.environ, **overrides})
    try:

        async def run():
            for _ in range(5):  # warm up: templates, database connections, Redis pools
                await sample(port, path, cookies["measured"])
            done = time.monotonic() + args.baseline_seconds
            rows = [
                ("no flood (baseline)", await measure(port, path, cookies["measured"], until=lambda: time.monotonic() > done), [])
            ]
            for label, flooder, origin in floods:
                origin = origin and origin.format(other_port=port + 1 if port < 65535 else port - 1)
                during, waves = await measure_during_flood(port, path, cookies["measured"], cookies[flooder], origin, args)
                rows.append((label, during, waves))
            return rows

        return asyncio.run(run())
    finally:
        daphne.terminate()
        try:
            daphne.wait(timeout=20)
        except subprocess.TimeoutExpired:
            daphne.kill()
            daphne.wait(timeout=10)


def show(title: str, rows: list) -> float:
    """Print one daphne's rows; returns the first flood's handshake p95 ratio."""
    print(title)
    print(f"  {'':<46} {'handshake p50 / p95':>24}  {'first frame p95':>18}   per wave: open/refused/dropped, time")
    base = rows[0][1]
    base_hs, base_ff = percentile([s[1] for s in base], 95), percentile([s[2] for s in base], 95)
    ratios = []
    for label, samples, waves in rows:
        hs = [s[1] for s in samples]
        ff = percentile([s[2] for s in samples], 95)
        p95 = percentile(hs, 95)
        cells = f"{statistics.median(hs) * 1000:6.1f} / {p95 * 1000:6.1f} ms"
        failed = sum(not s[3] for s in samples)
        label += f", {failed} failed" if failed else ""
        frame = f"{ff * 1000:6.1f} ms"
        if waves:
            ratios.append(p95 / base_hs)
            cells += f" ({p95 / base_hs:4.1f}x)"
            frame += f" ({ff / base_ff:4.1f}x)"
            wave = waves[0]
            took = statistics.median(w["end"] - w["start"] for w in waves)
            tail = f"   {wave['open']:>4} / {wave['refused']} / {wave['dropped']:<4} {took:5.2f} s  ({len(waves)} waves)"
        else:
            cells += " " * 8
            frame += " " * 8
            tail = ""
        print(f"  {label + f' (n={len(samples)})':<46} {cells:>32}  {frame:>18}{tail}")
    return ratios[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flood", type=int, default=300, help="handshakes the flooding viewer opens at once")
    parser.add_argument("--waves", type=int, default=10)
    parser.add_argument("--baseline-seconds", type=float, default=4.0)
    parser.add_argument("--no-uncapped", action="store_true", help="skip the daphne with the cap and turns lifted")
    parser.add_argument("--flood-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood_worker:
        port, path, cookie, origin, count, waves = json.loads(args.flood_worker)
        print(json.dumps(asyncio.run(flood(port, path, cookie, origin, count, waves))))
        return 0
    args.flood = min(args.flood, 1000)  # loopback, bounded
    args.waves = min(args.waves, 20)

    var = setup_environment()
    from django.conf import settings

    cap = settings.BLOCKMIG_WS_MAX_PER_USER
    try:
        migration_id, cookies = create_rows()
        path = f"/ws/migrations/{migration_id}/"
        capped = on_daphne({}, path, cookies, [
            (f"flood, cap {cap} per user", "flooder", None),
            ("flood refused at the Origin (floor)", "flooder", "http://127.0.0.1:{other_port}"),
        ], args, var / "daphne.log")  # fmt: skip
        # Every socket of such a flood is served, so each wave takes long: two are plenty.
        args.waves = min(args.waves, 2)
        uncapped = (
            None
            if args.no_uncapped
            else on_daphne(
                UNPROTECTED,
                path,
                cookies,
                [("flood, no cap, no turns", "flooder-uncapped", None)],
                args,
                var / "daphne-uncapped.log",
            )
        )
    finally:
        shutil.rmtree(var, ignore_errors=True)
        from blockmig.live.publish import redis_client

        for key in redis_client().scan_iter(f"{os.environ['BLOCKMIG_CHANNEL_PREFIX']}*"):
            redis_client().delete(key)
    print(
        f"handshake flood: one viewer opens {args.flood} sockets at once, again after each wave; "
        "a second viewer opens sockets one after another meanwhile (loopback, one daphne)"
    )
    ratio = show(
        f"daphne as configured (cap {cap} per user, {settings.BLOCKMIG_WS_HANDSHAKES_PER_USER} handshakes per user at once):",
        capped,
    )
    if uncapped:
        show("daphne with the cap and the turns lifted (as before; for comparison):", uncapped)
    print(f"second viewer's handshake p95 during the flood / without it: {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
