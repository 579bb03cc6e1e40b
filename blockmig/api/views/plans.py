"""Evacuation plans through the API: list, one plan with its disks and totals, and what is
done to a built plan: approve, continue an interrupted approval, pause, resume, abort. Each
is the plan page's own function (`blockmig.plans.actions`, `blockmig.plans.recovery`): four
eyes and preflight again on approval, every refusal audited. Building a plan stays on its
page for now (docs/api.md)."""

from __future__ import annotations

from collections.abc import Callable

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import generics, serializers
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from blockmig.api.errors import ApiError
from blockmig.api.idempotency import run_once
from blockmig.api.serializers import ErrorSerializer
from blockmig.api.views.base import IDEMPOTENCY, ApiView, Pages
from blockmig.errors import Refused
from blockmig.models import Plan, PlanDisk
from blockmig.plans import actions, recovery
from blockmig.plans.selectors import plan_for_page, plans_for_list
from blockmig.plans.states import PlanState

PLAN_ERRORS = {code: ErrorSerializer for code in (400, 401, 403, 404, 409, 422)}


class PlanDiskSerializer(serializers.ModelSerializer):
    status = serializers.SerializerMethodField(help_text="moves, stays (blocked_reason says why), or its migration's progress")

    class Meta:
        model = PlanDisk
        fields = ["domain_uuid", "domain_name", "target", "source_path", "destination", "bytes_to_copy", "blocked_reason",
                  "migration", "request_error", "status"]  # fmt: skip
        read_only_fields = fields

    def get_status(self, item: PlanDisk) -> str:
        return getattr(item, "status", "") or ("stays" if item.blocked_reason else "moves")


class PlanSerializer(serializers.ModelSerializer):
    """`state` takes the values of blockmig.plans.states.PlanState."""

    state = serializers.ChoiceField(choices=PlanState.choices, read_only=True)
    hypervisor = serializers.CharField(source="hypervisor.name", read_only=True)
    author = serializers.CharField(source="author.username", read_only=True)
    approved_by = serializers.CharField(source="approved_by.username", read_only=True, allow_null=True, default=None)
    disk_count = serializers.IntegerField(read_only=True, required=False, help_text="Disks that move (lists only).")
    staying_count = serializers.IntegerField(read_only=True, required=False, help_text="Disks that stay (lists only).")

    class Meta:
        model = Plan
        fields = ["id", "hypervisor", "author", "approved_by", "state", "source_kind", "source_root", "domain_uuids",
                  "target_root", "mode", "pivot_policy", "window_start", "window_end", "bytes_total", "free_at_target",
                  "created_at", "approved_at", "finished_at", "disk_count", "staying_count"]  # fmt: skip
        read_only_fields = fields


class PlanTotalsSerializer(serializers.Serializer):
    counts = serializers.DictField(child=serializers.IntegerField())
    bytes_planned = serializers.IntegerField()
    bytes_done = serializers.IntegerField()
    percent = serializers.FloatField(allow_null=True)
    rate_bps = serializers.FloatField()
    eta_seconds = serializers.FloatField(allow_null=True)


class PlanDetailSerializer(PlanSerializer):
    disks = PlanDiskSerializer(source="item_list", many=True, read_only=True)
    totals = serializers.SerializerMethodField()

    class Meta(PlanSerializer.Meta):
        fields = [f for f in PlanSerializer.Meta.fields if f not in ("disk_count", "staying_count")] + ["disks", "totals"]
        read_only_fields = fields

    @extend_schema_field(PlanTotalsSerializer)
    def get_totals(self, plan: Plan) -> dict:
        t = plan.totals
        return {"counts": t.counts, "bytes_planned": t.bytes_planned, "bytes_done": t.bytes_done, "percent": t.percent,
                "rate_bps": t.rate_bps, "eta_seconds": t.eta_seconds}  # fmt: skip


def plan_body(request: Request, pk: int) -> Response:
    try:
        plan = plan_for_page(pk)
    except Plan.DoesNotExist:
        raise NotFound(f"No plan #{pk}.") from None
    return Response(PlanDetailSerializer(plan, context={"request": request}).data)


@extend_schema(parameters=[OpenApiParameter("state", str, enum=PlanState.values, description="Only plans in this state.")])
class PlanList(ApiView, generics.ListAPIView):
    perm, doing = "blockmig.view_plan", "Seeing evacuation plans"
    serializer_class = PlanSerializer
    pagination_class = Pages

    def get_queryset(self):
        state = self.request.query_params.get("state", "")
        if state and state not in PlanState.values:
            raise ApiError(
                "invalid", f"Unknown state {state}: one of {', '.join(PlanState.values)}.", {"state": ["Unknown state."]}
            )
        return plans_for_list(state)


class PlanDetail(ApiView):
    perm, doing = "blockmig.view_plan", "Seeing evacuation plans"

    @extend_schema(responses={200: PlanDetailSerializer, **PLAN_ERRORS}, summary="One plan: its disks and totals")
    def get(self, request: Request, pk: int) -> Response:
        return plan_body(request, pk)


class PlanApprove(ApiView):
    @extend_schema(request=None, parameters=[IDEMPOTENCY], responses={200: PlanDetailSerializer, **PLAN_ERRORS},
                   summary="Approve a draft plan (an approver who did not build it); its migrations are requested")  # fmt: skip
    def post(self, request: Request, pk: int) -> Response:
        return run_once(request, lambda: self._approve(request, pk), self.handle_exception)

    def _approve(self, request: Request, pk: int) -> Response:
        plan = Plan.objects.filter(pk=pk).first()
        if plan is None:
            raise NotFound(f"No plan #{pk}.")
        try:
            actions.plan_approve(plan=plan, user=request.user)
        except Refused as refused:
            if not request.user.has_perm("blockmig.approve_plan"):
                raise ApiError("permission_denied", refused.message) from None
            if plan.author_id == request.user.pk:
                raise ApiError("four_eyes", refused.message) from None
            plan.refresh_from_db()
            raise ApiError("wrong_state" if plan.state != PlanState.DRAFT else "refused", refused.message) from None
        return plan_body(request, pk)


class PlanContinue(ApiView):
    @extend_schema(request=None, parameters=[IDEMPOTENCY], responses={200: PlanDetailSerializer, **PLAN_ERRORS},
                   summary="Continue a plan whose approval was interrupted: only its disks without a migration are requested")  # fmt: skip
    def post(self, request: Request, pk: int) -> Response:
        return run_once(request, lambda: self._continue(request, pk), self.handle_exception)

    def _continue(self, request: Request, pk: int) -> Response:
        plan = Plan.objects.filter(pk=pk).first()
        if plan is None:
            raise NotFound(f"No plan #{pk}.")
        try:
            recovery.plan_continue(plan=plan, user=request.user)
        except Refused as refused:
            if not request.user.has_perm("blockmig.approve_plan"):
                raise ApiError("permission_denied", refused.message) from None
            plan.refresh_from_db()
            raise ApiError("too_soon" if plan.state == PlanState.APPROVED else "wrong_state", refused.message) from None
        return plan_body(request, pk)


class _PlanAction(ApiView):
    """A plan action whose refusal is either the role (`needs`) or the plan's state. Not
    ApiView's `perm`: the action itself refuses a missing role, audited like the page's."""

    needs = ""

    def act(self, request: Request, pk: int, action: Callable[..., Plan]) -> Response:
        return run_once(request, lambda: self._act(request, pk, action), self.handle_exception)

    def _act(self, request: Request, pk: int, action: Callable[..., Plan]) -> Response:
        plan = Plan.objects.filter(pk=pk).first()
        if plan is None:
            raise NotFound(f"No plan #{pk}.")
        try:
            action(plan=plan, user=request.user)
        except Refused as refused:
            code = "permission_denied" if not request.user.has_perm(self.needs) else "wrong_state"
            raise ApiError(code, refused.message) from None
        return plan_body(request, pk)


class PlanPause(_PlanAction):
    needs = "blockmig.change_plan"

    @extend_schema(request=None, parameters=[IDEMPOTENCY], responses={200: PlanDetailSerializer, **PLAN_ERRORS},
                   summary="Pause a running plan (operator): no new copies start; copies under way go on")  # fmt: skip
    def post(self, request: Request, pk: int) -> Response:
        return self.act(request, pk, actions.plan_pause)


class PlanResume(_PlanAction):
    needs = "blockmig.change_plan"

    @extend_schema(request=None, parameters=[IDEMPOTENCY], responses={200: PlanDetailSerializer, **PLAN_ERRORS},
                   summary="Resume a paused plan (operator): its queued copies may start again")  # fmt: skip
    def post(self, request: Request, pk: int) -> Response:
        return self.act(request, pk, actions.plan_resume)


class PlanAbort(_PlanAction):
    needs = "blockmig.abort_migration"

    @extend_schema(request=None, parameters=[IDEMPOTENCY], responses={200: PlanDetailSerializer, **PLAN_ERRORS},
                   summary="Abort a plan (operator or approver): each migration not yet pivoted is aborted, its guest stays on its source")  # fmt: skip
    def post(self, request: Request, pk: int) -> Response:
        return self.act(request, pk, actions.plan_abort)
