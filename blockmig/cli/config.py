"""Where the signed-in console's address and token live: $XDG_CONFIG_HOME/blockmig/config.json
(mode 0600), with BLOCKMIG_URL and BLOCKMIG_TOKEN over it."""

from __future__ import annotations

import json
import os
from pathlib import Path


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "blockmig" / "config.json"


def load_config() -> dict[str, str]:
    try:
        config = json.loads(config_path().read_text())
    except (OSError, ValueError):
        config = {}
    if os.environ.get("BLOCKMIG_URL"):
        config["url"] = os.environ["BLOCKMIG_URL"]
    if os.environ.get("BLOCKMIG_TOKEN"):
        config["token"] = os.environ["BLOCKMIG_TOKEN"]
    return config


def save_config(config: dict[str, str]) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Created 0600 from the start: the token is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent=2)
    os.chmod(path, 0o600)
    return path
