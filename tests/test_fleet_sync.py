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
from collections.abc import Iterator

import pytest

from hosts.adapter import ConnectFailure, HostConnection, hung_opens
from hosts.models import Domain, Hypervisor
from hosts.sync.fleet import fleet_sync
from hosts.sync.hypervisor import SyncResult
from hosts.testnode import node_uri, write_node
from tests.helpers import wait_until

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


class DroppedPort:
    """A loopback port whose incoming packets an iptables rule drops: a connect to it waits
    in SYN-SENT for the kernel's retries (minutes). `abort()` ends those waits at once, as a
    host's firewall that starts rejecting would (ss -K destroys the half-open sockets)."""

    def __init__(self) -> None:
        self.iptables = shutil.which("iptables")
        if self.iptables is None or shutil.which("ss") is None or os.geteuid() != 0:
            pytest.fail("this test needs root, iptables and ss (make packages installs them)")
        self.port = free_port()
        self.rule = [
            *("INPUT", "-i", "lo", "-p", "tcp", "--dport", str(self.port)),
            *("-m", "comment", "--comment", f"blockmig-test-{os.getpid()}", "-j", "DROP"),
        ]
        subprocess.run([self.iptables, "-I", *self.rule], check=True)

    def abort(self) -> None:
        # ss exits non-zero ("Invalid argument") after destroying what matched: not an error.
        subprocess.run(["ss", "-K", "state", "syn-sent", "dport", "=", f":{self.port}"], capture_output=True)

    def close(self) -> None:
        self.abort()
        subprocess.run([self.iptables, "-D", *self.rule], check=True)


@pytest.fixture
def dropped() -> Iterator[DroppedPort]:
    port = DroppedPort()
    yield port
    port.close()


@pytest.mark.django_db(transaction=True)
def test_100_hosts_sync_in_a_bounded_pool_and_dead_hosts_hold_up_only_themselves(fleet_nodes, silent, dropped, settings):
    # No time-out ends the dead hosts' waits here: they hang until every good host is done
    # and the test hangs up on them. A pool that let them hold up the others never gets there.
    settings.BLOCKMIG_CONNECT_TIMEOUT = 600
    mute = Hypervisor.objects.create(name="silent", uri=f"qemu+tcp://127.0.0.1:{silent.port}/system")
    lost = Hypervisor.objects.create(name="dropped", uri=f"qemu+tcp://127.0.0.1:{dropped.port}/system")
    good = [Hypervisor.objects.create(name=f"host-{n:03d}", uri=node_uri(path)) for n, path in enumerate(fleet_nodes)]
    finished: list[str] = []
    pool_threads: set[str] = set()

    def on_result(hypervisor: Hypervisor, result: SyncResult) -> None:
        finished.append(hypervisor.name)
        pool_threads.update(t.name for t in threading.enumerate() if t.name.startswith("sync"))
        if len(finished) == HOSTS:
            silent.hang_up()
            dropped.abort()

    # The dead hosts go first: a sequential sync, or one pool slot for all, would wait on them.
    results = fleet_sync([mute, lost, *good], workers=8, on_result=on_result)

    assert len(results) == HOSTS + 2
    assert all(results[h.pk].ok for h in good), [results[h.pk].error for h in good if not results[h.pk].ok][:3]
    assert Domain.objects.count() == HOSTS * DOMAINS
    assert set(finished[:HOSTS]) == {h.name for h in good}
    assert set(finished[HOSTS:]) == {"silent", "dropped"}
    for dead in (mute, lost):
        assert not results[dead.pk].ok
        assert results[dead.pk].error.startswith(f"Cannot reach {dead.uri} (")
        dead.refresh_from_db()
        assert dead.health == "stale" and dead.last_sync_error == results[dead.pk].error
    assert 1 < len(pool_threads) <= 8


@pytest.mark.django_db(transaction=True)
def test_a_port_that_drops_packets_fails_at_its_own_deadline_and_keeps_its_data(fleet_nodes, dropped, settings):
    settings.BLOCKMIG_CONNECT_TIMEOUT = 1
    hypervisor = Hypervisor.objects.create(name="dropping", uri=node_uri(fleet_nodes[0]))
    assert fleet_sync([hypervisor])[hypervisor.pk].ok
    hypervisor.uri = f"qemu+tcp://127.0.0.1:{dropped.port}/system"
    hypervisor.save(update_fields=["uri"])

    result = fleet_sync([hypervisor])[hypervisor.pk]

    assert result.error.startswith(f"{hypervisor.uri} did not answer within 1 s.")
    assert Domain.objects.filter(hypervisor=hypervisor).count() == DOMAINS
    assert hypervisor.uri in hung_opens()  # until the fixture aborts the half-open socket


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
    wait_until(lambda: uri not in hung_opens(), "the hung attempt's end", timeout=10, every=0.05)

    with pytest.raises(ConnectFailure) as again:
        HostConnection(uri, timeout=0.3).__enter__()
    assert again.value.message.startswith(f"{uri} did not answer within 0.3 s.")
    assert [t.name for t in threading.enumerate()].count(f"libvirt-open {uri}") == 1
