"""Make the local libvirtd usable on a machine without systemd.

    python -m hosts.lab.services libvirtd

Idempotent: safe to run again, and when libvirtd is already running. Pure Python + subprocess
(no Django, no libvirt bindings) so the Makefile can call it before anything else exists.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

QEMU_CONF = Path("/etc/libvirt/qemu.conf")
RUNTIME_DIRS = (Path("/var/log/libvirt"), Path("/var/run/libvirt"))
SYSTEM_URI = "qemu:///system"

_BEGIN = "# BEGIN blockmig lab"
_END = "# END blockmig lab"
# The lab keeps images under arbitrary directories (/work/..., /tmp, /var/tmp) that an
# unprivileged libvirt-qemu user could not read, and relabelling them would fight with the
# people who own them. So QEMU runs as root, libvirt leaves file ownership alone, and no
# security driver confines it. Acceptable for a throwaway lab; not how a production host runs.
# Namespaces are off because a private /dev for QEMU fails inside containers.
LAB_QEMU_SETTINGS = {
    "user": '"root"',
    "group": '"root"',
    # swtpm's user defaults to libvirt-qemu too, and the driver refuses to start without it.
    "swtpm_user": '"root"',
    "swtpm_group": '"root"',
    "dynamic_ownership": "0",
    "remember_owner": "0",
    "security_driver": '"none"',
    "namespaces": "[]",
}


class ServiceError(RuntimeError):
    pass


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def kvm_usable() -> bool:
    """True when /dev/kvm exists and this process can actually open it read-write."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def qemu_conf_text(current: str) -> str:
    """`current` with the lab block (re)written and any conflicting settings commented out."""
    lines = []
    inside = False
    for line in current.splitlines():
        if line.strip() == _BEGIN:
            inside = True
            continue
        if line.strip() == _END:
            inside = False
            continue
        if inside:
            continue
        match = re.match(r"\s*([a-z_]+)\s*=", line)
        if match and match.group(1) in LAB_QEMU_SETTINGS:
            line = f"# (blockmig lab) {line}"
        lines.append(line)
    while lines and not lines[-1].strip():
        lines.pop()
    block = [_BEGIN, "# Written by `python -m hosts.lab.services libvirtd`: QEMU runs as root, unconfined,"]
    block.append("# so images anywhere on this lab machine are readable. Not for production hosts.")
    block += [f"{key} = {value}" for key, value in LAB_QEMU_SETTINGS.items()]
    block.append(_END)
    return "\n".join(lines + ([""] if lines else []) + block) + "\n"


def ensure_qemu_user() -> bool:
    """Create the `libvirt-qemu` user and the `libvirt-qemu`/`kvm` groups if missing.

    libvirt 9.0 looks its compiled-in default user and group up before it reads qemu.conf, so
    the QEMU driver refuses to start without them ("Failed to parse user 'libvirt-qemu'") even
    though qemu.conf then says root. Returns True when it created something.
    """
    created = False
    for group in ("kvm", "libvirt-qemu"):
        if subprocess.run(["getent", "group", group], capture_output=True).returncode != 0:
            subprocess.run(["groupadd", "--system", group], check=True)
            created = True
    if subprocess.run(["getent", "passwd", "libvirt-qemu"], capture_output=True).returncode != 0:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--gid",
                "libvirt-qemu",
                "--groups",
                "kvm",
                "--home-dir",
                "/var/lib/libvirt",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "libvirt-qemu",
            ],
            check=True,
        )
        created = True
    return created


def configure_qemu_driver(conf: Path = QEMU_CONF) -> bool:
    """Write the lab settings into qemu.conf. Returns True when the file changed."""
    current = conf.read_text() if conf.exists() else ""
    wanted = qemu_conf_text(current)
    if wanted == current:
        return False
    conf.parent.mkdir(parents=True, exist_ok=True)
    tmp = conf.with_name(conf.name + ".blockmig-tmp")
    tmp.write_text(wanted)
    os.replace(tmp, conf)
    return True


def _pid_alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    comm = Path(f"/proc/{pid}/comm")
    if comm.exists() and comm.read_text().strip() != pidfile.stem:
        return None  # a stale pidfile whose number was reused
    return pid


def daemon_pid(name: str) -> int | None:
    """The pid of a running libvirt daemon (`libvirtd`, `virtlogd`, `virtlockd`), or None."""
    pid = _pid_alive(Path(f"/var/run/{name}.pid"))
    if pid:
        return pid
    found = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True)
    pids = found.stdout.split()
    return int(pids[0]) if pids else None


def start_daemon(name: str) -> None:
    if daemon_pid(name):
        say(f"{name} already running")
        return
    binary = shutil.which(name) or f"/usr/sbin/{name}"
    if not Path(binary).exists():
        raise ServiceError(f"{name} not found; install libvirt-daemon (see Makefile `packages`).")
    subprocess.run([binary, "-d"], check=True)
    say(f"started {name}")


def stop_libvirtd(timeout: float = 15) -> None:
    pid = daemon_pid("libvirtd")
    if not pid:
        return
    os.kill(pid, 15)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise ServiceError(f"libvirtd (pid {pid}) did not stop within {timeout:.0f} s")


def virsh_answers(uri: str = SYSTEM_URI) -> tuple[bool, str]:
    try:
        done = subprocess.run(["virsh", "-c", uri, "version"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return False, "virsh version timed out"
    return done.returncode == 0, (done.stdout + done.stderr).strip()


def _log_tail(path: Path = Path("/var/log/libvirt/libvirtd.log"), lines: int = 40) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def wait_for_libvirtd(uri: str = SYSTEM_URI, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        ok, last = virsh_answers(uri)
        if ok:
            return last
        if uri == SYSTEM_URI and not daemon_pid("libvirtd"):
            last += "\nlibvirtd is not running any more (it exited during start-up)."
            break
        time.sleep(0.3)
    errors = [line for line in _log_tail() if ": error : " in line][-3:]
    log_errors = "".join(f"log: {line}\n" for line in errors)
    raise ServiceError(
        f"libvirtd did not answer `virsh -c {uri} version` within {timeout:.0f} s.\n"
        f"Last answer: {last or '(nothing)'}\n{log_errors}"
        "Look at /var/log/libvirt/libvirtd.log, or run `libvirtd -v` in a terminal to see why."
    )


def ensure_libvirtd(uri: str = SYSTEM_URI) -> str:
    """Create runtime dirs, configure the QEMU driver, start the daemons, wait for an answer."""
    for directory in RUNTIME_DIRS:
        directory.mkdir(parents=True, exist_ok=True)
    if ensure_qemu_user():
        say("created the libvirt-qemu user and its groups")
    if configure_qemu_driver():
        say(f"wrote lab settings to {QEMU_CONF} (QEMU runs as root, unconfined)")
        if daemon_pid("libvirtd"):
            # qemu.conf is read only at start-up.
            say("restarting libvirtd to pick up qemu.conf")
            stop_libvirtd()
    start_daemon("virtlogd")
    start_daemon("virtlockd")
    start_daemon("libvirtd")
    version = wait_for_libvirtd(uri)
    first = version.splitlines()[-1] if version else ""
    say(f"libvirtd answers on {uri} ({first.strip()})")
    say("/dev/kvm usable" if kvm_usable() else "/dev/kvm not usable: guests will run under TCG")
    return version


def main(argv: list[str]) -> int:
    if argv[1:] != ["libvirtd"]:
        print("usage: python -m hosts.lab.services libvirtd", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("hosts.lab.services libvirtd must run as root (it starts system daemons).", file=sys.stderr)
        return 1
    try:
        ensure_libvirtd()
    except (ServiceError, subprocess.CalledProcessError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
