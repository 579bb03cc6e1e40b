"""`make run` supervision: deploy/supervise starts a worker or the sync loop again when it
exits, and stops it (once, so a worker can drain) when it is stopped itself.

The commands here are small shell stubs that log their starts and signals to a file; the
last test runs the Makefile's real `run` recipe with stub `python` and `daphne` and presses
Ctrl-C on it. Each test takes about a second.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import wait_until

REPO = Path(__file__).resolve().parents[1]
SUPERVISE = REPO / "deploy" / "supervise"
DELAY = "0.2"  # SUPERVISE_DELAY: seconds between an exit and the restart
WAIT, POLL = 5.0, 0.05  # how long wait_until waits for a stub, how often it looks


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def pid_gone(pid: int) -> bool:
    """Gone or a zombie (an orphan's zombie may wait for a PID 1 that does not reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def stub(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def supervise(name: str, *command: str | Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(SUPERVISE), name, *map(str, command)],
        env={**os.environ, "SUPERVISE_DELAY": DELAY},
        stdout=subprocess.DEVNULL,
        stderr=open(log, "w"),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


@pytest.fixture
def stopped_at_end():
    """Supervisors started by a test; killed (with their children's groups) if still running."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(5)


def test_a_command_that_exits_is_started_again_and_the_exit_is_reported(tmp_path, stopped_at_end):
    starts = tmp_path / "starts"
    command = stub(tmp_path / "crashes", f'echo "$$" >> {starts}\nexit 3\n')
    log = tmp_path / "supervise.log"
    supervisor = supervise("worker-1", command, log=log)
    stopped_at_end.append(supervisor)

    wait_until(lambda: len(lines(starts)) >= 3, "three starts", timeout=WAIT, every=POLL)
    supervisor.terminate()
    assert supervisor.wait(5) == 0
    first = lines(starts)[0]
    assert f"supervise: worker-1 (pid {first}) exited with code 3; starting it again in {DELAY} s" in log.read_text()
    count = len(lines(starts))
    time.sleep(3 * float(DELAY))
    assert len(lines(starts)) == count, "started again after the supervisor was stopped"


def test_a_command_killed_by_a_signal_is_named_and_started_again(tmp_path, stopped_at_end):
    starts = tmp_path / "starts"
    command = stub(tmp_path / "killed", f'echo "$$" >> {starts}\nkill -9 $$\n')
    log = tmp_path / "supervise.log"
    stopped_at_end.append(supervisor := supervise("sync-loop", command, log=log))

    wait_until(lambda: len(lines(starts)) >= 2, "a restart", timeout=WAIT, every=POLL)
    supervisor.terminate()
    supervisor.wait(5)
    assert f"supervise: sync-loop (pid {lines(starts)[0]}) was killed by SIGKILL" in log.read_text()


def test_stopping_the_supervisor_stops_the_command_once_and_waits_for_its_drain(tmp_path, stopped_at_end):
    """Like a worker: SIGTERM starts a drain that takes a while; a second SIGTERM would cut it short."""
    events = tmp_path / "events"
    command = stub(
        tmp_path / "worker",
        f"""
echo "start $$" >> {events}
trap 'echo "TERM $$" >> {events}; sleep 0.5; echo "drained $$" >> {events}; exit 0' TERM
while :; do sleep 0.05; done
""",
    )
    stopped_at_end.append(supervisor := supervise("worker-1", command, log=tmp_path / "supervise.log"))
    child = int(wait_until(lambda: lines(events), "the start", timeout=WAIT, every=POLL)[0].split()[1])

    # As `make run`'s `kill 0` does: SIGTERM to the supervisor's whole process group.
    os.killpg(supervisor.pid, signal.SIGTERM)
    assert supervisor.wait(5) == 0
    assert lines(events) == [f"start {child}", f"TERM {child}", f"drained {child}"]  # one TERM, drained, no restart
    assert pid_gone(child)


def test_make_run_restarts_workers_and_ctrl_c_stops_everything(tmp_path):
    """The Makefile's real `run` recipe (its prerequisites skipped with -o demo), with stub
    python and daphne in a fake venv: workers that exit are started again, and Ctrl-C (SIGINT
    to the terminal's process group) stops daphne, the supervisors, workers and sync loop."""
    events = tmp_path / "events"
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    # `python manage.py run_worker` exits after a moment; `python manage.py sync_loop` stays up.
    stub(
        venv / "bin" / "python",
        f"""
echo "$2 $$" >> {events}
if [ "$2" = run_worker ]; then sleep 0.3; exit 3; fi
exec sleep 60
""",
    )
    stub(venv / "bin" / "daphne", f'echo "daphne $$" >> {events}\nexec sleep 60\n')
    make = subprocess.Popen(
        ["make", "-s", "-o", "demo", "run", f"VENV={venv}", "WORKERS=2", "PORT=1"],
        cwd=REPO,
        env={**os.environ, "SUPERVISE_DELAY": DELAY},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:

        def started(kind: str) -> list[int]:
            return [int(line.split()[1]) for line in lines(events) if line.split()[0] == kind]

        wait_until(
            lambda: len(started("run_worker")) >= 4 and started("sync_loop") and started("daphne"),
            "two workers started twice each, the sync loop and daphne",
            timeout=WAIT,
            every=POLL,
        )
        os.killpg(make.pid, signal.SIGINT)  # Ctrl-C
        output = make.communicate(timeout=10)[0]
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait(5)

    assert re.search(r"supervise: worker-1 \(pid \d+\) exited with code 3; starting it again", output), output
    assert re.search(r"supervise: worker-2 \(pid \d+\) exited with code 3; starting it again", output), output
    everything = started("run_worker") + started("sync_loop") + started("daphne")
    wait_until(lambda: all(pid_gone(pid) for pid in everything), "every process to stop after Ctrl-C", timeout=WAIT, every=POLL)
