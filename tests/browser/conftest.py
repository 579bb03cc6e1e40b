"""The browser tier: Debian's Chromium (Playwright, no browser download) against a real
daphne + `manage.py run_worker` + Redis + PostgreSQL + the lab's libvirtd.

One live site per session, built from the deployment tier's pieces (tests/deploy/site.py):
its own database `blockmig_browser_<pid>` in the private cluster of `make postgres`, its own
channel prefix in the shared Redis, one worker and one daphne (port 0, read from its log), each
in its own process group and killed with it at the end. Lab domains are small BIOS-only guests
on copies of the seed chain (tests/lab/engine_helpers.DomainFactory), named `bmtest-<pid>-…`.

Screenshots go to artifacts/screenshots/ (gitignored).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

# Playwright's sync API runs an event loop in this thread; Django's ORM would refuse to run.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"


from tests.browser import remote  # noqa: E402
from tests.deploy.site import LOG_ROOT, Deployment, running_deployment  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "artifacts" / "screenshots"
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


@pytest.fixture(scope="session")
def site() -> Iterator[Deployment]:
    """The live site: `site.daphnes[0].url`, `site.call(remote.fn, **kwargs)`."""
    if os.geteuid() != 0 or shutil.which("virsh") is None:
        pytest.fail("the browser tier needs root and libvirt (make services)")
    if not Path(CHROMIUM).exists():
        pytest.fail("needs Debian's chromium (the setup installs it)")
    with running_deployment("browser", processes=1) as deployment:
        deployment.call(remote.create_people)
        yield deployment


@pytest.fixture(scope="session")
def domain_factory(site):
    """DomainFactory over a seed chain built for this session (mkfs + debugfs: a second or two)."""
    from hosts.lab.seed import build_seed_chain
    from hosts.lab.services import ensure_libvirtd
    from tests.lab.engine_helpers import DomainFactory

    ensure_libvirtd()
    root = LOG_ROOT / f"blockmig-browser-lab-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    root.mkdir(parents=True)
    verdict = LOG_ROOT / "blockmig-test-virt_type"
    virt_type = verdict.read_text().strip() if verdict.exists() else "qemu"
    lab = SimpleNamespace(prefix=f"bmtest-{os.getpid()}-browser-", virt_type=virt_type, seed=build_seed_chain(root / "seed"))
    factory = DomainFactory(lab, root / "domains")
    try:
        yield factory
    finally:
        factory.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class SeedDomain:
    """A running domain on base ← snap1 ← snap2 (vda), registered and synced on the site."""

    name: str
    uuid: str
    directory: Path
    backups: Path
    hypervisor: str
    disk_pk: int

    @property
    def disk_url(self) -> str:
        return f"/hosts/{self.hypervisor}/domains/{self.uuid}/disks/vda/"


def _register(site, vm) -> SeedDomain:
    hypervisor = f"lab-{uuid.uuid4().hex[:8]}"
    registered = site.call(remote.register_domain, hypervisor_name=hypervisor, domain_uuid=vm.uuid, allowed_root=str(vm.backups))
    return SeedDomain(vm.name, vm.uuid, vm.directory, vm.backups, registered["hypervisor"], registered["disk_pk"])


@pytest.fixture
def busy_seed_domain(site, domain_factory) -> SeedDomain:
    """The seed chain with 24 MiB more written into its active layer (snap2), so a shallow copy
    at 1 MiB/s stays in the copying phase for about 20 s."""
    from tests.lab.engine_helpers import Disk, copy_seed_chain, run

    def build(directory: Path) -> list[Disk]:
        snap2 = copy_seed_chain(domain_factory.lab, directory)[0]
        run("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 512M 24M", snap2)
        return [Disk("vda", snap2)]

    return _register(site, domain_factory.prepared("busy", build))


@pytest.fixture
def seed_domain(site, domain_factory) -> SeedDomain:
    return _register(site, domain_factory.seed("seed"))


@pytest.fixture(scope="session")
def browser(site):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def login(site, browser):
    """login("approver") → a Page in a fresh browser context, signed in through the login form.
    Any Content-Security-Policy violation the pages cause fails the test at the end."""
    contexts = []
    violations: list[str] = []

    def watch(message) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            violations.append(message.text)

    def make(username: str):
        context = browser.new_context(base_url=site.daphnes[0].url, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(20_000)
        contexts.append(context)
        page = context.new_page()
        page.on("console", watch)
        page.goto("/accounts/login/")
        page.fill("#id_username", username)
        page.fill("#id_password", remote.PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "/accounts/login/" not in url)
        return page

    yield make
    for context in contexts:
        context.close()
    assert not violations, f"the pages broke their Content-Security-Policy: {violations}"


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
