"""Moved to blockmig.live.publish; this name stays until its last importers move over."""

from blockmig.live.publish import *  # noqa: F403
from blockmig.live.publish import _send, announce  # noqa: F401
