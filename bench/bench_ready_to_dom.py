"""libvirt's READY event → the DOM of a real browser showing "Ready — awaiting approval".

    .venv/bin/python bench/bench_ready_to_dom.py [--runs 10] [--baseline-per-run 3]

A real site on a throwaway SQLite database (BLOCKMIG_VAR_DIR temp dir, own channel prefix
in the shared Redis): one daphne and one `manage.py run_worker` subprocess, production
lease/heartbeat settings. One small lab domain (`bmtest-<pid>-bench-r2d-…`, a BIOS-only
guest on a copy of the seed chain base ← snap1 ← snap2 with a few MiB more written into
snap2, tests/lab/engine_helpers.DomainFactory). `approver` is logged in in Debian's
Chromium (Playwright, no browser download).

Per run: `migration_request` (shallow, 5 MiB at 2 MiB/s so the copy lasts ~2–3 s: long
enough for the page to be open with its socket connected before READY, and for the driver
to be monitoring by then rather than still in its post-blockCopy inventory refresh, which
usually takes ~0.1 s but was seen taking ~1.8 s; the limit does not touch the READY → DOM
path, which starts at the event), the approver opens
/migrations/<id>/, and an init script in the page records, on the page's clock
(`performance.timeOrigin + performance.now()`, wall clock of this machine):
  - ws_open: the page's socket opened (htmx:wsOpen);
  - frame: the first websocket message carrying the ready wording (htmx:wsBeforeMessage);
  - dom: a MutationObserver sees `#migration-<id>-status` first contain the wording;
  - paint: the next animation frame after that.
t0 is libvirt's READY event as printed by `virsh event --event block-job-2 --loop
--timestamp` (its own client, wall clock), and the engine's own callback time (the `ready`
audit event's details["ready_events"]) and `Migration.ready_at` (taken just before the committing
transaction; publish runs on commit) break the path down. Then the migration is aborted through the app and the
next run starts on the same domain. A run counts only if the socket was open before READY.

Baseline (same run, same daphne, same browser, same user): the bare push transport with no
libvirt and no engine. A second migration row (a fake domain, its lease held by the bench so
no worker touches it) is open in a second window (browser context) of the same user; the bench flips it COPYING → READY with a
direct UPDATE and calls `publish.migration_changed` (what the engine's on_commit does),
t = just before the call → the same DOM condition. `--baseline-per-run` samples after each
real run. The ratio p50/p95(READY → DOM) / p50/p95(publish → DOM) is what the engine adds.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

URI = "qemu:///system"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
READY_WORDING = "Ready — awaiting approval"
PASSWORD = "pw-bench-ready-to-dom"
START_TIMEOUT = 60.0

# Runs in every page before its own scripts. Keyed on the migration id in the URL.
INIT_SCRIPT = r"""
(() => {
  const m = location.pathname.match(/^\/migrations\/(\d+)\/$/);
  if (!m) { return; }
  const id = m[1];
  const WORDING = %(wording)s;
  const now = () => performance.timeOrigin + performance.now();
  const b = window.__bench = {id: id, wsOpen: null, frame: null, dom: null, domDateNow: null, paint: null,
                              initialReady: null, initialText: null};
  const statusReady = () => {
    const el = document.getElementById('migration-' + id + '-status');
    return !!el && el.textContent.includes(WORDING);
  };
  // Re-arm for the next sample on the same page (the baseline tab).
  b.arm = () => { b.frame = null; b.dom = null; b.domDateNow = null; b.paint = null; };
  const observer = new MutationObserver(() => {
    if (b.dom !== null || document.readyState === 'loading') { return; }
    if (statusReady()) {
      b.dom = now();
      b.domDateNow = Date.now();
      requestAnimationFrame(() => { b.paint = now(); });
    }
  });
  observer.observe(document, {childList: true, subtree: true, characterData: true});
  document.addEventListener('DOMContentLoaded', () => {
    b.initialReady = statusReady();
    const el = document.getElementById('migration-' + id + '-status');
    b.initialText = el ? el.textContent.replace(/\s+/g, ' ').trim().slice(0, 80) : null;
  });
  document.addEventListener('htmx:wsOpen', () => { if (b.wsOpen === null) { b.wsOpen = now(); } });
  document.addEventListener('htmx:wsBeforeMessage', (e) => {
    if (b.frame === null && typeof e.detail.message === 'string' && e.detail.message.includes(WORDING)) {
      b.frame = now();
    }
  });
})();
"""


# -- site -------------------------------------------------------------------------------------


def setup_environment() -> tuple[Path, dict[str, str]]:
    var = Path(tempfile.mkdtemp(prefix="blockmig-bench-r2d-"))
    os.environ["BLOCKMIG_VAR_DIR"] = str(var)
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))  # a throwaway site's own key
    os.environ["BLOCKMIG_CHANNEL_PREFIX"] = f"benchr2d{os.getpid()}-{uuid.uuid4().hex[:6]}"
    os.environ.setdefault("BLOCKMIG_LOG_LEVEL", "WARNING")  # BLOCKMIG_LOG_LEVEL=DEBUG to diagnose
    os.environ["DJANGO_DEBUG"] = "0"
    os.environ["DATABASE_URL"] = f"sqlite:///{var / 'db.sqlite3'}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "blockmig.settings"
    os.environ["PYTHONUNBUFFERED"] = "1"
    # The subprocesses get the environment as it is now: the site as `make run` runs it.
    site_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    # Playwright's sync API keeps an event loop on this thread; the ORM here must not refuse.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return var, site_env


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


class EventListener:
    """`virsh event --timestamp` on the domain: libvirt's READY as its own client hears it."""

    LINE = re.compile(r"^(\S+ \S+?): event 'block-job-2' .*?: (.+) for (\S+) (\w+)\s*$")

    def __init__(self, name: str, log: Path):
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [
                    "stdbuf",
                    "-oL",
                    "virsh",
                    "-c",
                    URI,
                    "event",
                    "--domain",
                    name,
                    "--event",
                    "block-job-2",
                    "--loop",
                    "--timestamp",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def ready_times(self) -> list[float]:
        times = []
        for line in self.log.read_text(errors="replace").splitlines():
            match = self.LINE.match(line.strip())
            if match and match.group(4) == "ready":
                times.append(datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f%z").timestamp())
        return times

    def ready_after(self, since: float, timeout: float = 5.0) -> float | None:
        deadline = time.monotonic() + timeout
        while True:
            found = [t for t in self.ready_times() if t >= since]
            if found or time.monotonic() > deadline:
                return min(found) if found else None
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def job_gone(name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = subprocess.run(["virsh", "-c", URI, "blockjob", name, "vda", "--info"], capture_output=True, text=True)
        if "No current block job" in done.stdout + done.stderr:
            return
        time.sleep(0.05)
    raise RuntimeError(f"the block job on {name}/vda did not end")


def wait_state(migration_id: int, states: set[str], timeout: float = 60.0) -> str:
    from blockmig.models import Migration

    deadline = time.monotonic() + timeout
    while True:
        state = Migration.objects.values_list("state", flat=True).get(pk=migration_id)
        if state in states or time.monotonic() > deadline:
            return state
        time.sleep(0.02)


# -- measurements -------------------------------------------------------------------------------

# Every wait_for_function predicate is an arrow function, never a bare expression: Playwright
# evaluates it once (when the wait starts, as the browser's own client) and then calls it, while
# an expression is eval'd again at every poll, which the page's CSP (script-src 'self', no
# 'unsafe-eval') refuses with an EvalError.


def real_run(ctx, page, index: int) -> dict:
    from blockmig.lifecycle import DiskRequest, migration_abort, migration_request
    from blockmig.models import AuditEvent, Migration

    dest = ctx.vm.backups / f"copy-{index}.qcow2"
    requested = time.time()
    migration = migration_request(
        user=ctx.operator,
        hypervisor=ctx.host,
        domain_uuid=ctx.vm.uuid,
        disks=[DiskRequest("vda", str(dest))],
        mode="shallow",
        bandwidth_mib=ctx.bandwidth,
    )
    page.bring_to_front()
    page.goto(f"/migrations/{migration.pk}/")
    page.wait_for_function("() => window.__bench && window.__bench.dom !== null", timeout=60_000, polling=50)
    page.wait_for_function("() => window.__bench.paint !== null", timeout=5_000)
    js = page.evaluate("({...window.__bench, arm: undefined})")

    state = wait_state(migration.pk, {"ready", "failed", "aborted", "completed"})
    migration.refresh_from_db()
    if state != "ready":
        raise RuntimeError(f"migration #{migration.pk} is {state}: {migration.failure_reason}")
    ready_audit = AuditEvent.objects.get(migration=migration, event_type="ready")
    engine = datetime.fromisoformat(ready_audit.details["ready_events"]["vda"]).timestamp()
    libvirt = ctx.events.ready_after(requested)

    migration_abort(migration=Migration.objects.get(pk=migration.pk), user=ctx.operator)
    state = wait_state(migration.pk, {"aborted", "failed"})
    if state != "aborted":
        raise RuntimeError(f"migration #{migration.pk} abort ended {state}")
    job_gone(ctx.vm.name)
    if dest.exists():
        raise RuntimeError(f"{dest} is still there after the abort")

    ready_at = migration.ready_at.timestamp()
    valid = libvirt is not None and js["wsOpen"] is not None and js["wsOpen"] / 1000 < libvirt and not js["initialReady"]
    return {
        "id": migration.pk,
        "valid": valid,
        "libvirt": libvirt,
        "page_open_before_ready": None if libvirt is None or js["wsOpen"] is None else libvirt - js["wsOpen"] / 1000,
        "libvirt_to_engine": engine - libvirt if libvirt else None,
        "engine_to_ready_at": ready_at - engine,
        "libvirt_to_ready_at": ready_at - libvirt if libvirt else None,
        "ready_at_to_frame": js["frame"] / 1000 - ready_at if js["frame"] else None,
        "frame_to_dom": (js["dom"] - js["frame"]) / 1000 if js["frame"] else None,
        "ready_at_to_dom": js["dom"] / 1000 - ready_at,
        "total": js["dom"] / 1000 - libvirt if libvirt else None,
        "total_engine": js["dom"] / 1000 - engine,
        "dom_to_paint": (js["paint"] - js["dom"]) / 1000,
        "clock_skew_ms": js["domDateNow"] - js["dom"],
    }


def login(browser, base_url: str):
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    context.add_init_script(INIT_SCRIPT % {"wording": repr(READY_WORDING)})
    page = context.new_page()
    page.goto("/accounts/login/")
    page.fill("#id_username", "approver")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)
    return page


def create_baseline_row(ctx) -> int:
    from blockmig.models import Migration, MigrationDisk
    from blockmig.states import State

    fake_uuid = str(uuid.uuid4())
    migration = Migration.objects.create(
        hypervisor=ctx.host,
        domain_uuid=fake_uuid,
        domain_name=f"{ctx.vm.name}-baseline",
        requested_by=ctx.operator,
        state=State.COPYING,
        bytes_total=64 << 20,
        bytes_done=32 << 20,
        bandwidth_mib=ctx.bandwidth,
        # Held by the bench for a day: no worker claims it.
        lease_owner=f"bench-baseline-{os.getpid()}",
        lease_expires_at=datetime.now(UTC) + timedelta(days=1),
    )
    MigrationDisk.objects.create(
        migration=migration,
        hypervisor=ctx.host,
        domain_uuid=fake_uuid,
        target="vda",
        source_path=str(ctx.vm.disks[0].path),
        destination=str(ctx.vm.backups / "baseline.qcow2"),
        end=64 << 20,
        cur=32 << 20,
    )
    return migration.pk


def baseline_sample(page, migration_id: int) -> dict:
    from blockmig.live import publish
    from blockmig.models import Migration
    from blockmig.states import State

    page.bring_to_front()
    # Back to copying, and wait until the page shows it, so the next flip is a fresh change.
    Migration.objects.filter(pk=migration_id).update(state=State.COPYING, ready_at=None, bytes_done=32 << 20)
    publish.migration_changed(migration_id)
    page.wait_for_function(
        f"() => !document.getElementById('migration-{migration_id}-status').textContent.includes({READY_WORDING!r})",
        timeout=20_000,
        polling=20,
    )
    page.evaluate("window.__bench.arm()")
    time.sleep(0.05)
    Migration.objects.filter(pk=migration_id).update(state=State.READY, ready_at=datetime.now(UTC), bytes_done=64 << 20)
    published = time.time()
    publish.migration_changed(migration_id)
    page.wait_for_function("() => window.__bench.dom !== null && window.__bench.paint !== null", timeout=20_000, polling=20)
    js = page.evaluate("({...window.__bench, arm: undefined})")
    return {
        "publish_to_frame": js["frame"] / 1000 - published if js["frame"] else None,
        "frame_to_dom": (js["dom"] - js["frame"]) / 1000 if js["frame"] else None,
        "total": js["dom"] / 1000 - published,
        "dom_to_paint": (js["paint"] - js["dom"]) / 1000,
    }


# -- report -------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest rank (as bench_push): with 10 samples p95 is the largest."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def ms(value) -> str:
    return "     n/a" if value is None else f"{value * 1000:8.1f}"


def stats_line(label: str, values: list) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return f"  {label:40}{'n/a':>9}"
    return (
        f"  {label:40}{statistics.median(known) * 1000:9.1f}{percentile(known, 95) * 1000:9.1f}"
        f"{min(known) * 1000:9.1f}{max(known) * 1000:9.1f}"
    )


def report(runs: list[dict], base: list[dict], args) -> None:
    valid = [r for r in runs if r["valid"]]
    print()
    print(
        f"READY → DOM in Chromium, {len(runs)} runs ({len(valid)} valid: socket open before READY), "
        f"shallow copy at {args.bandwidth} MiB/s; baseline {len(base)} publish → DOM samples, same site and browser"
    )
    print()
    print(
        "per run (ms)   READY→engine  engine→ready_at  ready_at→frame  frame→DOM   READY→DOM   DOM→paint  (socket open before READY)"
    )
    for i, r in enumerate(runs, 1):
        flag = "" if r["valid"] else "   NOT COUNTED"
        print(
            f"  run {i:2} #{r['id']:<4}{ms(r['libvirt_to_engine']):>12}{ms(r['engine_to_ready_at']):>16}"
            f"{ms(r['ready_at_to_frame']):>16}{ms(r['frame_to_dom']):>11}{ms(r['total']):>12}{ms(r['dom_to_paint']):>12}"
            f"  ({ms(r['page_open_before_ready']).strip()} ms){flag}"
        )
    print()
    print(f"  {'(ms)':40}{'p50':>9}{'p95':>9}{'min':>9}{'max':>9}")
    print("  READY → DOM, broken down")
    for key, label in (
        ("libvirt_to_engine", "libvirt READY (virsh) → engine callback"),
        ("engine_to_ready_at", "engine callback → row ready_at"),
        ("libvirt_to_ready_at", "libvirt READY → row ready_at (DB)"),
        ("ready_at_to_frame", "row ready_at → ws frame in browser"),
        ("frame_to_dom", "ws frame → DOM (htmx swap)"),
        ("ready_at_to_dom", "row ready_at → DOM"),
        ("total", "libvirt READY → DOM  (t1 − t0)"),
        ("total_engine", "engine callback → DOM"),
        ("dom_to_paint", "DOM → next animation frame"),
    ):
        print(stats_line(label, [r[key] for r in valid]))
    print("  baseline: bare push transport, no libvirt/engine")
    for key, label in (
        ("publish_to_frame", "publish call → ws frame in browser"),
        ("frame_to_dom", "ws frame → DOM (htmx swap)"),
        ("total", "publish.migration_changed → DOM"),
        ("dom_to_paint", "DOM → next animation frame"),
    ):
        print(stats_line(label, [b[key] for b in base]))
    totals = [r["total"] for r in valid if r["total"] is not None]
    base_totals = [b["total"] for b in base]
    if totals and base_totals:
        p50 = statistics.median(totals) / statistics.median(base_totals)
        p95 = percentile(totals, 95) / percentile(base_totals, 95)
        print()
        print(
            f"READY → DOM: p50 {statistics.median(totals) * 1000:.1f} ms, p95 {percentile(totals, 95) * 1000:.1f} ms;"
            f" publish → DOM: p50 {statistics.median(base_totals) * 1000:.1f} ms, p95 {percentile(base_totals, 95) * 1000:.1f} ms"
        )
        print(f"ratio READY→DOM / publish→DOM: p50 {p50:.2f}x, p95 {p95:.2f}x")
    skew = [abs(r["clock_skew_ms"]) for r in runs]
    print(f"(page clock check: |Date.now() − timeOrigin+now()| ≤ {max(skew):.1f} ms at the DOM update)")


# -- main -----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--baseline-per-run", type=int, default=3, help="publish → DOM samples after each run")
    parser.add_argument("--bandwidth", type=int, default=2, help="MiB/s limit of the copy (keeps it ~2–3 s)")
    parser.add_argument("--extra-mib", type=int, default=5, help="MiB written into snap2 before the domain starts")
    parser.add_argument("--keep-logs", action="store_true", help="keep the site's logs (worker, daphne, virsh event)")
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("virsh") is None:
        print("bench_ready_to_dom: needs root and libvirt (make services); skipped")
        return 0
    if not Path(CHROMIUM).exists():
        print("bench_ready_to_dom: needs Debian's chromium (the setup installs it); skipped")
        return 0

    started = time.monotonic()
    var, site_env = setup_environment()
    ensure_redis()
    from django.conf import settings
    from django.contrib.auth.models import Group, User
    from playwright.sync_api import sync_playwright

    from hosts.lab.seed import build_seed_chain
    from hosts.lab.services import ensure_libvirtd
    from hosts.models import Hypervisor
    from hosts.roles import setup_roles
    from tests.browser.remote import register_domain
    from tests.lab.engine_helpers import Disk, DomainFactory, copy_seed_chain, run

    ensure_libvirtd()
    pid = os.getpid()
    root = Path("/var/tmp") / f"blockmig-bench-r2d-{pid}-{uuid.uuid4().hex[:6]}"
    verdict = Path("/var/tmp/blockmig-test-virt_type")
    virt_type = verdict.read_text().strip() if verdict.exists() else "qemu"
    if virt_type not in ("kvm", "qemu"):
        virt_type = "qemu"
    factory = daphne = worker = events = None
    runs, base = [], []
    try:
        root.mkdir(parents=True)
        lab = SimpleNamespace(prefix=f"bmtest-{pid}-bench-", virt_type=virt_type, seed=build_seed_chain(root / "seed"))
        factory = DomainFactory(lab, root / "domains")

        def build(directory: Path) -> list[Disk]:
            snap2 = copy_seed_chain(lab, directory)[0]
            if args.extra_mib:
                run("qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a 512M {args.extra_mib}M", snap2)
            return [Disk("vda", snap2)]

        vm = factory.prepared("r2d", build)

        setup_roles()
        users = {}
        for name in ("operator", "approver"):
            user = User.objects.create_user(name, password=PASSWORD)
            user.groups.add(Group.objects.get(name=name))
            users[name] = User.objects.get(pk=user.pk)
        registered = register_domain(
            hypervisor_name=f"bench-{uuid.uuid4().hex[:6]}", domain_uuid=vm.uuid, allowed_root=str(vm.backups)
        )
        host = Hypervisor.objects.get(name=registered["hypervisor"])

        worker = Process("worker", [sys.executable, "manage.py", "run_worker", "-v", "1"], site_env, var / "worker.log")
        port = free_port()
        daphne = Process(
            "daphne",
            [str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p", str(port), "blockmig.asgi:application"],
            site_env,
            var / "daphne.log",
        )
        events = EventListener(vm.name, var / "events.log")
        worker.wait_for_log(r"worker \S+: \d+ migration slots")
        base_url = f"http://127.0.0.1:{port}"
        wait_for_http(daphne, f"{base_url}/accounts/login/")
        ctx = SimpleNamespace(vm=vm, host=host, operator=users["operator"], events=events, bandwidth=args.bandwidth)
        baseline_id = create_baseline_row(ctx)

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                # Two windows (contexts) of the same approver: the real runs' page, the baseline's.
                page, baseline_page = login(browser, base_url), login(browser, base_url)
                baseline_page.goto(f"/migrations/{baseline_id}/")
                baseline_page.wait_for_function("() => document.documentElement.dataset.live === 'open'")
                print(
                    f"site up in {time.monotonic() - started:.1f} s (daphne :{port}, worker, Chromium; domain {vm.name})",
                    flush=True,
                )

                # Warm-up, not counted: first render of the page in daphne, first copy on the image.
                real_run(ctx, page, 0)
                baseline_sample(baseline_page, baseline_id)
                for i in range(1, args.runs + 1):
                    result = real_run(ctx, page, i)
                    runs.append(result)
                    samples = [baseline_sample(baseline_page, baseline_id) for _ in range(args.baseline_per_run)]
                    base += samples
                    print(
                        f"run {i}: READY → DOM {ms(result['total']).strip()} ms"
                        f"{'' if result['valid'] else ' (not counted: socket not open before READY)'};"
                        f" publish → DOM {', '.join(ms(s['total']).strip() for s in samples)} ms",
                        flush=True,
                    )
            finally:
                browser.close()
        report(runs, base, args)
        print(f"(bench wall time {time.monotonic() - started:.1f} s)")
        return 0
    finally:
        if events:
            events.stop()
        for process in (worker, daphne):
            if process:
                process.stop()
        if factory:
            factory.cleanup()
        shutil.rmtree(root, ignore_errors=True)
        try:
            import redis

            r = redis.Redis.from_url(settings.REDIS_URL)
            for key in r.scan_iter(f"{os.environ['BLOCKMIG_CHANNEL_PREFIX']}*"):
                r.delete(key)
        except Exception as error:  # cleanup must not hide the real error
            print(f"(could not clean the Redis keys: {error})", file=sys.stderr)
        if args.keep_logs:
            print(f"logs kept in {var}")
            (var / "db.sqlite3").unlink(missing_ok=True)
        else:
            shutil.rmtree(var, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
