"""A file destination: the characters a path may hold, which allowed root holds it, and
what the host says about its directory, links and an existing file."""

from __future__ import annotations

import os
import posixpath

from blockmig.errors import Refused
from hosts.adapter import BlockJobHost

MAX_NAME_BYTES = 255  # one file or directory name (NAME_MAX)


def control_character(text: str) -> int | None:
    """Index of the first C0 or C1 control character (newline, tab, NUL, DEL …), if any."""
    for index, char in enumerate(text):
        if ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F:
            return index
    return None


def check_path_text(path: str, field: str = "destination") -> None:
    """Characters a path may hold: libvirt and QEMU report paths with control characters
    differently from how they were given, so such a path could never be matched again."""
    index = control_character(path)
    if index is not None:
        raise Refused(
            f"The path has a control character (a newline, tab or similar, U+{ord(path[index]):04X}) at position "
            f"{index + 1}: type it without one.",
            field,
        )
    for part in path.split("/"):
        size = len(part.encode("utf-8", "surrogatepass"))
        if size > MAX_NAME_BYTES:
            raise Refused(
                f"The name “{part[:24]}…” is {size} bytes long; a file or directory name may have at most "
                f"{MAX_NAME_BYTES} bytes.",
                field,
            )


def is_inside(path: str, root: str) -> bool:
    return path != root and posixpath.commonpath([root, path]) == root


def destination_root(destination: str, allowed_roots: list[str]) -> str | None:
    """The allowed root (as the host lists it) that holds `destination`, the innermost one
    when roots nest; None for a network destination or a path outside every root. The copy
    limits of blockmig.limits count copies per root by this."""
    if not destination.startswith("/"):
        return None
    path = posixpath.normpath(destination)
    holding = [r for r in allowed_roots if r and is_inside(path, posixpath.normpath(r))]
    return max(holding, key=lambda r: len(posixpath.normpath(r)), default=None)


def check_destination_on_host(
    host: BlockJobHost, destination: str, chain: list[str], reuse: bool, allowed_roots: list[str]
) -> None:
    if destination in chain:
        what = "the disk's current source" if destination == chain[0] else "a layer of the disk's backing chain"
        raise Refused(f"The destination {destination} is {what}: choose a new file.", "destination")
    directory = posixpath.dirname(destination)
    if host.is_local:
        # Symlinks inside a root must not lead out of it: the directory's and, when the file
        # exists (reuse), the file's own real path must both stay inside a real root.
        roots = [os.path.realpath(r) for r in allowed_roots]
        real_dir = os.path.realpath(directory)
        if os.path.isdir(directory) and not any(real_dir == r or is_inside(real_dir, r) for r in roots):
            raise Refused(
                f"The destination's directory {directory} leads outside the allowed storage (to {real_dir}).", "destination"
            )
        if os.path.lexists(destination):
            real = os.path.realpath(destination)
            if not any(is_inside(real, r) for r in roots):
                raise Refused(
                    f"The destination {destination} is a link that leads outside the allowed storage (to {real}).", "destination"
                )
        if os.path.realpath(destination) in [os.path.realpath(p) for p in chain]:
            raise Refused(f"The destination {destination} is a layer of the disk's chain.", "destination")
    if host.directory_exists(directory) is False:
        raise Refused(f"The directory {directory} does not exist on the host: create it first.", "destination")
    exists = host.path_exists(destination)
    if exists and not reuse:
        raise Refused(
            f"{destination} already exists: choose another name, or tick “reuse” if it was prepared for this copy.", "destination"
        )
    if reuse and exists is False:
        raise Refused(f"“Reuse” needs an existing {destination}, and there is none.", "destination")
