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
import shutil
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Beside this script: its parts (bench/ready_to_dom/), the harness, the site and the helpers.
from harness.lab import EventListener  # noqa: E402
from harness.processes import Process, ensure_redis, wait_for_http  # noqa: E402
from ready_to_dom.page import CHROMIUM, CHROMIUM_ARGS, PASSWORD, login  # noqa: E402
from ready_to_dom.report import ms, report  # noqa: E402
from ready_to_dom.runs import baseline_sample, create_baseline_row, real_run  # noqa: E402
from throwaway import throwaway_site  # noqa: E402
from ws_client import free_port  # noqa: E402


def setup_environment() -> tuple[Path, dict[str, str]]:
    var = throwaway_site(
        "blockmig-bench-r2d-",
        "WARNING",  # BLOCKMIG_LOG_LEVEL=DEBUG to diagnose
        env={
            "BLOCKMIG_CHANNEL_PREFIX": f"benchr2d{os.getpid()}-{uuid.uuid4().hex[:6]}",
            "DJANGO_DEBUG": "0",
            "DJANGO_SETTINGS_MODULE": "blockmig.settings",
            "PYTHONUNBUFFERED": "1",
        },
        own_sqlite=True,
        migrate=True,
        remove_at_exit=False,  # main() removes it, or keeps the logs (--keep-logs)
    )
    # The subprocesses get the environment as it is now: the site as `make run` runs it.
    site_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    # Playwright's sync API keeps an event loop on this thread; the ORM here must not refuse.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    return var, site_env


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
