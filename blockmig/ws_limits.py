"""Moved to blockmig.live.handshake; this name stays until its last importers move over."""

from blockmig.live.handshake import *  # noqa: F403
from blockmig.live.handshake import slots_key  # noqa: F401  (blockmig.metrics)
