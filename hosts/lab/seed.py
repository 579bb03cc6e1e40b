"""The seed qcow2 chain the product grew from: base (/foo) <- snap1 (/bar) <- snap2 (/baz).

Built without guestfish: `mkfs.ext4 -d` fills a sparse raw file, `debugfs -w` adds one file per
layer, and each overlay starts empty on top of the raw file and is then safely rebased onto its
qcow2 parent. A safe rebase copies into the overlay only the clusters where the old backing
(the raw file) and the new one (the parent) differ, so each overlay holds just its own change.
(Converting the raw file to qcow2 first and rebasing that would keep every cluster: a safe
rebase never drops clusters the overlay already has.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

GiB = 1024**3
SEED_SIZE = GiB
SEED_FILES = {"foo": "foo\n", "bar": "bar\n", "baz": "baz\n"}


@dataclass(frozen=True)
class SeedChain:
    directory: Path
    base: Path  # holds /foo
    snap1: Path  # backing base, adds /bar
    snap2: Path  # backing snap1, adds /baz: the active layer a guest runs on
    backups: Path  # where migrations of the seed may put their destination

    @property
    def layers(self) -> list[Path]:
        """Active layer first, like `qemu-img info --backing-chain`."""
        return [self.snap2, self.snap1, self.base]


def _run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def qemu_img_info_chain(path: Path | str) -> list[dict]:
    """`qemu-img info -U --backing-chain --output=json`: one dict per layer, active layer first.

    -U (force share) because the image is usually open by a running guest.
    """
    out = _run("qemu-img", "info", "-U", "--backing-chain", "--output=json", path)
    parsed = json.loads(out)
    return parsed if isinstance(parsed, list) else [parsed]


def list_files_in_image(path: Path | str) -> list[str]:
    """Names at the root of the ext4 filesystem the image (and its backing chain) presents.

    Flattens the chain into a sparse raw temp file, then asks debugfs; excludes lost+found.
    """
    with tempfile.TemporaryDirectory(prefix="blockmig-ls-", dir="/var/tmp") as tmp:
        flat = Path(tmp) / "flat.raw"
        _run("qemu-img", "convert", "-U", "-O", "raw", path, flat)
        # `ls -p` prints /inode/mode/uid/gid/name/size/ per entry: easy to split.
        out = _run("debugfs", "-R", "ls -p /", flat)
    names = []
    for line in out.splitlines():
        fields = line.strip().split("/")
        if len(fields) >= 7 and fields[5] not in (".", "..", "lost+found", ""):
            names.append(fields[5])
    return sorted(names)


def make_backups_dir(directory: Path) -> Path:
    """The allowed destination root for migrations of the seed chain."""
    backups = Path(directory) / "backups"
    backups.mkdir(parents=True, exist_ok=True)
    return backups


def chain_is_valid(chain: SeedChain) -> bool:
    """True when snap2 <- snap1 <- base are there, qcow2, 1 GiB, with these absolute backings."""
    if not all(layer.exists() for layer in chain.layers):
        return False
    try:
        info = qemu_img_info_chain(chain.snap2)
    except (RuntimeError, ValueError):
        return False
    if [Path(layer["filename"]) for layer in info] != chain.layers:
        return False
    return all(layer.get("format") == "qcow2" and layer.get("virtual-size") == SEED_SIZE for layer in info)


def _overlay_of_raw(raw: Path, parent: Path, overlay: Path) -> None:
    """An overlay holding exactly the clusters where `raw` differs from `parent`."""
    _run("qemu-img", "create", "-q", "-f", "qcow2", "-b", raw, "-F", "raw", overlay)
    _run("qemu-img", "rebase", "-f", "qcow2", "-b", parent, "-F", "qcow2", overlay)


def _add_file(raw: Path, name: str, text: str, scratch: Path) -> None:
    source = scratch / name
    source.write_text(text)
    _run("debugfs", "-w", "-R", f"write {source} {name}", raw)


def build_seed_chain(directory: Path) -> SeedChain:
    """Build base/snap1/snap2 in `directory` unless a valid chain is already there.

    An existing valid chain is left untouched (a guest may be running on it). The layers are
    built in a scratch directory and moved into place only when all three are done.
    """
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    chain = SeedChain(
        directory=directory,
        base=directory / "base.qcow2",
        snap1=directory / "snap1.qcow2",
        snap2=directory / "snap2.qcow2",
        backups=make_backups_dir(directory),
    )
    if chain_is_valid(chain):
        return chain

    scratch = Path(tempfile.mkdtemp(prefix=".seed-build-", dir=directory))
    try:
        root = scratch / "root"
        root.mkdir()
        (root / "foo").write_text(SEED_FILES["foo"])
        raw = scratch / "fs.raw"
        with open(raw, "wb") as handle:
            handle.truncate(SEED_SIZE)
        _run("mkfs.ext4", "-q", "-F", "-L", "blockmig-seed", "-E", "root_owner=0:0", "-d", root, raw)

        # Backing paths are absolute and point at the final names, so the layers are
        # built in place order: base, then each overlay on its final parent.
        base_tmp = scratch / "base.qcow2"
        _run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, base_tmp)
        os.replace(base_tmp, chain.base)

        _add_file(raw, "bar", SEED_FILES["bar"], scratch)
        snap1_tmp = scratch / "snap1.qcow2"
        _overlay_of_raw(raw, chain.base, snap1_tmp)
        os.replace(snap1_tmp, chain.snap1)

        _add_file(raw, "baz", SEED_FILES["baz"], scratch)
        snap2_tmp = scratch / "snap2.qcow2"
        _overlay_of_raw(raw, chain.snap1, snap2_tmp)
        os.replace(snap2_tmp, chain.snap2)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    if not chain_is_valid(chain):
        raise RuntimeError(f"built the seed chain in {directory} but it does not check out")
    return chain
