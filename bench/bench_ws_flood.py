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
import base64
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SAMPLE_TIMEOUT = 10.0  # the measured user's socket, then it counts as failed
FLOOD_TIMEOUT = 30.0  # a flood socket's, then it counts as dropped
# The comparison daphne: cap and per-user turns lifted, the protection as before issue 9.
UNPROTECTED = {"BLOCKMIG_WS_MAX_PER_USER": "100000", "BLOCKMIG_WS_HANDSHAKES_PER_USER": "100000"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


# -- the client side ---------------------------------------------------------------------------


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
        sys.executable, __file__, "--flood-worker", json.dumps([port, path, flooder, origin, args.flood, args.waves]),
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


# -- the server side ---------------------------------------------------------------------------


def setup_environment() -> Path:
    var = Path(tempfile.mkdtemp(prefix="blockmig-bench-flood-"))
    os.environ["BLOCKMIG_VAR_DIR"] = str(var)
    os.environ["BLOCKMIG_CHANNEL_PREFIX"] = f"benchflood{os.getpid()}"
    os.environ["BLOCKMIG_LOG_LEVEL"] = "ERROR"
    os.environ["DJANGO_DEBUG"] = "0"
    os.environ.setdefault("DJANGO_SECRET_KEY", f"bench-flood-{os.urandom(24).hex()}")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "blockmig.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return var


def create_rows() -> tuple[int, dict[str, str]]:
    from django.contrib.auth.models import Group, User
    from django.test import Client

    from blockmig.models import Migration, MigrationDisk
    from blockmig.states import State
    from hosts.models import Hypervisor
    from hosts.roles import setup_roles

    setup_roles()
    operator = User.objects.create_user("operator")
    operator.groups.add(Group.objects.get(name="operator"))
    host = Hypervisor.objects.create(name="bench", uri="test:///default")
    migration = Migration.objects.create(
        hypervisor=host, domain_uuid="00000000-0000-4000-8000-0000000000f1", domain_name="floodvm",
        requested_by=operator, state=State.COPYING, bytes_total=1 << 30, bytes_done=1 << 28,
    )  # fmt: skip
    MigrationDisk.objects.create(
        migration=migration, hypervisor=host, domain_uuid=migration.domain_uuid, target="vda",
        source_path="/srv/a.qcow2", destination="/srv/b.qcow2", end=1 << 30,
    )  # fmt: skip
    cookies = {}
    for name in ("flooder", "flooder-uncapped", "measured"):
        user = User.objects.create_user(name)
        user.groups.add(Group.objects.get(name="viewer"))
        client = Client()
        client.force_login(user)
        cookies[name] = f"sessionid={client.cookies['sessionid'].value}"
    return migration.pk, cookies


def start_daphne(overrides: dict[str, str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, **overrides}
    daphne = subprocess.Popen(
        [str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p", str(port), "blockmig.asgi:application"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return daphne, port
        except OSError:
            if time.monotonic() > deadline or daphne.poll() is not None:
                raise SystemExit(f"daphne did not start: {daphne.stderr.read().decode()[-2000:]}") from None
            time.sleep(0.1)


def on_daphne(
    overrides: dict[str, str], path: str, cookies: dict[str, str], floods: list[tuple[str, str, str | None]], args
) -> list:
    """Against one daphne: the baseline, then each (label, flooding user, Origin) flood.
    Returns [(label, samples, waves)], the baseline first."""
    daphne, port = start_daphne(overrides)
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
        ], args)  # fmt: skip
        # Every socket of such a flood is served, so each wave takes long: two are plenty.
        args.waves = min(args.waves, 2)
        uncapped = (
            None
            if args.no_uncapped
            else on_daphne(UNPROTECTED, path, cookies, [("flood, no cap, no turns", "flooder-uncapped", None)], args)
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
