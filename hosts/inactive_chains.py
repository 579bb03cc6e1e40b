"""Backing chains of disks whose domain is not running.

libvirt fills <backingStore> only in a running domain's XML: a shut-off domain shows its
active layer alone, whatever lies behind it. So the chain is walked layer by layer from
another source: a storage pool's volume XML (any host), or `qemu-img info` on this machine
(local hosts only: a remote host's files are not ours to open). A layer that is not there
is recorded as missing, and where no source can tell, the chain says it is unknown rather
than look standalone.

No libvirt here (the adapter passes in its pool lookup as a function), no Django: the
parsers are unit-tested on strings, the walk on the lab's real files.
"""

from __future__ import annotations

import json
import os
import posixpath
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hosts.records import ChainLayer

# Longer than any real chain; a walk that gets this deep is a loop or a broken image.
MAX_DEPTH = 512
QEMU_IMG_TIMEOUT = 30.0
CACHE_ENTRIES = 200_000  # image facts are ~200 bytes: a fleet's worth stays under 50 MB


@dataclass(frozen=True)
class ImageFacts:
    """What one image file says about itself and its backing file."""

    path: str
    format: str = ""
    virtual_size: int | None = None
    actual_size: int | None = None
    backing_path: str = ""  # absolute, "" for a base image
    backing_format: str = ""


class Missing:
    """The source knows this path should be there and it is not."""


class Unknown:
    """The source cannot tell anything about this path (no pool holds it, remote host)."""

    def __init__(self, reason: str):
        self.reason = reason


Lookup = Callable[[str], "ImageFacts | Missing | Unknown"]


@dataclass(frozen=True)
class WalkedChain:
    layers: tuple[ChainLayer, ...]
    known: bool  # False: the layers end where nothing could tell what comes next
    note: str = ""  # why the chain is incomplete, or which layer is missing


def _absolute(backing: str, image_path: str) -> str:
    """qemu resolves a relative backing name against the directory of the image naming it."""
    if not backing or backing.startswith("/") or "://" in backing or ":" in backing.split("/", 1)[0]:
        return backing
    return posixpath.normpath(posixpath.join(posixpath.dirname(image_path), backing))


def _facts_from_qemu_img(entry: dict[str, Any], path: str) -> ImageFacts:  # one layer of qemu-img's JSON
    backing = entry.get("full-backing-filename") or entry.get("backing-filename") or ""
    return ImageFacts(
        path=path,
        format=entry.get("format", ""),
        virtual_size=entry.get("virtual-size"),
        actual_size=entry.get("actual-size"),
        backing_path=_absolute(backing, path),
        backing_format=entry.get("backing-filename-format", ""),
    )


def parse_qemu_img_info(text: str, path: str | None = None) -> list[ImageFacts]:
    """`qemu-img info --output=json` (one object) or with --backing-chain (a list, active
    first) → facts per layer. Relative file names are made absolute the way qemu does."""
    data = json.loads(text)
    entries = data if isinstance(data, list) else [data]
    facts: list[ImageFacts] = []
    for index, entry in enumerate(entries):
        if index == 0:
            name = path or entry.get("filename", "")
        else:
            # Later entries name the file as the layer above wrote it: use its resolved name.
            name = facts[-1].backing_path or entry.get("filename", "")
        facts.append(_facts_from_qemu_img(entry, name))
    return facts


def parse_volume_xml(text: str) -> ImageFacts:
    """A storage volume's XML (virStorageVolGetXMLDesc) → facts, backing file included."""
    root = ET.fromstring(text)
    path = root.findtext("./target/path", "")
    target_format = root.find("./target/format")
    backing_format = root.find("./backingStore/format")

    def size(tag: str) -> int | None:
        element = root.find(tag)
        text = (element.text or "").strip() if element is not None else ""
        if element is None or not text:
            return None
        unit = element.get("unit", "bytes")
        factor = {"bytes": 1, "b": 1, "KiB": 1024, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}.get(unit, 1)
        return int(text) * factor

    # allocation: bytes the file takes on the host's disk, what qemu-img calls actual-size.
    allocation = size("allocation")
    return ImageFacts(
        path=path,
        format=target_format.get("type", "") if target_format is not None else "",
        virtual_size=size("capacity"),
        actual_size=allocation if allocation is not None else size("physical"),
        backing_path=_absolute(root.findtext("./backingStore/path", "") or "", path),
        backing_format=backing_format.get("type", "") if backing_format is not None else "",
    )


def walk(path: str, fmt: str, disk_type: str, lookup: Lookup) -> WalkedChain:
    """Follow backing files from the active layer down, asking `lookup` about each one."""
    layers: list[ChainLayer] = []
    seen: set[str] = set()
    while path:
        depth = len(layers)
        if path in seen or depth >= MAX_DEPTH:
            return WalkedChain(tuple(layers), False, f"The backing chain loops or runs deeper than {MAX_DEPTH} at {path}.")
        seen.add(path)
        layer_type = disk_type if depth == 0 else "file"
        answer = lookup(path)
        if isinstance(answer, Missing):
            layers.append(ChainLayer(depth=depth, path=path, format=fmt, type=layer_type, missing=True))
            return WalkedChain(tuple(layers), True, f"missing: {path} (deleted or moved)")
        if isinstance(answer, Unknown):
            layers.append(ChainLayer(depth=depth, path=path, format=fmt, type=layer_type))
            return WalkedChain(tuple(layers), False, f"Chain unknown while stopped below {path}: {answer.reason}")
        layers.append(
            ChainLayer(
                depth=depth,
                path=path,
                format=answer.format or fmt,
                type=layer_type,
                capacity=answer.virtual_size,
                allocation=answer.actual_size,
            )
        )
        path, fmt = answer.backing_path, answer.backing_format
    return WalkedChain(tuple(layers), True)


class LocalImageReader:
    """`qemu-img info -U` on this machine's files, cached by (path, mtime, size).

    A chain's first read runs qemu-img once with --backing-chain and caches every layer it
    reports; later reads cost one stat() per layer and no process. A file that changed
    (rebased, rewritten, replaced) has a new mtime or size and is read again. -U (no lock)
    because the images may belong to a running guest of another domain.
    """

    def __init__(self, qemu_img: str = "qemu-img", max_entries: int = CACHE_ENTRIES):
        self.qemu_img = qemu_img
        self.max_entries = max_entries
        self.runs = 0  # qemu-img processes started, for tests and benchmarks
        self._cache: OrderedDict[tuple[str, int, int], ImageFacts] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(path: str) -> tuple[str, int, int] | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        return (path, st.st_mtime_ns, st.st_size)

    def _cached(self, key: tuple[str, int, int]) -> ImageFacts | None:
        with self._lock:
            facts = self._cache.get(key)
            if facts is not None:
                self._cache.move_to_end(key)
            return facts

    def _remember(self, facts: ImageFacts) -> None:
        key = self._key(facts.path)
        if key is None:
            return
        with self._lock:
            self._cache[key] = facts
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)

    def _run(self, path: str, chain: bool) -> list[ImageFacts] | str:
        """Facts from qemu-img, or its error text."""
        command = [self.qemu_img, "info", "-U", "--output=json", path]
        if chain:
            command.insert(2, "--backing-chain")
        with self._lock:
            self.runs += 1
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=QEMU_IMG_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"qemu-img could not read it ({error})"
        if done.returncode != 0:
            return done.stderr.strip().removeprefix("qemu-img: ") or f"qemu-img exited with {done.returncode}"
        try:
            return parse_qemu_img_info(done.stdout, path)
        except (ValueError, TypeError, AttributeError) as error:
            return f"qemu-img's answer could not be read ({error})"

    def fingerprint(self, paths: list[str]) -> str:
        """What the files of these chains are now, as far as the cache knows the chains:
        path, mtime and size of every layer, following cached backing files; "missing" where
        a file is gone. Costs one stat() per layer and never runs qemu-img."""
        parts = []
        for top in paths:
            path, depth = top, 0
            while path and depth < MAX_DEPTH:
                key = self._key(path)
                if key is None:
                    parts.append(f"missing:{path}")
                    break
                parts.append(f"{path}:{key[1]}:{key[2]}")
                cached = self._cached(key)
                if cached is None:
                    break  # not read yet (or changed): the walk will read it
                path, depth = cached.backing_path, depth + 1
        return "|".join(parts)

    def lookup_for_walk(self, volume: Callable[[str], ImageFacts | None] | None = None) -> Lookup:
        """A lookup for one walk: the cache, then `volume` (a storage pool's answer, when a
        pool holds the path), then qemu-img. qemu-img is asked for the whole chain in one
        process first; once that failed (a layer further down is missing or unreadable) it
        reads layer by layer."""
        whole_chain_failed = False

        def lookup(path: str) -> ImageFacts | Missing | Unknown:
            nonlocal whole_chain_failed
            key = self._key(path)
            if key is None:
                return Missing()  # a pool may still list it: its list is as old as its last refresh
            cached = self._cached(key)
            if cached is not None:
                return cached
            from_pool = volume(path) if volume is not None else None
            if from_pool is not None:
                self._remember(from_pool)
                return from_pool
            if not whole_chain_failed:
                answer = self._run(path, chain=True)
                if isinstance(answer, list):
                    for facts in answer:
                        self._remember(facts)
                    return answer[0]
                whole_chain_failed = True
            answer = self._run(path, chain=False)
            if isinstance(answer, str):
                return Unknown(f"{path} could not be read: {answer}")
            self._remember(answer[0])
            return answer[0]

        return lookup


# One per process: every sync thread and every host share what is already known.
local_images = LocalImageReader()
