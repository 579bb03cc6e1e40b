"""What every live page's socket does; the page modules say what to render.

A consumer joins its groups, then sends the page's fragments as the database has them now
(catch-up: a browser that reconnects after any outage shows the true state at once). After
that, every `*.changed` event from blockmig.live.publish makes it re-read the committed rows
and send the fragments again.

Events only say "something changed, seq N". Renders are coalesced: while one is running,
further events just mark the page dirty, so a burst of progress costs one render per
audience, never a queue of stale ones. Pages that summarise many migrations (dashboard,
hosts) also wait a short minimum interval between renders.

One frame serves an audience: the sockets whose users the templates cannot tell apart (the
same permissions, and the same relation to what the page shows, such as being the
requester). Frames carry no CSRF token (blockmig.live.frames), so two viewers get
byte-identical frames from one render (blockmig.live.cache).

Before every frame an event makes it send, and at least every BLOCKMIG_WS_REAUTH_SECONDS,
a socket asks again whether its session is still open and its user still active and allowed
(blockmig.live.reauth, batched across the sockets of the process); if not, it closes with
4401 or 4403 and sends nothing more. The Origin check, the login check and the per-user cap
on open sockets come before any consumer runs (blockmig.asgi).
"""

from __future__ import annotations

import asyncio
import logging
from http.cookies import SimpleCookie
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user_model

from blockmig.live import frames, reauth
from blockmig.live.cache import Shared
from blockmig.live.cache import frames as frame_cache

log = logging.getLogger(__name__)

# Close codes (4000–4999 are the application's). The htmx extension does not reconnect on
# these, which is right: retrying will not log the user in or create the page.
CLOSE_NOT_LOGGED_IN = reauth.CLOSE_NOT_LOGGED_IN
CLOSE_FORBIDDEN = reauth.CLOSE_FORBIDDEN
CLOSE_NOT_FOUND = 4404

# Re-join the groups and re-render this often: heals a Redis restart (which forgets group
# membership) and channels_redis' group expiry without the user noticing.
RESYNC_SECONDS = 60.0

Seen = dict[tuple, int]


def cookies_of(scope: Any) -> dict[str, str]:
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            jar.load(value.decode("latin-1"))
            return {key: morsel.value for key, morsel in jar.items()}
    return {}


def _fresh_user(user: Any) -> Any:
    """The same user read again, so permission caches start empty."""
    return get_user_model().objects.filter(pk=user.pk).first() or user


class LiveConsumer(AsyncWebsocketConsumer):
    """Authentication, groups, catch-up, ordering, coalescing and sharing; subclasses say
    what to render (`resolve`, `groups_to_join`, `page_key`, `wants`, `render`)."""

    view_permission = "blockmig.view_migration"
    min_interval = 0.0  # seconds between two renders of this socket

    closing = False  # set once the server closed this socket: nothing more is sent

    @property
    def user(self) -> Any:
        """This socket's user (AuthMiddleware put them in the scope; connect refuses none)."""
        return self.scope["user"]

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_NOT_LOGGED_IN)
            return
        self.timezone_name = cookies_of(self.scope).get("tz", "")
        # One trip to the database thread for all of it: a handshake waits its turn there.
        refusal = await database_sync_to_async(self.admit)()
        if refusal:
            await self.close(code=refusal)
            return
        self.session_key: str = self.scope["session"].session_key or ""
        self.seen: Seen = {}
        self.dirty = False
        self.last_render = 0.0
        self.caught_up = False  # the catch-up frame has been rendered
        self.render_task: asyncio.Task | None = None
        # Join first, read second: a change committed in between is both in the catch-up
        # read and announced to us, never in neither.
        await self.join_groups()
        await self.accept()
        self.mark_dirty()
        self.resync_task = asyncio.create_task(self.resync_loop())
        self.reauth_task = asyncio.create_task(self.reauth_loop())

    def admit(self) -> int | None:
        """The close code for a handshake this user may not make, or None (sync)."""
        if not self.user.has_perm(self.view_permission):
            return CLOSE_FORBIDDEN
        if not self.resolve():
            return CLOSE_NOT_FOUND
        self.permissions = reauth.permissions_of(self.user)  # what the re-checks compare
        return None

    async def disconnect(self, code: int) -> None:
        self.stop_tasks()
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    def stop_tasks(self) -> None:
        current = asyncio.current_task()
        for name in ("resync_task", "reauth_task", "render_task"):
            task = getattr(self, name, None)
            if task is not None and task is not current:
                task.cancel()

    async def shut(self, code: int) -> None:
        """Close from our side; events that still arrive until the client answers are dropped."""
        self.closing = True
        self.stop_tasks()
        await self.close(code=code)

    async def still_allowed(self) -> bool:
        """Ask the database again whether this socket's user may see its stream; close the
        socket if not. A user whose roles changed but who may still see the page gets its
        next frames rendered for the new audience (buttons come and go)."""
        try:
            verdict = await reauth.check(self.session_key, self.user.pk)
        except Exception:
            log.exception("could not re-check the user of %s", self.scope.get("path"))
            await self.shut(1011)  # the browser reconnects with backoff and is checked afresh
            return False
        refusal = verdict.refusal(self.view_permission)
        if refusal:
            await self.shut(refusal)
            return False
        if verdict.permissions != self.permissions:
            self.scope["user"] = await database_sync_to_async(_fresh_user)(self.user)
        self.permissions = verdict.permissions
        return True

    async def reauth_loop(self) -> None:
        """A session can end, and a role go, while no event arrives."""
        while True:
            await asyncio.sleep(settings.BLOCKMIG_WS_REAUTH_SECONDS)
            if not await self.still_allowed():
                return

    async def join_groups(self) -> None:
        self.joined = self.groups_to_join()
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)

    async def resync_loop(self) -> None:
        while True:
            await asyncio.sleep(RESYNC_SECONDS)
            await self.join_groups()
            # Redis may have restarted and started the sequences again at 1. (Changed roles
            # are the re-check's business: it runs before this render too.)
            self.seen.clear()
            self.mark_dirty()

    # -- events from blockmig.live.publish ------------------------------------------------

    async def migration_changed(self, event: dict) -> None:
        if self.wants(event):
            self.note(("migration", event["id"]), event["seq"])

    async def inventory_changed(self, event: dict) -> None:
        if self.wants(event):
            self.note(("hypervisor", event["id"]), event["seq"])

    def wants(self, event: dict) -> bool:
        return True

    def note(self, subject: tuple, seq: int) -> None:
        """Drop an event older than one already rendered; otherwise schedule a render."""
        if seq <= self.seen.get(subject, 0):
            return
        self.seen[subject] = seq
        self.mark_dirty()

    def mark_dirty(self) -> None:
        if self.closing:
            return
        self.dirty = True
        if self.render_task is None or self.render_task.done():
            self.render_task = asyncio.create_task(self.render_loop())

    async def render_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self.dirty:
            wait = self.last_render + self.min_interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            # Checked after the event that made us render: a user who lost the page by
            # then gets nothing. (The catch-up frame follows the handshake's own check.)
            if self.caught_up and not await self.still_allowed():
                return
            # Cleared only now, next to the read of `seen`: an event that came during the
            # check is in this render, and must not cause a second frame with the same seqs.
            self.dirty = False
            seen = dict(self.seen)
            variant = self.take_variant(seen)
            try:
                frame = await self.frame(seen, variant)
            except Exception:
                # Transient (a locked database, say): 1011 makes the browser reconnect
                # with backoff, and the reconnect catches up.
                log.exception("live render failed for %s", self.scope.get("path"))
                await self.shut(1011)
                return
            self.last_render = loop.time()
            self.caught_up = True
            if frame is None:
                await self.shut(CLOSE_NOT_FOUND)
                return
            await self.send(text_data=frame)

    async def frame(self, seen: Seen, variant: tuple) -> str | None:
        """This socket's next frame: shared with every socket of its audience that has seen
        the same seqs; a catch-up (nothing seen yet) is its own, since nothing says how fresh
        another socket's render is."""

        def render() -> Any:
            return database_sync_to_async(self.render_frame)(seen, variant)

        if not seen:
            return await render()
        key = (self.page_key(), tuple(sorted(seen.items())), self.timezone_name, variant, self.audience())
        return await frame_cache.get(key, render)

    def take_variant(self, seen: Seen) -> tuple:
        """Which optional parts the render about to start must include (a page may leave
        out what no event since its last render touched). Called once per render, on the
        event loop, together with the read of `seen`; part of the frame key."""
        return ()

    def audience(self) -> tuple:
        """What the page's templates can tell about this socket's user: everything a shared
        frame's key must hold. By default their permissions (their roles); a page whose
        templates also ask who the user is adds that relation."""
        return (self.permissions,)

    # -- rendering (sync, in the database thread) ---------------------------------------

    def render_frame(self, seen: Seen, variant: tuple = ()) -> str | None:
        # Catch-up frames share nothing: nothing says how fresh another socket's render is.
        shared = Shared((self.page_key(), tuple(sorted(seen.items())), self.timezone_name, variant)) if seen else Shared(None)
        with frames.in_timezone(self.timezone_name):
            body = self.render(self.request(), shared, variant)
        if body is None:
            return None
        return f"{frames.header(self.page_key()[0], seen)}\n{body}"

    def request(self) -> Any:
        """The request the templates see: the page's path, this socket's user."""
        path = self.scope.get("path", "/").removeprefix("/ws")
        return frames.render_request(path, self.user, secure=self.scope.get("scheme") == "wss")

    def resolve(self) -> bool:
        """Look up the page's subject; False closes the socket as not found."""
        return True

    def groups_to_join(self) -> list[str]:
        raise NotImplementedError

    def page_key(self) -> tuple:
        raise NotImplementedError

    def render(self, request: Any, shared: Shared, variant: tuple = ()) -> str | None:
        raise NotImplementedError


class NotFoundConsumer(AsyncWebsocketConsumer):
    """Any /ws/ path no route matches, a bad id included. Accepted only to close it with
    4404: refusing the handshake would look like a network error, which the browser retries."""

    async def connect(self) -> None:
        await self.accept()
        await self.close(code=CLOSE_NOT_FOUND)
