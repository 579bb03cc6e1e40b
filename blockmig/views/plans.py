"""Plan pages: *Evacuate* (build a plan), the plans list, a plan's page and its actions.

Thin, like blockmig.views: reads from blockmig.plans.selectors, writes through
blockmig.plans (build, actions), whose Refused.message is what the person sees. Which
buttons a user gets is decided in `plan_actions` from the plan's state machine and the
roles; the plans package decides again (and audits a refusal) when one is pressed.

The plan page's fragments (`plan_status`, `plan_actions`, `plan_disks`, `plan_timeline`)
render from `plan_context(plan, user)`; the live socket (/ws/plans/<id>/) pushes the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.response import TemplateResponse
from django.views.decorators.http import require_POST

from blockmig.errors import Refused
from blockmig.forms.plan import EvacuateForm, PlanWindowForm
from blockmig.models import Plan
from blockmig.plans import actions, recovery
from blockmig.plans.build import plan_build
from blockmig.plans.rules import window_problem
from blockmig.plans.selectors import disk_directories, plan_for_page, plans_for_list
from blockmig.plans.states import PlanState, plan_may
from blockmig.views.acting import act
from hosts.models import Hypervisor
from hosts.roles import deny

PLANS_PER_PAGE = 25
FRAGMENTS = {"plan_status", "plan_actions", "plan_disks", "plan_timeline"}


@dataclass(frozen=True)
class PlanActions:
    approve: bool = False
    continue_plan: bool = False
    discard: bool = False
    pause: bool = False
    resume: bool = False
    abort: bool = False
    window: bool = False
    approve_note: str = ""
    may_act: bool = False

    @property
    def any(self) -> bool:
        return self.approve or self.continue_plan or self.discard or self.pause or self.resume or self.abort or self.window


def plan_actions(plan: Plan, user) -> PlanActions:
    state = plan.state
    approver = user.has_perm("blockmig.approve_plan")
    operator = user.has_perm("blockmig.change_plan")
    own = plan.author_id == user.pk
    draft = state == PlanState.DRAFT
    window_perm = "blockmig.approve_plan" if not draft else "blockmig.change_plan"
    return PlanActions(
        approve=approver and not own and draft,
        # Offered by the rule plan_continue applies, so the button shows only when it would be
        # accepted (it appears by time: the live page's 60 s resync re-renders it).
        continue_plan=approver and not recovery.continue_problem(plan),
        discard=draft and (operator or approver),
        pause=operator and plan_may(state, PlanState.PAUSED),
        resume=operator and plan_may(state, PlanState.RUNNING) and state == PlanState.PAUSED,
        abort=user.has_perm("blockmig.abort_migration") and not draft and plan_may(state, PlanState.ABORTING),
        window=user.has_perm(window_perm) and state in (PlanState.DRAFT, PlanState.APPROVED, PlanState.RUNNING, PlanState.PAUSED),
        approve_note="You built this plan, so another approver must approve it (four eyes)."
        if approver and own and draft
        else "",
        may_act=approver or operator or user.has_perm("blockmig.abort_migration"),
    )


def plan_context(plan: Plan, user) -> dict:
    """What the plan page and each of its fragments render from (plan from plan_for_page)."""
    return {
        "plan": plan,
        "totals": plan.totals,
        "items": plan.item_list,
        "moving": [i for i in plan.item_list if not i.blocked_reason],
        "staying": [i for i in plan.item_list if i.blocked_reason],
        "unrequested": recovery.unrequested(plan) if plan.state == PlanState.APPROVED else [],
        "timeline": plan.timeline,
        "actions": plan_actions(plan, user),
        "window_note": window_problem(plan) if plan.state not in (PlanState.DONE, PlanState.ABORTED) else "",
        "window_form": PlanWindowForm(
            initial={"window_start": plan.window_start, "window_end": plan.window_end}, auto_id="id_plan_%s"
        ),
    }


# ---- building --------------------------------------------------------------------------


def plan_new(request: HttpRequest, name: str) -> HttpResponse:
    """*Evacuate* from a host's page: ?root=<dir> preselects a directory, ?domain=<uuid>
    (repeatable) chosen domains, ?kind=host the whole host."""
    if not request.user.has_perm("blockmig.add_plan"):
        deny("blockmig.add_plan", "Building an evacuation plan")
    hypervisor = get_object_or_404(Hypervisor, name=name)
    directories = disk_directories(hypervisor)
    initial: dict[str, object] = {}
    if request.GET.get("root"):
        initial = {"source_kind": Plan.Source.ROOT, "source_root": request.GET["root"]}
    elif request.GET.getlist("domain"):
        initial = {"source_kind": Plan.Source.DOMAINS, "domain_uuids": request.GET.getlist("domain")}
    elif request.GET.get("kind") == Plan.Source.HOST:
        initial = {"source_kind": Plan.Source.HOST}
    form = EvacuateForm(request.POST or None, initial=initial, hypervisor=hypervisor, directories=[d for d, _n in directories])
    if request.method == "POST" and form.is_valid():
        try:
            plan = plan_build(user=request.user, hypervisor=hypervisor, **form.build_kwargs())
        except Refused as refused:
            form.add_refusal(refused.message, refused.field)
        else:
            messages.success(request, f"Plan #{plan.pk} built: review it, then ask an approver to approve it.")
            return redirect("plan_detail", pk=plan.pk)
    return render(
        request,
        "blockmig/plan_form.html",
        {"form": form, "hypervisor": hypervisor, "directories": directories, "roots": form.roots},
    )


# ---- list and page -----------------------------------------------------------------------


def plan_list(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("blockmig.view_plan"):
        deny("blockmig.view_plan", "Seeing evacuation plans")
    state = request.GET.get("state", "")
    if state not in PlanState.values:
        state = ""
    page = Paginator(plans_for_list(state), PLANS_PER_PAGE).get_page(request.GET.get("page"))
    return render(
        request,
        "blockmig/plan_list.html",
        {
            "page": page,
            "state": state,
            "states": PlanState.choices,
            "hypervisors": Hypervisor.objects.only("name").order_by("name"),
            "may_build": request.user.has_perm("blockmig.add_plan"),
        },
    )


def plan_detail(request: HttpRequest, pk: int) -> HttpResponse:
    if not request.user.has_perm("blockmig.view_plan"):
        deny("blockmig.view_plan", "Seeing evacuation plans")
    try:
        plan = plan_for_page(pk)
    except Plan.DoesNotExist:
        raise Http404("No such plan.") from None
    template = "blockmig/plan_detail.html"
    htmx = getattr(request, "htmx", None)  # django-htmx's middleware
    if htmx and not htmx.boosted and not htmx.history_restore_request:
        fragment = request.GET.get("fragment", "plan_status")
        if fragment not in FRAGMENTS:
            raise Http404("No such fragment.")
        template += "#" + fragment
    return TemplateResponse(request, template, plan_context(plan, request.user))


# ---- actions -------------------------------------------------------------------------------


def _action(request, pk: int, perm: str, call, done: str) -> HttpResponse:
    return act(request, get_object_or_404(Plan, pk=pk), perm, call, done, "plan_detail")


@require_POST
def plan_approve(request: HttpRequest, pk: int) -> HttpResponse:
    return _action(request, pk, "blockmig.approve_plan", lambda p: actions.plan_approve(plan=p, user=request.user),
                   "Approved: the plan's migrations are requested and copy within the host's limits.")  # fmt: skip


@require_POST
def plan_continue(request: HttpRequest, pk: int) -> HttpResponse:
    return _action(request, pk, "blockmig.approve_plan", lambda p: recovery.plan_continue(plan=p, user=request.user),
                   "Continued: the disks without a migration are requested, and the plan runs.")  # fmt: skip


@require_POST
def plan_discard(request: HttpRequest, pk: int) -> HttpResponse:
    return _action(request, pk, "blockmig.change_plan", lambda p: actions.plan_discard(plan=p, user=request.user),
                   "Discarded: nothing was started.")  # fmt: skip


@require_POST
def plan_pause(request: HttpRequest, pk: int) -> HttpResponse:
    return _action(request, pk, "blockmig.change_plan", lambda p: actions.plan_pause(plan=p, user=request.user),
                   "Paused: no new copies start; those running go on.")  # fmt: skip


@require_POST
def plan_resume(request: HttpRequest, pk: int) -> HttpResponse:
    return _action(request, pk, "blockmig.change_plan", lambda p: actions.plan_resume(plan=p, user=request.user),
                   "Resumed: waiting copies start within the limits.")  # fmt: skip


@require_POST
def plan_abort(request: HttpRequest, pk: int) -> HttpResponse:
    return _action(request, pk, "blockmig.abort_migration", lambda p: actions.plan_abort(plan=p, user=request.user),
                   "Aborting: every migration that has not pivoted is aborted; those guests stay on their source.")  # fmt: skip


@require_POST
def plan_window(request: HttpRequest, pk: int) -> HttpResponse:
    plan = get_object_or_404(Plan, pk=pk)
    form = PlanWindowForm(request.POST)
    perm = "blockmig.change_plan" if plan.state == PlanState.DRAFT else "blockmig.approve_plan"
    if not form.is_valid():
        if not request.user.has_perm(perm):
            deny(perm, "Changing the plan's window")
        messages.error(request, "Fix the window: " + " ".join(str(m) for ms in form.errors.values() for m in ms))
        return redirect("plan_detail", pk=pk)
    start, end = form.cleaned_data.get("window_start"), form.cleaned_data.get("window_end")
    return _action(request, pk, perm,
                   lambda p: actions.plan_set_window(plan=p, user=request.user, window_start=start, window_end=end),
                   "Window changed." if start else "Window removed: pivots follow as soon as they are allowed.")  # fmt: skip
