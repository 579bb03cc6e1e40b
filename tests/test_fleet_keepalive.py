"""Keepalive notices a host that goes away while connected.

A real remote libvirt connection: a private libvirtd of this test's own (TCP on a free
loopback port, no authentication, only libvirt's built-in test driver, so it shares no
state with the lab's libvirtd) reached through a TCP proxy in this process. The proxy then
stops forwarding without closing anything, as a host does that loses power or network:
no FIN, no RST, just silence. Only keepalive can tell the client.

blockmig's URI allow-list has no test+tcp:// (hypervisors are QEMU hosts), so the test lets
this one URI through the adapter's check; everything after that is the real client library
talking to a real daemon.
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

from hosts.adapter import ConnectionLost, HostConnection, opening
from tests.helpers import wait_until

LIBVIRTD = shutil.which("libvirtd") or "/usr/sbin/libvirtd"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Proxy:
    """Forwards 127.0.0.1:port to a target; `blackhole()` makes it swallow everything."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.1)
        self.port = self.server.getsockname()[1]
        self.forwarding = threading.Event()
        self.forwarding.set()
        self.stop = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                client = self.server.accept()[0]
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [client, upstream]
            threading.Thread(target=self.pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self.pump, args=(upstream, client), daemon=True).start()

    def pump(self, source: socket.socket, sink: socket.socket) -> None:
        while not self.stop.is_set():
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                # In black-hole mode a close is swallowed too: the other side hears nothing.
                if self.forwarding.is_set():
                    sink.shutdown(socket.SHUT_WR)
                return
            if self.forwarding.is_set():
                sink.sendall(data)

    def blackhole(self) -> None:
        self.forwarding.clear()

    def close(self) -> None:
        """Close every socket: the client's pending calls then fail with end of file."""
        self.stop.set()
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed
            sock.close()
        self.server.close()


@pytest.fixture(scope="module")
def private_libvirtd(tmp_path_factory) -> Iterator[int]:
    if not os.path.exists(LIBVIRTD):
        pytest.fail("libvirtd is not installed (make packages)")
    home = tmp_path_factory.mktemp("keepalive-libvirtd")
    for sub in ("drivers", "sock"):
        (home / sub).mkdir()
    port = free_port()
    (home / "libvirtd.conf").write_text(
        'listen_tls = 0\nlisten_tcp = 1\nlisten_addr = "127.0.0.1"\n'
        f'tcp_port = "{port}"\nauth_tcp = "none"\nunix_sock_dir = "{home}/sock"\n'
        f'log_outputs = "3:file:{home}/libvirtd.log"\n'
    )
    # An empty driver directory: no QEMU (or any loadable) driver, so nothing of the lab's
    # libvirtd state is touched; the test driver is built into the daemon.
    env = {**os.environ, "LIBVIRT_DRIVER_DIR": str(home / "drivers")}
    daemon = subprocess.Popen(
        [LIBVIRTD, "--listen", "-f", str(home / "libvirtd.conf"), "-p", str(home / "libvirtd.pid")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            if daemon.poll() is not None:
                pytest.fail(f"test libvirtd exited: {daemon.stderr.read().decode(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"test libvirtd did not listen on {port} within 15 s")
                time.sleep(0.05)
        yield port
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


@pytest.fixture
def proxied_uri(private_libvirtd, monkeypatch) -> Iterator[tuple[str, Proxy]]:
    proxy = Proxy(private_libvirtd)
    uri = f"test+tcp://127.0.0.1:{proxy.port}/default"
    real_check = opening.uri_problem
    monkeypatch.setattr(opening, "uri_problem", lambda candidate: None if candidate == uri else real_check(candidate))
    yield uri, proxy
    proxy.close()


def test_keepalive_keeps_a_quiet_healthy_connection_and_drops_one_whose_host_went_silent(proxied_uri):
    uri, proxy = proxied_uri
    with HostConnection(uri, timeout=5, keepalive=(1, 2)) as host:
        assert host.facts().driver == "TEST"
        time.sleep(4)  # four probe intervals with no call of ours: the probes are answered
        assert host.alive()

        proxy.blackhole()
        wait_until(lambda: not host.alive(), "keepalive noticing the silent host", timeout=30, every=0.1)

        with pytest.raises(ConnectionLost) as lost:
            host.facts()
    assert lost.value.message.startswith(f"the connection to {uri} dropped")


def test_without_keepalive_the_silent_host_goes_unnoticed(proxied_uri):
    """The control: the same silence, no probes, and the connection still looks alive."""
    uri, proxy = proxied_uri
    with HostConnection(uri, timeout=5, keepalive=None) as host:
        assert host.facts().driver == "TEST"
        proxy.blackhole()
        time.sleep(5)  # longer than keepalive (1, 2) needed above
        assert host.alive()
        # Without this, closing the connection would wait forever for the host's answer.
        proxy.close()
