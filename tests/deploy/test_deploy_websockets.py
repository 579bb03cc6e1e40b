"""Websocket hardening on real daphne processes (issue 9): the Origin's port, paths that match
nothing, sockets that follow a real HTTP logout and a removed role, and one viewer's flood
of handshakes, capped across two daphnes while another user still gets in.

These daphnes are this module's own (on the deployment's PostgreSQL and Redis prefix), with
a short re-check interval and slot lifetime so that what takes up to 30 s / 60 s in
production takes a second or three here. The people have names of their own.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from websockets.asyncio.client import connect as connect_async
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.deploy.processes import Process
from tests.deploy.site import BIN, Daphne, Deployment, wait_for_daphne
from tests.deploy.test_deployment import (
    PASSWORD,
    LiveSocket,
    frame_mark,
    login,
    on_deployment_publish_inventory_change,
    opener,
)
from tests.helpers import make_people

REAUTH_SECONDS = 1
SLOT_SECONDS = 3
MAX_PER_USER = 20
WS_ENV = {
    "BLOCKMIG_WS_REAUTH_SECONDS": str(REAUTH_SECONDS),
    "BLOCKMIG_WS_SLOT_SECONDS": str(SLOT_SECONDS),
    "BLOCKMIG_WS_MAX_PER_USER": str(MAX_PER_USER),
}
PEOPLE = ("ws-viewer", "ws-flooder", "ws-crasher", "ws-leaver", "ws-demoted", "ws-origin")
FLOOD = 300


# -- run inside the deployment ------------------------------------------------------------------


def on_deployment_create_ws_people() -> None:
    make_people([(name, "viewer") for name in PEOPLE], password=PASSWORD)


def on_deployment_remove_roles(username: str) -> None:
    from django.contrib.auth.models import User

    User.objects.get(username=username).groups.clear()


# -- fixtures -----------------------------------------------------------------------------------


def start_daphne(deployment: Deployment, name: str) -> Daphne:
    process = Process(
        name,
        [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", "0", "blockmig.asgi:application"],
        {**deployment.env, **WS_ENV},
        deployment.log_dir / f"{name}.log",
    ).start()
    daphne = Daphne(process)
    wait_for_daphne(daphne)
    return daphne


@pytest.fixture(scope="module")
def daphnes(deployment_session) -> Iterator[list[Daphne]]:
    started = []
    try:
        for index in range(2):
            started.append(start_daphne(deployment_session, f"ws-daphne-{index}"))
        yield started
    finally:
        for daphne in started:
            daphne.process.stop()


@pytest.fixture(scope="module")
def ws_people(deployment_session) -> None:
    deployment_session.call(on_deployment_create_ws_people)


def assert_clean_log(daphne: Daphne, since: int) -> None:
    tail = daphne.process.log()[since:]
    assert "Traceback" not in tail and "Exception inside application" not in tail, tail[-3000:]


def close_code(socket: LiveSocket, timeout: float) -> tuple[int | None, float]:
    """Wait for the server to close `socket`: its close code and how long it took."""
    started = time.monotonic()
    socket.reader.join(timeout)
    assert not socket.reader.is_alive(), f"the socket is still open after {timeout} s"
    return socket.ws.close_code, time.monotonic() - started


# -- origin: scheme, host and port ----------------------------------------------------------------


def test_page_on_another_port_cannot_open_a_users_socket(deployment, daphnes, ws_people):
    target, other = daphnes
    cookie = login(target, "ws-origin")
    host = target.url.removeprefix("http://").rsplit(":", 1)[0]
    foreign = [
        other.url,  # another service on this host: a real one
        f"http://{host}:{target.port + 1}",
        f"https://{host}:{target.port}",  # same host and port, other scheme
        f"http://localhost:{target.port}",
    ]
    for origin in foreign:
        with pytest.raises(InvalidStatus) as refused:
            connect(
                target.ws_url("/ws/dashboard/"), origin=origin, additional_headers={"Cookie": cookie}, proxy=None, open_timeout=10
            )
        assert refused.value.response.status_code == 403, origin
    with LiveSocket(target, "/ws/dashboard/", cookie) as same_origin:  # Origin = the daphne's own
        assert 'id="dashboard-migrations"' in same_origin.wait_for(lambda f: f.startswith("<!-- live dashboard"))


# -- paths and ids that match nothing -------------------------------------------------------------


def test_unmatched_paths_and_bad_ids_close_cleanly(deployment, daphnes, ws_people):
    daphne = daphnes[0]
    cookie = login(daphne, "ws-viewer")
    since = len(daphne.process.log())
    for path in (
        "/ws/nothing/",
        "/ws/migrations/abc/",
        "/ws/migrations/99999999999999999999999999/",
        "/ws/hosts/no%00such/",
        "/ws/migrations/1",
    ):
        with connect(
            daphne.ws_url(path), origin=daphne.url, additional_headers={"Cookie": cookie}, proxy=None, open_timeout=10
        ) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd.code == 4404, path
    # A host page that does not exist, or a query value no page has: refused, not a 500.
    for path in ("/ws/hosts/nosuchhost/", "/ws/migrations/999999999999999999/"):
        with pytest.raises(InvalidStatus) as refused:
            connect(daphne.ws_url(path), origin=daphne.url, additional_headers={"Cookie": cookie}, proxy=None, open_timeout=10)
        assert refused.value.response.status_code == 403, path
    deployment.call(on_deployment_publish_inventory_change, name="ws-badquery-host")  # a host that exists
    for query in ("disk=%C2%B2", "disk=999999999999999999999999", "domain=%00", "q=a%00b"):
        with pytest.raises(InvalidStatus) as refused:  # int("²") and NUL on PostgreSQL raised before
            connect(
                daphne.ws_url(f"/ws/hosts/ws-badquery-host/?{query}"),
                origin=daphne.url,
                additional_headers={"Cookie": cookie},
                proxy=None,
                open_timeout=10,
            )
        assert refused.value.response.status_code == 403, query
    time.sleep(0.5)  # let daphne write whatever it would log
    assert_clean_log(daphne, since)


# -- sockets follow the session and the roles -----------------------------------------------------


def http_logout(daphne: Daphne, cookie: str) -> None:
    """Press "Log out" as the browser does: the form on every page, POSTed with its token."""
    browser = opener()
    browser.addheaders = [("Cookie", cookie)]
    page = browser.open(f"{daphne.url}/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    landed = browser.open(f"{daphne.url}/accounts/logout/", urlencode({"csrfmiddlewaretoken": token}).encode(), timeout=10)
    assert "/accounts/login/" in landed.url
    check = opener()
    check.addheaders = [("Cookie", cookie)]
    assert "/accounts/login/" in check.open(f"{daphne.url}/", timeout=10).url  # logged out for real


def test_http_logout_closes_the_users_sockets_on_every_daphne(deployment, daphnes, ws_people):
    cookie = login(daphnes[0], "ws-leaver")
    sockets = [LiveSocket(daphne, "/ws/dashboard/", cookie) for daphne in daphnes]
    try:
        for socket in sockets:
            socket.wait_for(lambda f: f.startswith("<!-- live dashboard"))
        http_logout(daphnes[0], cookie)
        for socket in sockets:
            code, waited = close_code(socket, timeout=REAUTH_SECONDS + 5)
            assert code == 4401
            assert waited < REAUTH_SECONDS + 3
    finally:
        for socket in sockets:
            socket.close()


def test_removed_role_gets_no_more_frames_and_4403(deployment, daphnes, ws_people):
    cookie = login(daphnes[0], "ws-demoted")
    with LiveSocket(daphnes[1], "/ws/dashboard/", cookie) as socket:
        socket.wait_for(lambda f: f.startswith("<!-- live dashboard"))
        deployment.call(on_deployment_remove_roles, username="ws-demoted")
        published = deployment.call(on_deployment_publish_inventory_change, name="ws-demoted-host")
        code, _ = close_code(socket, timeout=REAUTH_SECONDS + 5)
        assert code == 4403
        subject = f"hypervisor:{published['id']}"
        assert not [f for f in socket.frames if frame_mark(f, subject) >= published["seq"]]


# -- handshake floods -------------------------------------------------------------------------------


async def handshake(daphne: Daphne, cookie: str, path: str = "/ws/dashboard/", open_timeout: float = 60):
    """An open connection, or the HTTP status that refused it."""
    try:
        return await connect_async(
            daphne.ws_url(path), origin=daphne.url, additional_headers={"Cookie": cookie}, proxy=None, open_timeout=open_timeout
        )
    except InvalidStatus as refused:
        return refused.response.status_code


OTHER_USER_OPEN_TIMEOUT = 10.0


def run_async(scenario):
    """asyncio.run(scenario()) on a thread of its own: in a full run the browser tier's
    Playwright (sync API, session-scoped) keeps an event loop running on this thread."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(scenario())
        except BaseException as error:  # re-raised on the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, name="ws-scenario")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


async def flood_while_another_user_connects(daphnes: list[Daphne], flooder: str, other: str):
    """FLOOD handshakes of one user at once, spread over both daphnes; meanwhile the other
    user opens sockets one after another. Returns (flood results, the other's handshake
    times, the flood's duration)."""
    started = time.monotonic()
    flood = asyncio.gather(*(handshake(daphnes[i % 2], flooder) for i in range(FLOOD)))
    timings = []
    while not flood.done() or len(timings) < 5:
        began = time.monotonic()
        # A bound on liveness, not a performance figure (bench/bench_ws_flood.py measures):
        # without the cap and the turns these handshakes did not open within 10 s.
        ws = await handshake(daphnes[len(timings) % 2], other, open_timeout=OTHER_USER_OPEN_TIMEOUT)
        assert not isinstance(ws, int), f"the other user's handshake was refused ({ws}) during the flood"
        first = await asyncio.wait_for(ws.recv(), timeout=30)  # and it streams: its catch-up frame
        timings.append(time.monotonic() - began)
        assert first.startswith("<!-- live dashboard")
        await ws.close()
    results = await flood
    return results, timings, time.monotonic() - started


def test_flood_of_one_viewer_is_capped_across_daphnes_and_others_still_connect(deployment, daphnes, ws_people):
    flooder, other = login(daphnes[0], "ws-flooder"), login(daphnes[1], "ws-viewer")

    async def scenario():
        results, timings, took = await flood_while_another_user_connects(daphnes, flooder, other)
        opened = [r for r in results if not isinstance(r, int)]
        refused = [r for r in results if isinstance(r, int)]
        for ws in opened:
            await ws.close()
        await asyncio.sleep(0.5)
        # Closed sockets give their slots back at once.
        again = await handshake(daphnes[1], flooder)
        assert not isinstance(again, int), f"refused after the flood closed ({again})"
        await again.close()
        return opened, refused, timings, took

    opened, refused, timings, took = run_async(scenario)
    assert len(opened) == MAX_PER_USER, f"{len(opened)} of {FLOOD} flood sockets open (cap {MAX_PER_USER})"
    assert refused == [403] * (FLOOD - MAX_PER_USER)
    assert len(timings) >= 5  # the other user connected (and streamed) again and again meanwhile


def test_slots_of_a_killed_daphne_lapse(deployment, daphnes, ws_people):
    doomed = start_daphne(deployment, "ws-doomed")
    cookie = login(doomed, "ws-crasher")

    async def scenario() -> float:
        held = await asyncio.gather(*(handshake(doomed, cookie) for _ in range(MAX_PER_USER)))
        assert not [r for r in held if isinstance(r, int)]
        survivor = daphnes[0]
        assert await handshake(survivor, cookie) == 403, "the cap did not count the other daphne's sockets"
        doomed.process.kill9()  # its sockets never say goodbye: their slots stay in Redis
        killed_at = time.monotonic()
        while (ws := await handshake(survivor, cookie)) == 403:
            assert time.monotonic() - killed_at < SLOT_SECONDS + 5, "the killed daphne's slots did not lapse"
            await asyncio.sleep(0.25)
        await ws.close()
        return time.monotonic() - killed_at

    try:
        lapsed_after = run_async(scenario)
    finally:
        doomed.process.stop()
    # Renewed every third of their lifetime until the kill, so gone 2/3 to 3/3 of it later;
    # much sooner would mean something released them, and this test tested nothing.
    assert lapsed_after >= SLOT_SECONDS * 2 / 3 - 0.5
