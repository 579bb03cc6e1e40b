"""100 hypervisors synced in a bounded pool; dead hosts cost only their own time-out.

The hosts are libvirt test-driver node files (100 domains each). The dead ones are real
sockets on loopback: a listener that accepts and never answers, and a port whose packets
an iptables DROP rule swallows (so even the TCP handshake never completes).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from hosts.adapter import ConnectFailure, HostConnection, hung_opens
from hosts.models import Domain, Hypervisor
from hosts.sync import SyncResult, fleet_sync
from hosts.testnode import node_uri, write_node

HOSTS = 100
DOMAINS = 100


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def fleet_nodes(tmp_path_factory) -> list:
    directory = tmp_path_factory.mktemp("fleet")
    paths = []
    for number in range(HOSTS):
        path = directory / f"host-{number:03d}.xml"
        write_node(path, DOMAINS)
        paths.append(path)
    return paths


class SilentServer:
    """A TCP listener on loopback that accepts connections and never says a word."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.1)
        self.port = self.server.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn = self.server.accept()[0]
            except TimeoutError:
                continue
            with self.lock:
                self.accepted.append(conn)

    def hang_up(self) -> None:
        """Close what was accepted, as a host that restarts does: a hung open then fails."""
        with self.lock:
            for conn in self.accepted:
                conn.close()
            self.accepted.clear()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.hang_up()
        self.server.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture
def dropped_port() -> Iterator[int]:
    """A loopback port whose incoming packets are dropped (iptables, installed by make packages)."""
    iptables = shutil.which("iptables")
    if iptables is None or os.geteuid() != 0:
        pytest.fail("this test needs root and iptables (make packages installs it)")
    port = free_port()
    rule = [
        "INPUT",
        "-i",
        "lo",
        "-p",
        "tcp",
        "--dport",
        str(port),
        "-m",
        "comment",
        "--comment",
        f"blockmig-test-{os.getpid()}",
        "-j",
        "DROP",
    ]
    subprocess.run([iptables, "-I", *rule], check=True)
    try:
        yield port
    finally:
        subprocess.run([iptables, "-D", *rule], check=True)


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.05)


@pytest.mark.django_db(transaction=True)
def test_100_hosts_sync_in_a_bounded_pool_and_dead_hosts_hold_up_only_themselves(fleet_nodes, silent, dropped_port, settings):
    settings.BLOCKMIG_CONNECT_TIMEOUT = 20  # far longer than the 100 good hosts need on 6 threads
    mute = Hypervisor.objects.create(name="silent", uri=f"qemu+tcp://127.0.0.1:{silent.port}/system")
    dropped = Hypervisor.objects.create(name="dropped", uri=f"qemu+tcp://127.0.0.1:{dropped_port}/system")
    good = [Hypervisor.objects.create(name=f"host-{n:03d}", uri=node_uri(path)) for n, path in enumerate(fleet_nodes)]
    finished: list[tuple[str, SyncResult]] = []
    running_threads: set[str] = set()

    def on_result(hypervisor: Hypervisor, result: SyncResult) -> None:
        finished.append((hypervisor.name, result))
        running_threads.update(t.name for t in threading.enumerate() if t.name.startswith("sync"))

    # The dead hosts go first: a sequential sync, or one pool slot for all, would wait on them.
    results = fleet_sync([mute, dropped, *good], workers=8, on_result=on_result)

    assert len(results) == HOSTS + 2
    assert all(results[h.pk].ok for h in good), [results[h.pk].error for h in good if not results[h.pk].ok][:3]
    assert Domain.objects.count() == HOSTS * DOMAINS
    # Every good host was done before either dead host's time-out ran out.
    assert {name for name, _ in finished[-2:]} == {"silent", "dropped"}
    for dead in (mute, dropped):
        assert not results[dead.pk].ok
        assert results[dead.pk].error.startswith(f"{dead.uri} did not answer within 20 s.")
        dead.refresh_from_db()
        assert dead.health == "stale" and dead.last_sync_error == results[dead.pk].error
    assert len(running_threads) <= 8


def test_a_host_that_never_answers_keeps_one_hung_attempt_not_one_per_try(silent):
    uri = f"qemu+tcp://127.0.0.1:{silent.port}/system"

    with pytest.raises(ConnectFailure) as first:
        HostConnection(uri, timeout=0.5).__enter__()
    later = []
    for _ in range(5):
        with pytest.raises(ConnectFailure) as caught:
            HostConnection(uri, timeout=0.5).__enter__()
        later.append(caught.value)

    assert first.value.kind == "timeout" and "did not answer within 0.5 s" in first.value.message
    assert all(f.kind == "timeout" for f in later)
    assert all(f.message.startswith(f"{uri} has not answered an earlier connection attempt") for f in later)
    assert [t.name for t in threading.enumerate()].count(f"libvirt-open {uri}") == 1
    assert uri in hung_opens()


def test_a_hung_attempt_that_finally_ends_frees_its_host_for_new_attempts(silent):
    uri = f"qemu+tcp://127.0.0.1:{silent.port}/system"
    with pytest.raises(ConnectFailure):
        HostConnection(uri, timeout=0.3).__enter__()
    assert uri in hung_opens()

    silent.hang_up()
    wait_until(lambda: uri not in hung_opens(), 10, "the hung attempt's end")

    with pytest.raises(ConnectFailure) as again:
        HostConnection(uri, timeout=0.3).__enter__()
    assert again.value.message.startswith(f"{uri} did not answer within 0.3 s.")
    assert [t.name for t in threading.enumerate()].count(f"libvirt-open {uri}") == 1
