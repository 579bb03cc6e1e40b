"""Fan-out of live progress: N websocket clients on one migration, through a real daphne.

    .venv/bin/python bench/bench_push.py [--clients 200] [--updates 30] [--shared-user]

For each update the bench commits a progress change and calls publish.migration_changed
(what the engine does on commit), then waits until every client has received a frame
rendered at that seq or later. Delivery latency = publish call → frame received.

Baseline, in the same run and against the same Redis: a bare channels_redis group_send to
a group of N channels, latency = group_send → receive on each channel. The printed ratio is
p95(push) / p95(bare): what the consumer's re-read, per-user render and the websocket hop
cost on top of the channel layer itself.

By default every client is a different viewer; viewers are one audience, so the
per-process render cache serves them all with one render per update (as it does the tabs of
one user with --shared-user). bench_ws_fanout.py measures 1,000 clients against a baseline
that also crosses the websocket hop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Beside this script: the throwaway site, the live pages' rows, the websocket client.
from harness.live_rows import copying_migration, viewer_cookie  # noqa: E402
from throwaway import throwaway_site  # noqa: E402
from ws_client import MiniWebsocket, free_port, percentile, start_daphne  # noqa: E402


def setup_environment() -> Path:
    return throwaway_site(
        "blockmig-bench-push-",
        env={
            "BLOCKMIG_CHANNEL_PREFIX": f"bench{os.getpid()}",
            "BLOCKMIG_LOG_LEVEL": "WARNING",
            "DJANGO_DEBUG": "0",
            # --shared-user opens every client as one user: above the per-user cap on open
            # sockets, which this bench is not about (bench_ws_flood.py is).
            "BLOCKMIG_WS_MAX_PER_USER": "100000",
        },
        migrate=True,
    )


def create_rows(clients: int, shared_user: bool):
    migration_id = copying_migration("00000000-0000-4000-8000-0000000000b1", "benchvm")
    cookies = [viewer_cookie(f"viewer{i}") for i in range(1 if shared_user else clients)]
    return migration_id, [cookies[i % len(cookies)] for i in range(clients)]


async def run_push(port: int, migration_id: int, cookies: list[str], updates: int) -> list[float]:
    from asgiref.sync import sync_to_async

    from blockmig.live import publish
    from blockmig.models import Migration

    seq_pattern = re.compile(rf"migration:{migration_id}=(\d+)".encode())
    sockets = [await MiniWebsocket.connect(port, f"/ws/migrations/{migration_id}/", c) for c in cookies]
    for ws in sockets:  # the catch-up frame
        await asyncio.wait_for(ws.receive(), timeout=30)

    async def until_seq(ws: MiniWebsocket, target: int, sent_at: float) -> float:
        while True:
            frame = await ws.receive()
            if frame is None:
                raise RuntimeError("socket closed")
            match = seq_pattern.search(frame[:200])
            if match and int(match.group(1)) >= target:
                return time.perf_counter() - sent_at

    def commit_and_publish(done: int) -> None:
        Migration.objects.filter(pk=migration_id).update(bytes_done=done)
        publish.migration_changed(migration_id)

    latencies = []
    for i in range(updates):
        # The publish takes the next number; a frame at or after it shows this update.
        target = await sync_to_async(publish.current_seq)(f"migration:{migration_id}") + 1
        sent_at = time.perf_counter()
        waiters = [asyncio.create_task(until_seq(ws, target, sent_at)) for ws in sockets]
        await sync_to_async(commit_and_publish)((i + 1) * (1 << 30) // updates)
        latencies += await asyncio.wait_for(asyncio.gather(*waiters), timeout=60)
        await asyncio.sleep(0.1)
    for ws in sockets:
        ws.close()
    return latencies


async def run_bare(clients: int, updates: int) -> list[float]:
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    group = f"bench-bare-{os.getpid()}"
    channels = [await layer.new_channel() for _ in range(clients)]
    for name in channels:
        await layer.group_add(group, name)
    latencies = []
    for i in range(updates):

        async def receive(name: str, sent_at: float) -> float:
            await layer.receive(name)
            return time.perf_counter() - sent_at

        sent_at = time.perf_counter()
        receivers = [asyncio.create_task(receive(name, sent_at)) for name in channels]
        await layer.group_send(group, {"type": "migration.changed", "id": 1, "seq": i + 1})
        latencies += await asyncio.gather(*receivers)
        await asyncio.sleep(0.1)
    for name in channels:
        await layer.group_discard(group, name)
    return latencies


def summary(name: str, latencies: list[float]) -> str:
    ms = [x * 1000 for x in latencies]
    return (
        f"{name:<34} n={len(ms):<6} p50={statistics.median(ms):7.1f} ms  p95={percentile(ms, 95):7.1f} ms  max={max(ms):7.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--shared-user", action="store_true", help="all clients are one user's tabs")
    args = parser.parse_args()

    var = setup_environment()
    migration_id, cookies = create_rows(args.clients, args.shared_user)
    port = free_port()
    daphne = start_daphne(port, var / "daphne.log")
    try:
        bare = asyncio.run(run_bare(args.clients, args.updates))
        push = asyncio.run(run_push(port, migration_id, cookies, args.updates))
    finally:
        daphne.terminate()
        daphne.wait(timeout=10)
        shutil.rmtree(var, ignore_errors=True)

    who = "1 shared user" if args.shared_user else f"{args.clients} distinct viewers"
    print(f"fan-out: {args.clients} websocket clients on one migration, {args.updates} progress updates, {who}")
    print(summary("bare channels_redis group_send", bare))
    print(summary("push (publish → frame in client)", push))
    ratio = percentile(push, 95) / percentile(bare, 95)
    print(f"p95 ratio push / bare: {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
