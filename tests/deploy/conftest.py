"""The deployment tier: PostgreSQL + Redis + two `run_worker` + two daphne, all real processes.

One deployment per test session, on a fresh database `blockmig_deploy_<pid>` in the private
cluster of `make postgres`, with a channel prefix of its own in the shared Redis so that
parallel sessions never hear each other. Every process runs in its own process group and is
killed with it at the end; the database is dropped.

The test process keeps its own (pytest-django) database. Everything that must happen on the
deployment's database runs in a helper process with the deployment's environment:
`deployment.call(function, **kwargs)` imports `function` by name there, calls it and returns
its JSON result. So lifecycle functions run exactly as a web or worker process runs them,
publishing to the deployment's Redis channels.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from tests.deploy.site import LOG_ROOT, Deployment, running_deployment


@pytest.fixture(scope="session")
def deployment_session() -> Iterator[Deployment]:
    with running_deployment("deploy", processes=2) as deployment:
        yield deployment


@pytest.fixture
def deployment(deployment_session: Deployment) -> Iterator[Deployment]:
    yield deployment_session
    deployment_session.revive_workers()


# -- lab domains --------------------------------------------------------------------------------


@pytest.fixture
def lab_domains():
    """Small BIOS-only domains on the real libvirtd (tests/lab/engine_helpers.DomainFactory).

    Not the full `lab` fixture: these tests need running domains with qcow2 disks, not the
    seed guest, and building it would cost this tier most of its time budget. The names
    start with `bmtest-<pid>-`, so the lab tier's stale-lab cleanup removes them too.
    """
    if os.geteuid() != 0 or shutil.which("virsh") is None:
        pytest.fail("needs root and libvirt (make services)")
    from hosts.lab.services import ensure_libvirtd
    from tests.lab.engine_helpers import DomainFactory

    ensure_libvirtd()
    verdict = LOG_ROOT / "blockmig-test-virt_type"
    # A BIOS-only guest runs under either; use KVM only where the lab tier found it works.
    virt_type = verdict.read_text().strip() if verdict.exists() else "qemu"
    lab = SimpleNamespace(prefix=f"bmtest-{os.getpid()}-deploy-", virt_type=virt_type)
    factory = DomainFactory(lab, LOG_ROOT / f"blockmig-deploy-lab-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    yield factory
    factory.cleanup()
