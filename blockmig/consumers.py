"""Websocket consumers of the live console: one per page kind.

    /ws/migrations/<id>/      the migration page: status, actions, timeline, disks
    /ws/dashboard/            the dashboard's migrations block and approval count
    /ws/hosts/<name>/?disk=N  the disk page: job badge, facts, chain picture, layers
    /ws/hosts/<name>/?domain=U  the domain page: state, facts, disks table, small chain pictures
    /ws/hosts/<name>/?q=&page=  the hypervisor page: health, facts, the shown page of domains

A consumer joins its groups, then sends the page's fragments as the database has them now
(catch-up: a browser that reconnects after any outage shows the true state at once). After
that, every `*.changed` event from blockmig.publish makes it re-read the committed rows and
send the fragments again, rendered for this socket's user: a viewer's fragments carry no
action buttons because they come out of the same templates with the viewer's permissions.

Events only say "something changed, seq N". Renders are coalesced: while one is running,
further events just mark the page dirty, so a burst of progress costs one render per socket,
never a queue of stale ones. Pages that summarise many migrations (dashboard, hosts) also
wait a short minimum interval between renders.

Before every frame an event makes it send, and at least every BLOCKMIG_WS_REAUTH_SECONDS,
a socket asks again whether its session is still open and its user still active and allowed
(blockmig.ws_auth, batched across the sockets of the process); if not, it closes with 4401
or 4403 and sends nothing more. The Origin check, the login check and the per-user cap on
open sockets come before any consumer runs (blockmig.asgi).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import zoneinfo
from collections import OrderedDict
from collections.abc import Callable
from http.cookies import SimpleCookie
from threading import Lock
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import RequestFactory
from django.utils import timezone
from django_htmx.middleware import HtmxDetails

from blockmig import live_fragments, publish, ws_auth
from blockmig.models import Migration
from hosts.models import Disk, Hypervisor

log = logging.getLogger(__name__)

# Close codes (4000–4999 are the application's). The htmx extension does not reconnect on
# these, which is right: retrying will not log the user in or create the page.
CLOSE_NOT_LOGGED_IN = ws_auth.CLOSE_NOT_LOGGED_IN
CLOSE_FORBIDDEN = ws_auth.CLOSE_FORBIDDEN
CLOSE_NOT_FOUND = 4404

# Re-join the groups and re-render this often: heals a Redis restart (which forgets group
# membership) and channels_redis' group expiry without the user noticing.
RESYNC_SECONDS = 60.0
# The permissions that put buttons on the migration page (blockmig.views.available_actions).
ACTION_PERMISSIONS = ("blockmig.approve_migration", "blockmig.abort_migration", "blockmig.change_migration")

_request_factory = RequestFactory()

# Query values a host page's socket accepts; anything else is no page of ours (4404), and
# never reaches a query (a NUL byte makes PostgreSQL raise, a 30-digit id overflows).
DATABASE_ID = re.compile(r"[0-9]{1,18}")
LIBVIRT_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _cookies(scope: dict) -> dict[str, str]:
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            jar = SimpleCookie()
            jar.load(value.decode("latin-1"))
            return {key: morsel.value for key, morsel in jar.items()}
    return {}


def _fresh_user(user):
    """The same user read again, so permission caches start empty."""
    return get_user_model().objects.filter(pk=user.pk).first() or user


class RenderCache:
    """Reads and renders shared by the sockets of one process.

    What one socket rendered for (page, seqs seen, ...) may be reused by another socket that
    has seen the same seqs: it came from a database read made after every commit numbered
    <= those seqs. Small and short-lived on purpose; it exists for fan-out (many people
    watching one migration cost one database read and one render per role-visible variant).
    """

    def __init__(self, size: int = 512, ttl: float = 5.0):
        self.size, self.ttl = size, ttl
        self._frames: OrderedDict[tuple, tuple[float, object]] = OrderedDict()
        self._lock = Lock()

    def get_or_render(self, key: tuple, render: Callable):
        now = time.monotonic()
        with self._lock:
            hit = self._frames.get(key)
            if hit and now - hit[0] < self.ttl:
                return hit[1]
        frame = render()
        self.put(key, frame)
        return frame

    def peek(self, key: tuple):
        with self._lock:
            hit = self._frames.get(key)
        return hit[1] if hit and time.monotonic() - hit[0] < self.ttl else None

    def put(self, key: tuple, value) -> None:
        with self._lock:
            self._frames[key] = (time.monotonic(), value)
            self._frames.move_to_end(key)
            while len(self._frames) > self.size:
                self._frames.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()


render_cache = RenderCache()


class Shared:
    """Renders one socket may take from another's: `base` names the page, the seqs seen
    and the timezone; None (a catch-up) shares nothing."""

    def __init__(self, base: tuple | None):
        self.base = base

    def get(self, parts: tuple, render: Callable):
        if self.base is None:
            return render()
        return render_cache.get_or_render((*self.base, *parts), render)


class LiveConsumer(AsyncWebsocketConsumer):
    """Authentication, groups, catch-up, ordering and coalescing; subclasses say what to render."""

    view_permission = "blockmig.view_migration"
    min_interval = 0.0  # seconds between two renders of this socket

    closing = False  # set once the server closed this socket: nothing more is sent

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_NOT_LOGGED_IN)
            return
        self.cookies = _cookies(self.scope)
        # One trip to the database thread for all of it: a handshake waits its turn there.
        refusal = await database_sync_to_async(self.admit)()
        if refusal:
            await self.close(code=refusal)
            return
        self.session_key = self.scope["session"].session_key
        self.seen: dict[tuple, int] = {}
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
        if not self.scope["user"].has_perm(self.view_permission):
            return CLOSE_FORBIDDEN
        if not self.resolve():
            return CLOSE_NOT_FOUND
        self.frame_class = self.compute_frame_class()
        self.permissions = ws_auth.permissions_of(self.scope["user"])  # what the re-checks compare
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
        next frames rendered with the new roles (buttons come and go)."""
        try:
            verdict = await ws_auth.check(self.session_key, self.scope["user"].pk)
        except Exception:
            log.exception("could not re-check the user of %s", self.scope.get("path"))
            await self.shut(1011)  # the browser reconnects with backoff and is checked afresh
            return False
        refusal = verdict.refusal(self.view_permission)
        if refusal:
            await self.shut(refusal)
            return False
        if verdict.permissions != self.permissions:
            self.scope["user"] = await database_sync_to_async(_fresh_user)(self.scope["user"])
            self.frame_class = await database_sync_to_async(self.compute_frame_class)()
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

    # -- events from blockmig.publish -------------------------------------------------

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
            key = self.frame_key(seen, variant)
            frame = render_cache.peek(key) if key else None
            if frame is None:
                try:
                    frame = await database_sync_to_async(self.render_frame)(seen, key, variant)
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

    def take_variant(self, seen: dict[tuple, int]) -> tuple:
        """Which optional parts the render about to start must include (a page may leave
        out what no event since its last render touched). Called once per render, on the
        event loop, together with the read of `seen`; part of the frame key."""
        return ()

    def frame_key(self, seen: dict[tuple, int], variant: tuple = ()) -> tuple | None:
        """Sockets with equal keys get the same frame. None for a catch-up: nothing says
        how fresh another socket's render is."""
        if not seen:
            return None
        return (self.page_key(), tuple(sorted(seen.items())), self.cookies.get("tz", ""), "frame", self.frame_class, variant)

    # -- rendering (sync, in the database thread) ---------------------------------------

    def render_frame(self, seen: dict[tuple, int], key: tuple | None, variant: tuple = ()) -> str | None:
        frame = self.render_frame_uncached(seen, variant)
        if key is not None:
            render_cache.put(key, frame)
        return frame

    def render_frame_uncached(self, seen: dict[tuple, int], variant: tuple = ()) -> str | None:
        tz = self.cookies.get("tz", "")
        # Catch-up frames share nothing: nothing says how fresh another socket's render is.
        shared = Shared((self.page_key(), tuple(sorted(seen.items())), tz, variant)) if seen else Shared(None)
        try:
            timezone.activate(zoneinfo.ZoneInfo(tz)) if tz else timezone.deactivate()
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            timezone.deactivate()
        try:
            body = self.render(self.fake_request(), shared, variant)
        finally:
            timezone.deactivate()
        if body is None:
            return None
        marks = " ".join(f"{kind}:{ident}={seq}" for (kind, ident), seq in sorted(seen.items()))
        return f"<!-- live {self.page_key()[0]} {marks} -->\n{body}"

    def compute_frame_class(self) -> tuple:
        """Which sockets may share a frame: by default only those of one user."""
        return self.user_key()

    def user_key(self) -> tuple:
        """What makes one user's render differ from another's beyond the data: who, and
        the CSRF secret their forms must carry."""
        return (self.scope["user"].pk, self.cookies.get(settings.CSRF_COOKIE_NAME, ""))

    def fake_request(self):
        """A GET request as this socket's user made it, so templates, context processors
        and {% csrf_token %} behave as on the page (the token matches the browser's cookie)."""
        path = self.scope.get("path", "/").removeprefix("/ws")
        request = _request_factory.get(path, secure=self.scope.get("scheme") == "wss")
        request.user = self.scope["user"]
        request.session = self.scope.get("session")
        request.COOKIES = dict(self.cookies)
        csrf = self.cookies.get(settings.CSRF_COOKIE_NAME)
        if csrf:
            request.META["CSRF_COOKIE"] = csrf
        request.htmx = HtmxDetails(request)
        return request

    def resolve(self) -> bool:
        """Look up the page's subject; False closes the socket as not found."""
        return True

    def groups_to_join(self) -> list[str]:
        raise NotImplementedError

    def page_key(self) -> tuple:
        raise NotImplementedError

    def render(self, request, shared: Shared, variant: tuple = ()) -> str | None:
        raise NotImplementedError


class MigrationConsumer(LiveConsumer):
    """The migration page: status with the progress bar, actions, timeline, disks."""

    def resolve(self) -> bool:
        self.migration_id = int(self.scope["url_route"]["kwargs"]["migration_id"])
        return Migration.objects.filter(pk=self.migration_id).exists()

    def groups_to_join(self) -> list[str]:
        return [publish.migration_group(self.migration_id)]

    def compute_frame_class(self) -> tuple:
        """The page differs between users only in its actions, which follow from these
        permissions and from being the requester; users who may act also need their own
        CSRF token in the forms."""
        user = self.scope["user"]
        perms = tuple(user.has_perm(p) for p in ACTION_PERMISSIONS)
        requester = Migration.objects.filter(pk=self.migration_id, requested_by_id=user.pk).exists()
        return (perms, requester, self.user_key() if any(perms) else None)

    def wants(self, event: dict) -> bool:
        return event["type"] == "migration.changed" and event["id"] == self.migration_id

    def page_key(self) -> tuple:
        return ("migration", self.migration_id)

    def render(self, request, shared: Shared, variant: tuple = ()) -> str | None:
        return live_fragments.migration_page(request, self.migration_id, shared, self.user_key())


class DashboardConsumer(LiveConsumer):
    """The dashboard: active, awaiting approval (with the count), recent; host health.

    Every frame carries the migrations block. The header's totals and the host cards
    (health, last sync, error) come with a catch-up and after a sync of any host
    (`inventory.changed`), not with every progress event."""

    min_interval = 0.5
    HOSTS = ("hosts",)
    hosts_changed = False  # an inventory event arrived since the last render

    def groups_to_join(self) -> list[str]:
        return [publish.DASHBOARD_GROUP]

    def page_key(self) -> tuple:
        return ("dashboard",)

    def note(self, subject: tuple, seq: int) -> None:
        if subject[0] == "hypervisor" and seq > self.seen.get(subject, 0):
            self.hosts_changed = True
        super().note(subject, seq)

    def take_variant(self, seen: dict[tuple, int]) -> tuple:
        hosts = self.hosts_changed or not seen  # nothing seen: a catch-up
        self.hosts_changed = False
        return self.HOSTS if hosts else ()

    def render(self, request, shared: Shared, variant: tuple = ()) -> str | None:
        hosts = variant == self.HOSTS
        return shared.get(("body", self.user_key()), lambda: live_fragments.dashboard(request, hosts=hosts))


# The "last seen" time of the domains open on domain pages (their synced_at at the last
# render that found them), shared by the sockets of this process: a socket that took its
# frames from another socket's render still knows it when the domain disappears.
_domain_last_seen: OrderedDict[tuple[int, str], object] = OrderedDict()
_domain_last_seen_lock = Lock()


def _note_domain_seen(key: tuple[int, str], synced_at) -> object:
    """Remember `synced_at` (if newer) and return the latest known."""
    with _domain_last_seen_lock:
        known = _domain_last_seen.get(key)
        if synced_at is not None and (known is None or synced_at > known):
            known = synced_at
        if known is not None:
            _domain_last_seen[key] = known
            _domain_last_seen.move_to_end(key)
            while len(_domain_last_seen) > 4096:
                _domain_last_seen.popitem(last=False)
        return known


class HostConsumer(LiveConsumer):
    """A hypervisor's inventory pages, redrawn after every sync of the host and on migration
    phase changes (progress alone changes none of them). By the query:

    - `?disk=<pk>` (repeatable): the disk page: job badge, facts, chain picture, layers;
    - `?domain=<uuid>`: the domain page: title and state, actions, facts, the disks block
      (table and small chain pictures, so disks a sync adds or removes show too); a domain
      the sync removed gets a "no longer exists" banner and the socket keeps serving it;
    - neither, with `?q=&page=`: the hypervisor page: health, stale banner, facts and the
      page of the domain table the user is looking at (the table holds the socket, so a new
      search or page opens a socket with the new query); migration events are ignored.

    Every mode also pushes the host's stale banner (`stale-<pk>`)."""

    min_interval = 0.5

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(self.scope.get("query_string", b"").decode())

    @property
    def view_permission(self) -> str:
        query = self.query
        if "disk" in query:
            return "hosts.view_disk"
        if "domain" in query:
            return "hosts.view_domain"
        return "hosts.view_hypervisor"

    def resolve(self) -> bool:
        query = self.query
        disks = query.get("disk", [])
        self.domain_uuid = query.get("domain", [""])[0].lower()
        self.table_query = query.get("q", [""])[0].strip()
        self.table_page = query.get("page", ["1"])[0]
        if (
            not all(DATABASE_ID.fullmatch(v) for v in disks)
            or (self.domain_uuid and not LIBVIRT_UUID.fullmatch(self.domain_uuid))
            or CONTROL_CHARACTERS.search(self.table_query + self.table_page)
        ):
            return False
        self.disk_ids = sorted({int(v) for v in disks})
        hypervisor = Hypervisor.objects.filter(name=self.scope["url_route"]["kwargs"]["name"]).first()
        if hypervisor is None:
            return False
        self.hypervisor_id = hypervisor.pk
        self.migration_states: dict[int, str] = {}
        self.disk_labels: dict[int, str] = {}
        if self.disk_ids:
            rows = Disk.objects.filter(domain__hypervisor=hypervisor, pk__in=self.disk_ids).values_list(
                "pk", "target", "domain__name"
            )
            self.disk_labels = {pk: f"{target} on {name}" for pk, target, name in rows}
        if self.domain_uuid:
            synced_at = hypervisor.domains.filter(uuid=self.domain_uuid).values_list("synced_at", flat=True).first()
            if synced_at is None:
                return False
            self.last_seen = _note_domain_seen((self.hypervisor_id, self.domain_uuid), synced_at)
        return True

    @property
    def hypervisor_page(self) -> bool:
        return not self.disk_ids and not self.domain_uuid

    def groups_to_join(self) -> list[str]:
        return [publish.hypervisor_group(self.hypervisor_id)]

    def wants(self, event: dict) -> bool:
        if event["type"] == "inventory.changed":
            return event["id"] == self.hypervisor_id
        if self.hypervisor_page:
            return False  # the domain table shows libvirt's jobs, which only a sync changes
        # Progress does not change these pages; a new phase (mirror started, pivoted) does.
        changed = self.migration_states.get(event["id"]) != event.get("state")
        self.migration_states[event["id"]] = event.get("state")
        return changed

    def page_key(self) -> tuple:
        table = (self.table_query, self.table_page) if self.hypervisor_page else ()
        return ("hosts", self.hypervisor_id, tuple(self.disk_ids), self.domain_uuid, *table)

    def render(self, request, shared: Shared, variant: tuple = ()) -> str | None:
        user = self.user_key()
        if self.hypervisor_page:
            return shared.get(
                ("body", user),
                lambda: live_fragments.hypervisor_page(request, self.hypervisor_id, self.table_query, self.table_page),
            )
        parts = []
        if self.disk_ids:
            disks = shared.get(
                ("disks", user),
                lambda: live_fragments.disk_pages(request, self.hypervisor_id, self.disk_ids, self.disk_labels),
            )
            if disks is None:
                return None
            parts.append(disks)
        if self.domain_uuid:
            key = (self.hypervisor_id, self.domain_uuid)
            last_seen = _note_domain_seen(key, None) or self.last_seen
            frame, synced_at = shared.get(
                ("domain", user, last_seen),
                lambda: live_fragments.domain_page(request, self.hypervisor_id, self.domain_uuid, last_seen),
            )
            if frame is None:
                return None
            self.last_seen = _note_domain_seen(key, synced_at) or self.last_seen
            parts.append(frame)
        return "\n".join(parts)


class NotFoundConsumer(AsyncWebsocketConsumer):
    """Any /ws/ path no route matches, a bad id included. Accepted only to close it with
    4404: refusing the handshake would look like a network error, which the browser retries."""

    async def connect(self) -> None:
        await self.accept()
        await self.close(code=CLOSE_NOT_FOUND)
