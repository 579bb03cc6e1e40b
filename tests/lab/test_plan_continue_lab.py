"""An approval that dies half-way, continued, on the real lab: three running guests are
evacuated; the approval's requests stop with an exception on the second domain (all a
process killed there leaves: the approval and the first domain's migration committed, the
rest not), so the plan stays approved. Continue is refused while the approval may still be
under way; once the plan has been quiet for the grace period, an approver continues it and
exactly the two missing domains are requested against libvirt, once each, and the plan runs."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from django.utils import timezone

from blockmig import lifecycle
from blockmig.errors import Refused
from blockmig.models import AuditEvent, Migration, MigrationDisk, Plan
from blockmig.plans.actions import plan_approve
from blockmig.plans.build import plan_build
from blockmig.plans.recovery import CONTINUE_AFTER, plan_continue
from hosts.sync.hypervisor import hypervisor_sync
from tests.lab.engine_helpers import make_hypervisor

pytestmark = pytest.mark.lab

MIB = 2**20


class ProcessDied(BaseException):
    """Stands for the web process dying mid-approval: nothing in blockmig catches it."""


@pytest.fixture
def target_root():
    root = Path("/var/tmp") / f"blockmig-plan-continue-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    root.mkdir(parents=True)
    yield root
    subprocess.run(["rm", "-rf", str(root)], check=False)


def test_an_interrupted_approval_is_continued_with_only_the_missing_domains(domains, people, target_root, monkeypatch):
    guests = [domains.images(f"cont{n}", [("vda", "qcow2", 16 * MIB, None)]) for n in range(3)]
    host = make_hypervisor([target_root])
    assert hypervisor_sync(host).ok
    plan = plan_build(user=people["operator"], hypervisor=host, source_kind="root", source_root=str(domains.root),
                      target_root=str(target_root))  # fmt: skip
    assert {i.domain_name for i in plan.items.all() if not i.blocked_reason} == {g.name for g in guests}

    real_request = lifecycle.migration_request
    calls: list[str] = []

    def dies_on_the_second_domain(**kwargs):
        calls.append(kwargs["domain_uuid"])
        if len(calls) == 2:
            raise ProcessDied
        return real_request(**kwargs)

    monkeypatch.setattr(lifecycle, "migration_request", dies_on_the_second_domain)
    with pytest.raises(ProcessDied):
        plan_approve(plan=plan, user=people["approver"])
    monkeypatch.undo()

    plan.refresh_from_db()
    assert plan.state == "approved" and plan.approved_by == people["approver"]
    (first,) = Migration.objects.filter(plan=plan)
    assert first.domain_uuid == calls[0]
    missing = sorted(i.domain_name for i in plan.items.filter(blocked_reason="", migration__isnull=True))
    assert len(missing) == 2

    # Right after, the approval may still be requesting: Continue would race it.
    with pytest.raises(Refused, match="still requesting its migrations"):
        plan_continue(plan=plan, user=people["approver2"])
    assert Migration.objects.filter(plan=plan).count() == 1

    # Time passes with nothing happening to the plan.
    Plan.objects.filter(pk=plan.pk).update(requested_at=timezone.now() - CONTINUE_AFTER)
    plan = plan_continue(plan=plan, user=people["approver2"])

    assert plan.state == "running"
    migrations = list(Migration.objects.filter(plan=plan).order_by("pk"))
    assert len(migrations) == 3 and migrations[0] == first
    assert sorted(m.domain_name for m in migrations[1:]) == missing
    assert {m.requested_by.username for m in migrations} == {"operator"}  # in the author's name, as the approval asks
    for item in plan.items.filter(blocked_reason=""):
        assert item.migration is not None and item.request_error == ""
        assert MigrationDisk.objects.filter(domain_uuid=item.domain_uuid, target=item.target).count() == 1
        assert MigrationDisk.objects.get(migration=item.migration).destination == item.destination
    # No disk was asked for a second time (the lifecycle would have refused and audited it).
    assert not AuditEvent.objects.filter(event_type="refused", details__action="request").exists()
    continued = AuditEvent.objects.get(event_type="plan_continued", details__plan=plan.pk)
    assert continued.actor_name == "approver2" and continued.details["approved_by"] == "approver"
    assert sorted(continued.details["requesting"]) == [f"{name}/vda" for name in missing]
    trail = AuditEvent.objects.filter(details__plan=plan.pk, event_type__startswith="plan_").values_list("event_type", flat=True)
    assert list(trail) == ["plan_created", "plan_approved", "plan_continued", "plan_running"]
