"""bench_ws_flood.py's client side: the flood (one viewer's handshakes, all at once, wave
after wave, in a process of its own: bench_ws_flood.py --flood-worker) and the measured
viewer's sockets, one after another."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
SAMPLE_TIMEOUT = 10.0  # the measured user's socket, then it counts as failed
FLOOD_TIMEOUT = 30.0  # a flood socket's, then it counts as dropped


async def open_socket(port: int, path: str, cookie: str, origin: str | None = None):
    """An open connection, or the HTTP status that refused it."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    try:
        return await connect(
            f"ws://127.0.0.1:{port}{path}", origin=origin or f"http://127.0.0.1:{port}",
            additional_headers={"Cookie": cookie}, proxy=None, open_timeout=60, ping_interval=None, max_size=None,
        )  # fmt: skip
    except InvalidStatus as refused:
        return refused.response.status_code


async def flood(port: int, path: str, cookie: str, origin: str | None, count: int, waves: int) -> list[dict]:
    """`waves` times: `count` handshakes at once, each until open with its first frame or
    refused; then all closed. Returns each wave's times and outcome. Bare asyncio streams,
    so that the flooding client costs little CPU next to the daphne it floods."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\nSec-WebSocket-Version: 13\r\n"
        f"Origin: {origin or f'http://127.0.0.1:{port}'}\r\nCookie: {cookie}\r\n\r\n"
    ).encode()

    async def one():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return 0, None
        try:
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=FLOOD_TIMEOUT)
            status = int(head.split(b" ", 2)[1])
            if status == 101:
                await asyncio.wait_for(reader.readexactly(1), timeout=FLOOD_TIMEOUT)  # the first frame begins
        except (OSError, EOFError, ValueError, asyncio.IncompleteReadError, TimeoutError):
            status = 0  # dropped by daphne before the handshake finished
        return status, writer

    report = []
    for _ in range(waves):
        started = time.monotonic()
        results = await asyncio.gather(*(one() for _ in range(count)))
        ended = time.monotonic()
        for _, writer in results:
            if writer is not None:
                writer.close()
        report.append(
            {
                "start": started,
                "end": ended,
                "open": sum(s == 101 for s, _ in results),
                "refused": sum(s == 403 for s, _ in results),
                "dropped": sum(s == 0 for s, _ in results),
            }
        )
        await asyncio.sleep(0.3)  # slots of the closed sockets are released
    return report


async def sample(port: int, path: str, cookie: str) -> tuple[float, float, float, bool]:
    """One socket of the measured user: (started, handshake seconds, first frame seconds,
    ok). A socket that failed (refused, dropped, timed out after SAMPLE_TIMEOUT) counts
    with the time it took to fail."""
    started = time.monotonic()
    try:
        ws = await asyncio.wait_for(open_socket(port, path, cookie), timeout=SAMPLE_TIMEOUT)
        if isinstance(ws, int):
            raise ConnectionError(f"refused ({ws})")
        opened = time.monotonic()
        await asyncio.wait_for(ws.recv(), timeout=SAMPLE_TIMEOUT)
    except Exception:
        failed = time.monotonic() - started
        return started, failed, failed, False
    result = (started, opened - started, time.monotonic() - started, True)
    await ws.close()
    return result


async def measure(port: int, path: str, cookie: str, until) -> list[tuple[float, float, float, bool]]:
    """Sockets one after another while `until()` is false."""
    samples = []
    while not until():
        samples.append(await sample(port, path, cookie))
        await asyncio.sleep(0.01)
    return samples


async def measure_during_flood(port: int, path: str, cookie: str, flooder: str, origin: str | None, args):
    worker = await asyncio.create_subprocess_exec(
        sys.executable, BENCH / "bench_ws_flood.py", "--flood-worker", json.dumps([port, path, flooder, origin, args.flood, args.waves]),
        stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    samples = await measure(port, path, cookie, until=lambda: worker.returncode is not None)
    out, _ = await worker.communicate()
    if worker.returncode != 0:
        raise SystemExit("the flood process failed")
    waves = json.loads(out.decode().strip().splitlines()[-1])
    during = [s for s in samples if any(w["start"] <= s[0] <= w["end"] for w in waves)]
    if not during:
        raise SystemExit("no handshake of the measured user fell inside a wave; raise --waves")
    return during, waves
