"""The ASGI application bench_ws_fanout.py serves with daphne: the console itself, plus one
bare route for the baseline, /ws/bench-bare/, whose consumer only joins a group and writes
whatever text a group message brings to its socket (no auth, no read, no render)."""

from __future__ import annotations

import os

from channels.generic.websocket import AsyncWebsocketConsumer

from blockmig.asgi import application as console

BARE_PATH = "/ws/bench-bare/"
BARE_GROUP = f"bench-bare-{os.environ.get('BLOCKMIG_CHANNEL_PREFIX', '')}"


class BareConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.channel_layer.group_add(BARE_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(BARE_GROUP, self.channel_name)

    async def bench_frame(self, event: dict) -> None:
        await self.send(text_data=event["text"])


bare = BareConsumer.as_asgi()


async def application(scope, receive, send):
    if scope["type"] == "websocket" and scope["path"] == BARE_PATH:
        return await bare(scope, receive, send)
    return await console(scope, receive, send)
