"""A throwaway site's own processes (daphne, workers) each in a process group of its own,
started with the site's environment and stopped with whatever it left behind; waits until
one logs a line or answers over HTTP; the shared Redis started if it is not up."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from urllib.request import urlopen

from harness.machine import ROOT

START_TIMEOUT = 60.0


def ensure_redis() -> None:
    import redis
    from django.conf import settings

    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2).ping()
    except redis.ConnectionError:
        subprocess.run(["make", "-s", "redis"], cwd=ROOT, check=True)


class Process:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path):
        self.name, self.log_path = name, log
        with open(log, "w") as out:
            self.popen = subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log())
            if match:
                return match
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not log {pattern!r} (exit {self.popen.poll()}):\n{self.log()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)  # whatever it left in its own group
        except ProcessLookupError:
            pass
        self.popen.wait(10)


def wait_for_http(process: Process, url: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            if process.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{process.name} does not answer {url}:\n{process.log()[-3000:]}") from None
        time.sleep(0.05)
