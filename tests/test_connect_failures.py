"""Each way a connection can fail gives a message that says what to fix, and saves nothing.

The failures are real, all on loopback: a closed port, a server that accepts and never
answers, and a second libvirtd of our own that demands SASL credentials we do not have.
"""

import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from hosts.adapter import ConnectFailure, HostConnection
from hosts.models import Disk, Domain, Hypervisor
from hosts.sync.hypervisor import hypervisor_sync
from hosts.testnode import node_uri, write_node

LIBVIRTD = shutil.which("libvirtd") or "/usr/sbin/libvirtd"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def connect_failure(uri: str, timeout: float = 5.0) -> ConnectFailure:
    with pytest.raises(ConnectFailure) as caught:
        with HostConnection(uri, timeout=timeout):
            pass
    return caught.value


@pytest.fixture
def synced_host(tmp_path, db) -> Hypervisor:
    """A host with last-known data from a good sync, about to be pointed somewhere bad."""
    node = tmp_path / "node.xml"
    write_node(node, 8)
    hypervisor = Hypervisor.objects.create(name="known", uri=node_uri(node))
    assert hypervisor_sync(hypervisor).ok
    hypervisor.refresh_from_db()
    return hypervisor


def sync_fails_and_keeps_last_known_data(hypervisor: Hypervisor, uri: str) -> str:
    good_sync_at = hypervisor.last_sync_ok_at
    disks_before = list(Disk.objects.order_by("id").values_list("id", "source"))
    hypervisor.uri = uri
    hypervisor.save(update_fields=["uri"])

    result = hypervisor_sync(hypervisor)

    assert not result.ok
    hypervisor.refresh_from_db()
    assert hypervisor.last_sync_error == result.error
    assert hypervisor.last_sync_ok_at == good_sync_at
    assert hypervisor.health == "stale"
    assert hypervisor.driver == "TEST"
    assert Domain.objects.filter(hypervisor=hypervisor).count() == 8
    assert list(Disk.objects.order_by("id").values_list("id", "source")) == disks_before
    return result.error


@pytest.mark.parametrize(
    ("uri", "advice"),
    [
        ("foo://x", "Unsupported scheme “foo”: use one of qemu://"),
        ("qemu:///nonsense", "A QEMU URI ends in /system"),
        ("notauri", "“notauri” is not a libvirt URI: it needs a scheme"),
    ],
)
def test_bad_uri_is_refused_before_connecting_and_says_how_a_uri_looks(uri, advice, synced_host):
    failure = connect_failure(uri)

    assert failure.kind == "bad_uri"
    assert advice in failure.message
    assert sync_fails_and_keeps_last_known_data(synced_host, uri) == failure.message


def test_unreachable_host_names_the_uri_and_what_to_check(synced_host):
    uri = f"qemu+tcp://127.0.0.1:{free_port()}/system"

    failure = connect_failure(uri)

    assert failure.kind == "unreachable"
    assert failure.message.startswith(f"Cannot reach {uri} (")
    assert "Connection refused" in failure.message
    assert "libvirtd runs there and listens" in failure.message
    assert sync_fails_and_keeps_last_known_data(synced_host, uri).startswith(f"Cannot reach {uri}")


@pytest.fixture
def silent_server():
    """A TCP server on loopback that accepts connections and never says a word."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    # Closing lets the abandoned libvirt.open in the adapter's thread fail and finish.
    for conn in accepted:
        conn.close()
    server.close()


def test_timeout_when_the_host_accepts_but_never_answers(silent_server, synced_host, settings):
    uri = f"qemu+tcp://127.0.0.1:{silent_server}/system"

    # The server never answers: only the adapter's own timer can end this call, and says so.
    failure = connect_failure(uri, timeout=0.5)

    assert failure.kind == "timeout"
    assert failure.message.startswith(f"{uri} did not answer within 0.5 s.")
    assert "firewall" in failure.message
    settings.BLOCKMIG_CONNECT_TIMEOUT = 0.5
    # The first attempt still hangs inside libvirt: the sync does not open a second one.
    assert sync_fails_and_keeps_last_known_data(synced_host, uri).startswith(
        f"{uri} has not answered an earlier connection attempt"
    )


@pytest.fixture(scope="module")
def sasl_libvirtd(tmp_path_factory):
    """A second, real libvirtd on a free loopback port that only lets SASL users in.

    Its SASL config (found through SASL_CONF_PATH) offers DIGEST-MD5 against an empty user
    database, so no client can log in. LIBVIRT_DRIVER_DIR points at an empty directory so
    this daemon loads no hypervisor drivers and cannot collide with the real libvirtd's
    QEMU state; authentication happens before any driver is involved.
    """
    if not os.path.exists(LIBVIRTD):
        pytest.fail("libvirtd is not installed (make packages)")
    home = tmp_path_factory.mktemp("sasl-libvirtd")
    for sub in ("drivers", "sock", "sasl"):
        (home / sub).mkdir()
    (home / "sasl" / "libvirt.conf").write_text(f"mech_list: digest-md5\nsasldb_path: {home}/sasl/passwd.db\n")
    port = free_port()
    (home / "libvirtd.conf").write_text(
        'listen_tls = 0\nlisten_tcp = 1\nlisten_addr = "127.0.0.1"\n'
        f'tcp_port = "{port}"\nauth_tcp = "sasl"\nunix_sock_dir = "{home}/sock"\n'
        f'log_outputs = "3:file:{home}/libvirtd.log"\n'
    )
    env = {**os.environ, "SASL_CONF_PATH": str(home / "sasl"), "LIBVIRT_DRIVER_DIR": str(home / "drivers")}
    daemon = subprocess.Popen(
        [LIBVIRTD, "--listen", "-f", str(home / "libvirtd.conf"), "-p", str(home / "libvirtd.pid")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_port(port, daemon)
        yield port
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


def _wait_for_port(port: int, daemon: subprocess.Popen) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            pytest.fail(f"test libvirtd exited: {daemon.stderr.read().decode(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"test libvirtd did not listen on {port} within 15 s")


def test_auth_refused_by_a_real_libvirtd_says_which_credentials_to_check(sasl_libvirtd, synced_host):
    uri = f"qemu+tcp://127.0.0.1:{sasl_libvirtd}/system"

    failure = connect_failure(uri)

    assert failure.kind == "auth"
    assert failure.message.startswith(f"{uri} refused to let blockmig log in (authentication failed")
    assert "SASL credentials" in failure.message
    assert "refused to let blockmig log in" in sync_fails_and_keeps_last_known_data(synced_host, uri)


def test_nothing_is_left_connected_after_a_failure(synced_host):
    """A failed connect must not leave a half-open HostConnection behind."""
    host = HostConnection(f"qemu+tcp://127.0.0.1:{free_port()}/system", timeout=2)
    with pytest.raises(ConnectFailure):
        host.__enter__()
    assert host.conn is None
