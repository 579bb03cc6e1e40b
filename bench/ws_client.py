"""Just enough of a websocket client for the benches, on asyncio streams, and their helpers
(free ports, percentiles, a daphne of their own). Not a bench itself (run_all.py runs only
bench_*.py)."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def start_daphne(
    port: int,
    log: Path,
    app: str = "blockmig.asgi:application",
    python: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """A daphne on 127.0.0.1:`port` serving `app` from the repository root, started and
    answering, its output in `log`; `python` runs it under another command (a profiler);
    `env` is its environment (this process's by default)."""
    daphne = [str(Path(sys.executable).parent / "daphne")]
    command = [*(python or []), *daphne, "-b", "127.0.0.1", "-p", str(port), app]
    with open(log, "wb") as output:  # a file, not a pipe: a full pipe would stall daphne
        process = subprocess.Popen(
            command, cwd=ROOT, env=os.environ.copy() if env is None else env, stdout=output, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise SystemExit(f"daphne did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.1)


class MiniWebsocket:
    """Just enough of a websocket client for the bench (text frames in, pongs out), on
    asyncio streams: the websocket libraries at hand are bound to Twisted once Django
    has loaded daphne."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, path: str, cookie: str) -> MiniWebsocket:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Origin: http://127.0.0.1:{port}\r\nCookie: {cookie}\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"handshake refused: {head[:80]!r}")
        return cls(reader, writer)

    async def receive(self) -> bytes | None:
        """The next text message; None when the server closed."""
        while True:
            first, second = await self.reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            payload = await self.reader.readexactly(length)
            opcode = first & 0x0F
            if opcode == 0x8:
                return None
            if opcode == 0x9:  # ping → pong (client frames are masked)
                mask = os.urandom(4)
                masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                self.writer.write(bytes([0x8A, 0x80 | len(payload)]) + mask + masked)
                continue
            return payload

    def close(self) -> None:
        self.writer.close()
