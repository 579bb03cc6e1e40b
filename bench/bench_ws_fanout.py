"""Fan-out of live progress: 1,000 websocket clients watching one migration, through a real
daphne with the real Redis channel layer (channels_redis on `make services`' Redis).

    .venv/bin/python bench/bench_ws_fanout.py [--clients 1000] [--updates 20] [--profile FILE]

Every client is a different viewer (one role, so one frame serves them all). For each update
the bench commits a progress change and calls publish.migration_changed (what the engine
does on commit); delivery latency = that call → the frame at that seq read by the client.

Baseline, in the same run, through the same daphne to the same clients: each client also
holds a socket to a bare consumer (bench/fanout_app.py) that writes what a group message
brings; the bench group_sends a pre-rendered frame of the same size to those 1,000 sockets;
latency = group_send → frame read. Push and bare rounds alternate, so both see the same
machine. The printed ratio is p95(push) / p95(bare): what the live path (the re-check of
every socket's session, the database read, the render, the coalescing) costs on top of the
channel layer and the websocket hop.

--profile FILE runs daphne under cProfile and writes its stats to FILE (python -m pstats).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.live_rows import copying_migration  # noqa: E402  (bench/, beside this script)
from throwaway import throwaway_site  # noqa: E402
from ws_client import MiniWebsocket, free_port, percentile, start_daphne  # noqa: E402

BARE_PATH = "/ws/bench-bare/"
CONNECT_BATCH = 50  # handshakes under way at once while the clients connect


def setup_environment() -> Path:
    return throwaway_site(
        "blockmig-bench-fanout-",
        env={"BLOCKMIG_CHANNEL_PREFIX": f"bench{os.getpid()}", "BLOCKMIG_LOG_LEVEL": "WARNING", "DJANGO_DEBUG": "0"},
        migrate=True,
    )


def create_rows(clients: int) -> tuple[int, list[str]]:
    """A copying migration and `clients` viewers, each with a session of their own."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import Group, User
    from django.contrib.sessions.backends.db import SessionStore

    migration_id = copying_migration("00000000-0000-4000-8000-0000000000b1", "benchvm")
    # Users without a usable password (nothing to hash), logged in by writing their sessions
    # the way django.contrib.auth.login does.
    viewers = User.objects.bulk_create(User(username=f"viewer{i}", password="!") for i in range(clients))
    viewer_group = Group.objects.get(name="viewer")
    User.groups.through.objects.bulk_create(User.groups.through(user_id=u.pk, group_id=viewer_group.pk) for u in viewers)
    backend = next(b for b in settings.AUTHENTICATION_BACKENDS if b.endswith("ModelBackend"))  # axes' comes first
    cookies = []
    for user in viewers:
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = backend
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        cookies.append(f"sessionid={session.session_key}")
    return migration_id, cookies


async def connect_all(port: int, path: str, cookies: list[str]) -> list[MiniWebsocket]:
    """Every client's socket to `path`, open and past its first frame (if the path sends one)."""
    sockets: list[MiniWebsocket] = []
    for start in range(0, len(cookies), CONNECT_BATCH):
        batch = await asyncio.gather(*(MiniWebsocket.connect(port, path, c) for c in cookies[start : start + CONNECT_BATCH]))
        if path != BARE_PATH:
            await asyncio.gather(*(asyncio.wait_for(ws.receive(), timeout=60) for ws in batch))  # the catch-up
        sockets += batch
    return sockets


async def until(ws: MiniWebsocket, pattern: re.Pattern, target: int, sent_at: list[float]) -> float:
    """Read frames until one whose first line shows `target` or later; its latency."""
    while True:
        frame = await ws.receive()
        if frame is None:
            raise RuntimeError("socket closed")
        match = pattern.search(frame[:200])
        if match and int(match.group(1)) >= target:
            return time.perf_counter() - sent_at[0]


async def run(port: int, migration_id: int, cookies: list[str], updates: int) -> tuple[list[float], list[float], int]:
    from asgiref.sync import sync_to_async
    from channels.layers import get_channel_layer

    from blockmig.live import publish
    from blockmig.models import Migration

    started = time.perf_counter()
    live = await connect_all(port, f"/ws/migrations/{migration_id}/", cookies)
    bare = await connect_all(port, BARE_PATH, cookies)
    print(f"  {len(live)} live and {len(bare)} bare sockets open in {time.perf_counter() - started:.1f} s", flush=True)

    layer = get_channel_layer()
    group = f"bench-bare-{os.environ['BLOCKMIG_CHANNEL_PREFIX']}"
    live_pattern = re.compile(rf"migration:{migration_id}=(\d+)".encode())
    bare_pattern = re.compile(rb"<!-- bare (\d+) -->")

    def commit(done: int) -> None:
        Migration.objects.filter(pk=migration_id).update(bytes_done=done)

    push_latencies: list[float] = []
    bare_latencies: list[float] = []
    frame_size = 0
    for i in range(updates):
        # Push: the frame a viewer gets for this update.
        await sync_to_async(commit)((i + 1) * (1 << 30) // updates)
        target = await sync_to_async(publish.current_seq)(f"migration:{migration_id}") + 1
        sent_at = [0.0]
        waiters = [asyncio.create_task(until(ws, live_pattern, target, sent_at)) for ws in live]
        await asyncio.sleep(0)  # every reader waits on its socket before the clock starts
        sent_at[0] = time.perf_counter()
        await sync_to_async(publish.migration_changed)(migration_id)
        push_latencies += await asyncio.wait_for(asyncio.gather(*waiters), timeout=120)
        if not frame_size:
            frame_size = await sync_to_async(frame_length)(migration_id)
        await asyncio.sleep(0.2)

        # Bare: a pre-rendered frame of the same size, group_sent to the same clients.
        marker = f"<!-- bare {i + 1} -->\n"
        text = marker + "x" * max(0, frame_size - len(marker))
        sent_at = [0.0]
        waiters = [asyncio.create_task(until(ws, bare_pattern, i + 1, sent_at)) for ws in bare]
        await asyncio.sleep(0)
        sent_at[0] = time.perf_counter()
        await layer.group_send(group, {"type": "bench.frame", "text": text})
        bare_latencies += await asyncio.wait_for(asyncio.gather(*waiters), timeout=120)
        await asyncio.sleep(0.2)
    for ws in live + bare:
        ws.close()
    return push_latencies, bare_latencies, frame_size


def frame_length(migration_id: int) -> int:
    """The size of the migration page's frame as a viewer gets it (the baseline's payload)."""
    from django.contrib.auth.models import User

    from blockmig.live.cache import Shared
    from blockmig.live.frames import render_request
    from blockmig.live.migration import migration_page

    request = render_request(f"/migrations/{migration_id}/", User.objects.get(username="viewer0"), secure=False)
    return len(migration_page(request, migration_id, Shared(None)) or "") + 60  # + the header line


def summary(name: str, latencies: list[float]) -> str:
    ms = [x * 1000 for x in latencies]
    return (
        f"{name:<40} n={len(ms):<6} p50={statistics.median(ms):7.1f} ms  p95={percentile(ms, 95):7.1f} ms  max={max(ms):7.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--profile", metavar="FILE", help="run daphne under cProfile, stats to FILE")
    args = parser.parse_args()

    var = setup_environment()
    migration_id, cookies = create_rows(args.clients)
    port = free_port()
    profiler = [sys.executable, "-m", "cProfile", "-o", str(Path(args.profile).resolve())] if args.profile else None
    log = Path(tempfile.mkdtemp(prefix="blockmig-bench-fanout-log-")) / "daphne.log"
    daphne = start_daphne(port, log, "bench.fanout_app:application", python=profiler)
    try:
        push, bare, size = asyncio.run(run(port, migration_id, cookies, args.updates))
    except Exception:
        print(f"daphne's log: {log}", file=sys.stderr)
        raise
    finally:
        daphne.send_signal(signal.SIGINT)  # a clean exit: cProfile writes its stats then
        try:
            daphne.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daphne.kill()
            daphne.wait()
        shutil.rmtree(var, ignore_errors=True)

    print(f"fan-out: {args.clients} websocket clients (distinct viewers) on one migration, {args.updates} progress updates")
    print(f"server: one real daphne, channels_redis on the real Redis; frames of about {size} bytes")
    print(summary("bare group_send of a pre-rendered frame", bare))
    print(summary("push (publish → frame in client)", push))
    ratio = percentile(push, 95) / percentile(bare, 95)
    print(f"p95 ratio push / bare: {ratio:.2f}x (goal <= 2x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
