"""Renders shared by the sockets of one process.

A frame (or a read, or one fragment) that one socket rendered for (page, seqs seen, time
zone, audience, ...) may serve another socket that has seen the same seqs: it came from a
database read made after every commit numbered <= those seqs. That is what makes fan-out
cheap: a thousand people watching one migration cost one read and one render per audience
(blockmig.live.audience) for each change, not one per socket.

Two levels, because the renders run on the database thread and the sockets on the event loop:

- `frames` (event loop): whole frames, and the renders under way. A socket that wants a frame
  someone is already rendering awaits that render instead of queueing its own trip to the
  database thread (a thousand queued trips cost more than the render itself).
- `render_cache` (any thread): the parts of a render, through `Shared`: the database read,
  and the fragments that do not depend on the audience (a migration's status and timeline).

Small and short-lived on purpose: entries live `ttl` seconds, and a key names the seqs, so
an entry is never served for a newer state.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from threading import Lock
from typing import Any
from weakref import WeakKeyDictionary

Key = tuple[Hashable, ...]


class RenderCache:
    """A bounded, thread-safe map of recent renders that forgets them after `ttl` seconds."""

    def __init__(self, size: int = 512, ttl: float = 5.0) -> None:
        self.size, self.ttl = size, ttl
        self._entries: OrderedDict[Key, tuple[float, Any]] = OrderedDict()
        self._lock = Lock()

    def get_or_render(self, key: Key, render: Callable[[], Any]) -> Any:
        hit = self.peek(key)
        if hit is not None:
            return hit
        value = render()
        self.put(key, value)
        return value

    def peek(self, key: Key) -> Any:
        """The value under `key` if it is fresh, else None."""
        with self._lock:
            hit = self._entries.get(key)
        return hit[1] if hit and time.monotonic() - hit[0] < self.ttl else None

    def put(self, key: Key, value: Any) -> None:
        with self._lock:
            self._entries[key] = (time.monotonic(), value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


render_cache = RenderCache()


class Shared:
    """The parts of one render that another socket's render may reuse: `base` names the
    page, the seqs seen and the time zone; None (a catch-up) shares nothing."""

    def __init__(self, base: Key | None) -> None:
        self.base = base

    def get(self, parts: Key, render: Callable[[], Any]) -> Any:
        if self.base is None:
            return render()
        return render_cache.get_or_render((*self.base, *parts), render)


class FrameCache:
    """Whole frames by key, with the renders under way (per event loop: daphne runs one,
    tests one per test, and a task belongs to its loop)."""

    def __init__(self, size: int = 512, ttl: float = 5.0) -> None:
        self.done = RenderCache(size, ttl)
        self._running: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Key, asyncio.Task]] = WeakKeyDictionary()
        self.renders = 0  # renders started: what tests and the bench count

    async def get(self, key: Key, render: Callable[[], Awaitable[str | None]]) -> str | None:
        """The frame under `key`: cached, or from the render under way, or rendered now.
        A render's error reaches every socket that waited for it (each closes with 1011)."""
        frame = self.done.peek(key)
        if frame is not None:
            return frame
        running = self._running.setdefault(asyncio.get_running_loop(), {})
        task = running.get(key)
        if task is None:
            self.renders += 1
            task = running[key] = asyncio.ensure_future(render())

            def finished(task: asyncio.Task, key: Key = key) -> None:
                running.pop(key, None)
                if not task.cancelled() and task.exception() is None and task.result() is not None:
                    self.done.put(key, task.result())

            task.add_done_callback(finished)
        # Shielded: the socket that started the render may close; the others still want it.
        return await asyncio.shield(task)

    def clear(self) -> None:
        self.done.clear()
        self.renders = 0


frames = FrameCache()


def clear() -> None:
    """Forget every shared render (tests start from nothing)."""
    render_cache.clear()
    frames.clear()
