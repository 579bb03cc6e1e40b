"""Migrations: list, request (the request form's fields, rules and messages), one
migration, and the approve / abort / bandwidth actions through blockmig.lifecycle."""

from __future__ import annotations

from django.db.models import Q, QuerySet
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from blockmig import lifecycle, selectors
from blockmig.api import serializers as s
from blockmig.api.errors import ApiError
from blockmig.api.idempotency import run_once
from blockmig.api.views.base import ACTION_ERRORS, ERRORS, IDEMPOTENCY, ApiView, Pages, first_message
from blockmig.api.views.inventory import find_domain, find_hypervisor
from blockmig.errors import Refused
from blockmig.forms.migration_request import MigrationRequestForm
from blockmig.models import Migration
from blockmig.preflight.options import check_bandwidth
from blockmig.states import State
from hosts.models import Disk


def migration_body(request: Request, pk: int, http_status: int = status.HTTP_200_OK, headers: dict | None = None) -> Response:
    migration = selectors.migration_for_page(pk)
    return Response(
        s.MigrationDetailSerializer(migration, context={"request": request}).data, status=http_status, headers=headers
    )


def _form_fields(errors: dict, field_to_target: dict[str, str]) -> dict[str, list[str]]:
    """The form's errors under the API's names: disks.<target>.destination, non_field."""
    out: dict[str, list[str]] = {}
    for name, messages in errors.items():
        if name in field_to_target:
            name = f"disks.{field_to_target[name]}.destination"
        elif name == "__all__":
            name = "non_field"
        out[name] = [str(m) for m in messages]
    return out


@extend_schema(
    parameters=[
        OpenApiParameter("state", OpenApiTypes.STR, enum=State.values, description="Only migrations in this state."),
        OpenApiParameter("hypervisor", OpenApiTypes.STR, description="Only this host's migrations."),
        OpenApiParameter("domain", OpenApiTypes.STR, description="Part of the domain's name, or its UUID."),
        OpenApiParameter("active", OpenApiTypes.BOOL, description="true: only those not over yet."),
    ]
)
class MigrationListCreate(ApiView, generics.ListAPIView):
    """GET lists migrations (active first, newest first); POST requests one, with the same
    fields, rules and messages as the request form."""

    serializer_class = s.MigrationSerializer
    pagination_class = Pages

    def get_permissions(self):
        self.perm, self.doing = (
            ("blockmig.add_migration", "Starting a migration")
            if self.request.method == "POST"
            else ("blockmig.view_migration", "Seeing migrations")
        )
        return super().get_permissions()

    def get_queryset(self) -> QuerySet[Migration]:
        params = self.request.query_params
        state = params.get("state", "")
        if state and state not in State.values:
            raise ApiError("invalid", f"Unknown state {state}: one of {', '.join(State.values)}.", {"state": ["Unknown state."]})
        qs = selectors.migrations_for_list(state)
        if params.get("hypervisor"):
            qs = qs.filter(hypervisor__name=params["hypervisor"])
        if params.get("domain"):
            qs = qs.filter(Q(domain_name__icontains=params["domain"]) | Q(domain_uuid=params["domain"].lower()))
        if params.get("active", "").lower() in ("1", "true", "yes"):
            qs = qs.filter(active_rank=0)  # type: ignore[misc]  # annotated by selectors.migrations_for_list
        return qs

    def list(self, request: Request, *args, **kwargs) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        selectors.with_progress(page)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        request=s.MigrationRequestSerializer,
        parameters=[IDEMPOTENCY],
        responses={201: s.MigrationDetailSerializer, **ACTION_ERRORS},
        summary="Request a migration (preflight runs now; the copy starts on a worker)",
    )
    def post(self, request: Request) -> Response:
        return run_once(request, lambda: self._request(request), self.handle_exception)

    def _request(self, request: Request) -> Response:
        data = request.data if isinstance(request.data, dict) else {}
        for name in ("hypervisor", "domain"):
            if not isinstance(data.get(name), str) or not data.get(name):
                raise ApiError("invalid", f"Give the {name}'s name.", {name: ["This field is required."]})
        asked = data.get("disks")
        if (
            not isinstance(asked, list)
            or not asked
            or not all(isinstance(d, dict) and isinstance(d.get("target"), str) for d in asked)
        ):
            raise ApiError(
                "invalid", "Choose at least one disk to migrate.", {"disks": ['A list of {"target": …, "destination": …}.']}
            )
        hypervisor = find_hypervisor(data["hypervisor"])
        domain = find_domain(hypervisor, data["domain"])
        inventory = {d.target: d for d in Disk.objects.filter(domain=domain).prefetch_related("layers")}
        missing = [d["target"] for d in asked if d["target"] not in inventory]
        if missing:
            raise NotFound(f"{domain.name} has no disk {', '.join(missing)} (it has {', '.join(sorted(inventory)) or 'none'}).")
        disks = [inventory[d["target"]] for d in asked]
        single = len(disks) == 1
        form_data = {
            "mode": data.get("mode", "shallow"),
            "dest_format": data.get("dest_format", "qcow2"),
            "reuse_destination": data.get("reuse_destination", False),
            "bandwidth_mib": data.get("bandwidth_mib", 0),
            "synchronous_writes": data.get("synchronous_writes", False),
            "granularity": "" if data.get("granularity") is None else data["granularity"],
            "buf_size": "" if data.get("buf_size") is None else data["buf_size"],
        }
        field_to_target = {}
        for item in asked:
            field = "destination" if single else f"destination_{item['target']}"  # the form's own names
            field_to_target[field] = item["target"]
            form_data[field] = item.get("destination") or ""
            if not single:
                form_data[MigrationRequestForm.choose_field(item["target"])] = True
        form = MigrationRequestForm(form_data, hypervisor=hypervisor, disks=disks, single=single)
        if not form.is_valid():
            errors = {f: [str(m) for m in ms] for f, ms in form.errors.items()}
            lifecycle.migration_request_invalid(user=request.user, hypervisor=hypervisor, domain_uuid=domain.uuid, errors=errors)
            fields = _form_fields(errors, field_to_target)
            raise ApiError("invalid", first_message(fields), fields)
        try:
            migration = lifecycle.migration_request(
                user=request.user,
                hypervisor=hypervisor,
                domain_uuid=domain.uuid,
                disks=[lifecycle.DiskRequest(target=t, destination=d) for t, d in form.destinations()],
                **form.lifecycle_kwargs(),
            )
        except Refused as refused:
            refused_field = refused.field
            if refused_field == "destination" and single:
                refused_field = f"disks.{disks[0].target}.destination"
            raise ApiError("refused", refused.message, {refused_field: [refused.message]} if refused_field else {}) from None
        location = reverse("api:migration_detail", args=[migration.pk])
        return migration_body(request, migration.pk, status.HTTP_201_CREATED, {"Location": location})


class MigrationDetail(ApiView):
    perm, doing = "blockmig.view_migration", "Seeing migrations"

    @extend_schema(responses={200: s.MigrationDetailSerializer, **ERRORS}, summary="One migration: progress, disks, timeline")
    def get(self, request: Request, pk: int) -> Response:
        if not Migration.objects.filter(pk=pk).exists():
            raise NotFound(f"No migration #{pk}.")
        return migration_body(request, pk)


class MigrationAction(ApiView):
    """approve / abort / bandwidth: the lifecycle function the page's button calls. A refusal
    keeps the lifecycle's message (and its audit event); its code says why."""

    action_perm = ""

    def post(self, request: Request, pk: int) -> Response:
        return run_once(request, lambda: self._act(request, pk), self.handle_exception)

    def _act(self, request: Request, pk: int) -> Response:
        migration = get_object_or_404(Migration, pk=pk)
        try:
            self.call(request, migration)
        except Refused as refused:
            raise self.refusal(request, migration, refused) from None
        return migration_body(request, pk)

    def call(self, request: Request, migration: Migration) -> None:
        raise NotImplementedError

    def refusal(self, request: Request, migration: Migration, refused: Refused) -> ApiError:
        if not request.user.has_perm(self.action_perm):
            return ApiError("permission_denied", refused.message)
        return ApiError("wrong_state", refused.message)


class MigrationApprove(MigrationAction):
    action_perm = "blockmig.approve_migration"

    @extend_schema(request=None, parameters=[IDEMPOTENCY], responses={200: s.MigrationDetailSerializer, **ACTION_ERRORS},
                   summary="Approve the pivot (an approver who did not request it)")  # fmt: skip
    def post(self, request: Request, pk: int) -> Response:
        return super().post(request, pk)

    def call(self, request: Request, migration: Migration) -> None:
        lifecycle.migration_approve(migration=migration, user=request.user)

    def refusal(self, request: Request, migration: Migration, refused: Refused) -> ApiError:
        if request.user.has_perm(self.action_perm) and migration.requested_by_id == request.user.pk:
            return ApiError("four_eyes", refused.message)
        return super().refusal(request, migration, refused)


class MigrationAbort(MigrationAction):
    action_perm = "blockmig.abort_migration"

    @extend_schema(request=None, parameters=[IDEMPOTENCY], responses={200: s.MigrationDetailSerializer, **ACTION_ERRORS},
                   summary="Abort before the pivot (the guest stays on its source)")  # fmt: skip
    def post(self, request: Request, pk: int) -> Response:
        return super().post(request, pk)

    def call(self, request: Request, migration: Migration) -> None:
        lifecycle.migration_abort(migration=migration, user=request.user)


class MigrationBandwidth(MigrationAction):
    action_perm = "blockmig.change_migration"

    @extend_schema(request=s.BandwidthSerializer, parameters=[IDEMPOTENCY],
                   responses={200: s.MigrationDetailSerializer, **ACTION_ERRORS},
                   summary="Change the copy's bandwidth limit (MiB/s, 0 = unlimited)")  # fmt: skip
    def post(self, request: Request, pk: int) -> Response:
        return super().post(request, pk)

    def call(self, request: Request, migration: Migration) -> None:
        # As typed, like the page: the lifecycle applies preflight's rule and audits a bad value.
        value = request.data.get("bandwidth_mib", "") if isinstance(request.data, dict) else ""
        lifecycle.migration_set_bandwidth(migration=migration, user=request.user, bandwidth_mib=value)

    def refusal(self, request: Request, migration: Migration, refused: Refused) -> ApiError:
        error = super().refusal(request, migration, refused)
        value = request.data.get("bandwidth_mib", "") if isinstance(request.data, dict) else ""
        try:
            check_bandwidth(value)
        except Refused:
            if error.code != "permission_denied":
                return ApiError("invalid", refused.message, {"bandwidth_mib": [refused.message]})
        return error
