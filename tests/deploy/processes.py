"""The processes of a deployment under test: each long-running one (worker, daphne) in its own
process group with its output in a log file, and the call server that runs the tests'
functions on the deployment's database as the web and the workers would."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0


@dataclass
class Process:
    """One long-running process in its own process group, its output in a log file."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen | None = None

    def start(self) -> Process:
        with open(self.log_path, "a") as log:
            self.popen = subprocess.Popen(
                self.args,
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log())
            if match:
                return match
            if not self.alive():
                break
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not log {pattern!r} (exit code {self.popen.poll()}):\n{self.log()[-3000:]}")

    def kill9(self) -> None:
        """kill -9 of the whole group: what a crashed machine does to a worker."""
        self.signal_group(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen is None:
            return
        if self.alive():
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Also whatever the process left behind in its group.
        self.signal_group(signal.SIGKILL)
        self.popen.wait(10)

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass


SERVE_CALLS = r"""
import importlib, json, sys, traceback
import django
django.setup()
from django.db import close_old_connections
for line in sys.stdin:
    request = json.loads(line)
    module, _, name = request["function"].partition(":")
    try:
        reply = {"result": getattr(importlib.import_module(module), name)(**request["kwargs"])}
    except BaseException:
        reply = {"error": traceback.format_exc()}
    close_old_connections()
    sys.__stdout__.write("\x1eREPLY " + json.dumps(reply, default=str) + "\n")
    sys.__stdout__.flush()
"""


class RemoteError(AssertionError):
    """A function called on the deployment raised; the message is its traceback."""


class CallServer:
    """A Django process on the deployment's database that runs module-level functions for
    the tests (as the web and the workers would run them: same settings, same Redis)."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.log = open(log_path, "a")
        self.popen = subprocess.Popen(
            [sys.executable, "-c", SERVE_CALLS],
            cwd=REPO,
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            start_new_session=True,
        )

    def call(self, function: Callable, **kwargs):
        request = {"function": f"{function.__module__}:{function.__qualname__}", "kwargs": kwargs}
        self.popen.stdin.write(json.dumps(request) + "\n")
        self.popen.stdin.flush()
        for line in self.popen.stdout:
            if line.startswith("\x1eREPLY "):
                reply = json.loads(line.removeprefix("\x1eREPLY "))
                if "error" in reply:
                    raise RemoteError(f"{request['function']} failed on the deployment:\n{reply['error']}")
                return reply["result"]
        raise RemoteError(f"the call server exited ({self.popen.poll()}); see {self.log.name}")

    def stop(self) -> None:
        self.popen.stdin.close()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)
        self.log.close()
