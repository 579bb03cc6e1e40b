"""What one user's websockets may cost the others: a cap on open sockets across every daphne,
and handshakes taken a few at a time per user in each daphne. (And what anyone's cost: a
handshake without a logged-in session is refused here, before any other work.)

Cap. A logged-in user holds at most BLOCKMIG_WS_MAX_PER_USER open sockets. The handshake
beyond that is refused (HTTP 403) after the session lookup and one Redis call, before the
user row, the permissions or the page are read, and without a trip to the database thread
that every consumer of the process shares. A browser tab that was refused retries with
backoff and gets in once another tab of that user closed.

Turns. All database work of a daphne runs on one thread, in arrival order (channels'
database_sync_to_async). The sockets a user may open still cost a few reads and a catch-up
render each; a user opening twenty at once would make everybody else's handshake wait
behind all of them. So each daphne runs BLOCKMIG_WS_HANDSHAKES_PER_USER of one user's
handshakes at a time, up to the first frame (or the close); the others wait in memory, and
other users' handshakes pass them by. One that waits TURN_SECONDS is refused: daphne would
drop it a second later anyway. Together, one viewer opening hundreds of sockets at once
costs the others little (tests/deploy/test_deploy_websockets.py, bench/bench_ws_flood.py).

The session lookup is shared: concurrent handshakes with one session cookie wait for a
single read, and the answer (which user, if any) is kept for a few seconds, so a flood with
one cookie reads the session once. That answer is used only to count, queue and refuse; a
socket let through is authenticated in full afterwards (channels' AuthMiddleware, then the
consumer, which also re-checks the session before every frame: blockmig.live.reauth).

Each open socket holds a slot: a member of its user's sorted set in Redis, scored with the
moment it lapses (Redis' clock, so the machines' clocks do not matter). The daphne holding
the socket renews it every third of BLOCKMIG_WS_SLOT_SECONDS and removes it as soon as the
socket closes; the slots of a daphne that crashed lapse by themselves.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import OrderedDict
from importlib import import_module
from weakref import WeakKeyDictionary

import redis.asyncio
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import SESSION_KEY

from blockmig.live.origin import refuse_handshake
from blockmig.live.reauth import CLOSE_NOT_LOGGED_IN

log = logging.getLogger(__name__)

# Below daphne's websocket handshake timeout (5 s by default), which drops the connection.
TURN_SECONDS = 4.0
# Which user a session cookie belongs to, for counting only: kept briefly, a bounded number.
SESSION_MEMORY_SECONDS = 5.0
SESSION_MEMORY_SIZE = 4096
# A user found at the cap is refused without asking Redis again for this long (a flood's
# handshakes then cost no Redis call each); a slot this process releases ends it early.
FULL_MEMORY_SECONDS = 1.0
# A flood is logged once a minute per user, not once per refused handshake.
REFUSAL_LOG_SECONDS = 60.0

# KEYS[1] the user's slots; ARGV: cap, lifetime in seconds, this socket's member.
_TAKE = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000))
return 1
"""
# KEYS[1] the user's slots; ARGV: lifetime in seconds, this socket's member.
_RENEW = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) * 1000))
return 1
"""


def slots_key(user_id: str) -> str:
    prefix = settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("prefix", "blockmig")
    return f"{prefix}:ws:user:{user_id}"


class _LoopState:
    """What belongs to one event loop: the Redis client, session reads in flight and the
    users' turns (daphne runs one loop; the tests one per test, and neither a client nor a
    future may cross loops)."""

    def __init__(self):
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            settings.REDIS_URL, max_connections=16, timeout=5, socket_timeout=5, socket_connect_timeout=2
        )
        self.redis = redis.asyncio.Redis(connection_pool=pool)
        self.take = self.redis.register_script(_TAKE)
        self.renew = self.redis.register_script(_RENEW)
        self.session_reads: dict[str, asyncio.Future] = {}
        self.turns: dict[str, list] = {}  # user → [semaphore, handshakes holding or waiting]


_loops: WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = WeakKeyDictionary()
_session_users: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
_full_until: dict[str, float] = {}
_refusals_logged: dict[str, float] = {}


def _state() -> _LoopState:
    loop = asyncio.get_running_loop()
    state = _loops.get(loop)
    if state is None:
        state = _loops[loop] = _LoopState()
    return state


def _read_session_user(session_key: str) -> str | None:
    user_id = import_module(settings.SESSION_ENGINE).SessionStore(session_key).get(SESSION_KEY)
    return None if user_id is None else str(user_id)


async def session_user_id(session_key: str | None) -> str | None:
    """The pk (as the session stores it) of the user the session cookie is logged in as."""
    if not session_key:
        return None
    known = _session_users.get(session_key)
    if known and time.monotonic() - known[0] < SESSION_MEMORY_SECONDS:
        return known[1]
    reads = _state().session_reads
    if session_key not in reads:
        # Off the thread the consumers share, like blockmig.live.reauth's reads: it only reads.
        read = database_sync_to_async(_read_session_user, thread_sensitive=False)
        reads[session_key] = asyncio.ensure_future(read(session_key))
        reads[session_key].add_done_callback(lambda _: reads.pop(session_key, None))
    user_id = await asyncio.shield(reads[session_key])
    _session_users[session_key] = (time.monotonic(), user_id)
    _session_users.move_to_end(session_key)
    while len(_session_users) > SESSION_MEMORY_SIZE:
        _session_users.popitem(last=False)
    return user_id


class Slot:
    """One open socket's place in its user's count."""

    def __init__(self, user_id: str):
        self.user_id = user_id
        self.key = slots_key(user_id)
        self.member = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.lifetime = settings.BLOCKMIG_WS_SLOT_SECONDS
        self.released = False

    async def take(self) -> bool:
        if time.monotonic() < _full_until.get(self.user_id, 0):
            return False
        taken = await _state().take(keys=[self.key], args=[settings.BLOCKMIG_WS_MAX_PER_USER, self.lifetime, self.member])
        if not taken:
            _full_until[self.user_id] = time.monotonic() + FULL_MEMORY_SECONDS
        return bool(taken)

    async def keep(self) -> None:
        while True:
            await asyncio.sleep(self.lifetime / 3)
            try:
                await _state().renew(keys=[self.key], args=[self.lifetime, self.member])
            except redis.RedisError as error:  # the next renewal may get through in time
                log.warning("could not renew the websocket slot %s: %s", self.member, error)

    async def release(self) -> None:
        if self.released:
            return
        self.released = True
        _full_until.pop(self.user_id, None)
        try:
            await _state().redis.zrem(self.key, self.member)
        except redis.RedisError as error:  # it lapses by itself
            log.warning("could not release the websocket slot %s: %s", self.member, error)


class Turn:
    """A user's turn to run a handshake in this daphne (see "Turns" above)."""

    def __init__(self, user_id: str):
        self.user_id = user_id
        self.turns = _state().turns
        self.entry = self.turns.setdefault(user_id, [asyncio.Semaphore(settings.BLOCKMIG_WS_HANDSHAKES_PER_USER), 0])
        self.entry[1] += 1
        self.held = self.done = False

    async def wait(self) -> bool:
        """False if the turn did not come in time."""
        try:
            await asyncio.wait_for(self.entry[0].acquire(), timeout=TURN_SECONDS)
        except TimeoutError:
            return False
        self.held = True
        return True

    def end(self) -> None:
        if self.done:
            return
        self.done = True
        if self.held:
            self.entry[0].release()
        self.entry[1] -= 1
        if self.entry[1] == 0:
            del self.turns[self.user_id]


class HandshakeGate:
    """ASGI middleware between channels' CookieMiddleware and SessionMiddleware: a handshake
    without a logged-in session, or beyond its user's cap, is refused; the others wait for
    their user's turn, and hold a slot while they run."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return await self.application(scope, receive, send)
        user_id = await session_user_id(scope.get("cookies", {}).get(settings.SESSION_COOKIE_NAME))
        if user_id is None:  # every page needs a login: spare the consumer its database trips
            return await refuse_handshake(receive, send, code=CLOSE_NOT_LOGGED_IN)
        slot = Slot(user_id)
        try:
            taken = await slot.take()
        except redis.RedisError as error:
            # Without Redis there is no live console (the channel layer lives there too).
            log.warning("refusing a websocket: cannot count sockets in Redis: %s", error)
            return await refuse_handshake(receive, send)
        if not taken:
            _log_refusal(user_id)
            return await refuse_handshake(receive, send)
        keeper = asyncio.create_task(slot.keep())
        turn = Turn(user_id)

        async def send_watched(message: dict) -> None:
            await send(message)
            if message["type"] in ("websocket.send", "websocket.close"):
                turn.end()  # the first frame is out: the expensive part is over
            if message["type"] == "websocket.close":  # a closed socket stops counting at once
                keeper.cancel()
                await slot.release()

        try:
            if not await turn.wait():
                return await refuse_handshake(receive, send)
            return await self.application(scope, receive, send_watched)
        finally:
            turn.end()
            keeper.cancel()
            await slot.release()


def _log_refusal(user_id: str) -> None:
    now = time.monotonic()
    if now - _refusals_logged.get(user_id, -REFUSAL_LOG_SECONDS) >= REFUSAL_LOG_SECONDS:
        _refusals_logged[user_id] = now
        log.warning(
            "refusing websockets of user %s: %s open already (logged once a minute)", user_id, settings.BLOCKMIG_WS_MAX_PER_USER
        )
