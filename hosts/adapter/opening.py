"""Opening a libvirt connection without hanging: the URI checked first, the whole handshake
bounded by a timeout (libvirt.open has none), opens that outlive it counted and bounded,
keepalive probes on the connection, and libvirt's event loop that answers them."""

from __future__ import annotations

import threading
import time

import libvirt

from hosts.adapter.errors import ConnectFailure, classify_open_error
from hosts.uris import uri_problem

# Seconds between keepalive probes and how many may go unanswered before libvirt closes
# the connection: a host that vanishes while connected (cable, power, a firewall that
# starts dropping) is noticed after about interval x (count + 1) s instead of hanging calls.
KEEPALIVE = (5, 3)

# Opens that outlived their deadline and still hang inside libvirt (a host that accepted TCP
# and then said nothing). libvirt.open cannot be cancelled, so their threads are bounded
# instead: at most one per URI and MAX_HUNG_OPENS in all; past that, refuse at once.
MAX_HUNG_OPENS = 32
_hung_lock = threading.Lock()
_hung_opens: dict[str, float] = {}  # uri -> time.monotonic() when the hung attempt started


def hung_opens() -> dict[str, float]:
    """URIs whose abandoned connection attempt still hangs, with its age in seconds."""
    now = time.monotonic()
    with _hung_lock:
        return {uri: now - started for uri, started in _hung_opens.items()}


def _refuse_while_hung(uri: str) -> None:
    with _hung_lock:
        started = _hung_opens.get(uri)
        count = len(_hung_opens)
    if started is not None:
        raise ConnectFailure(
            "timeout",
            f"{uri} has not answered an earlier connection attempt, started {time.monotonic() - started:.0f} s ago; "
            "blockmig waits for that one instead of opening another. Check that the host is up and that "
            "no firewall silently drops the connection.",
        )
    if count >= MAX_HUNG_OPENS:
        raise ConnectFailure(
            "timeout",
            f"{count} connection attempts to other hosts still hang, so blockmig opens no more until they end: "
            "check the hosts whose syncs time out.",
        )


def open_connection(uri: str, timeout: float, keepalive: tuple[int, int] | None = KEEPALIVE) -> libvirt.virConnect:
    """Open `uri` within `timeout` seconds, the whole handshake included (TCP, TLS or SSH,
    authentication, the remote driver's open), with keepalive probes on the connection."""
    problem = uri_problem(uri)
    if problem:
        raise ConnectFailure("bad_uri", problem)
    _refuse_while_hung(uri)
    if keepalive:
        ensure_event_loop()  # keepalive probes are sent and answered from libvirt's event loop
    if uri.startswith("test:"):
        # The test driver runs inside this process (it reads a file): it cannot hang on a
        # network, so it needs no watchdog thread.
        try:
            return libvirt.open(uri)
        except libvirt.libvirtError as error:
            raise classify_open_error(uri, error) from error
    outcome: dict = {}
    lock = threading.Lock()
    started = time.monotonic()

    def attempt() -> None:
        conn = error = None
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError as failed:
            error = failed
        with lock:
            if outcome.get("abandoned"):
                if conn is not None:
                    conn.close()  # the caller gave up waiting; do not leak the late connection
                with _hung_lock:
                    _hung_opens.pop(uri, None)
            elif conn is not None:
                outcome["conn"] = conn
            else:
                outcome["error"] = error

    # libvirt.open has no timeout of its own; a host that accepts TCP and then says
    # nothing would hang the caller (a web request or the sync loop) forever.
    thread = threading.Thread(target=attempt, daemon=True, name=f"libvirt-open {uri}")
    thread.start()
    thread.join(timeout)
    with lock:
        if "conn" not in outcome and "error" not in outcome:
            outcome["abandoned"] = True
            with _hung_lock:
                _hung_opens[uri] = started
            raise ConnectFailure(
                "timeout",
                f"{uri} did not answer within {timeout:g} s. Check that the host is up, that no firewall "
                "silently drops the connection, and that the port belongs to a libvirtd that is not hung.",
            )
    if "error" in outcome:
        raise classify_open_error(uri, outcome["error"])
    conn = outcome["conn"]
    if keepalive and not uri.startswith("test:"):  # the test driver runs in this process: nothing to probe
        try:
            conn.setKeepAlive(*keepalive)
        except libvirt.libvirtError:
            pass  # a local driver without an RPC connection has nothing to keep alive
    return conn


_event_loop_lock = threading.Lock()
_event_loop_started = False


def ensure_event_loop() -> None:
    """Register libvirt's default event implementation and run it in a daemon thread.

    Must happen before the connection that wants events is opened; idempotent per process.
    """
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, daemon=True, name="libvirt-events").start()
        _event_loop_started = True
