"""The API's views: thin, like the pages'. Reads come from the selectors the pages use;
every write goes through blockmig.lifecycle (which decides and audits each refusal) or
blockmig.api.tokens. Each view runs with blockmig.audit.AUDIT_VIA naming the token (or the
console session), so the audit trail says the action came through the API."""

from __future__ import annotations

from contextvars import Token
from datetime import timedelta

from django.contrib.auth import authenticate
from django.contrib.auth.decorators import login_not_required
from django.db.models import Q, QuerySet
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, permissions, status
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination, PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from blockmig import lifecycle, selectors
from blockmig.api import serializers as s
from blockmig.api.auth import signed_in_user, via_of
from blockmig.api.errors import ApiError
from blockmig.api.idempotency import run_once
from blockmig.api.models import ApiToken
from blockmig.api.throttling import TokenCreateThrottle
from blockmig.api.tokens import token_create, token_revoke
from blockmig.audit import AUDIT_VIA
from blockmig.errors import Refused
from blockmig.forms import AuditFilterForm, MigrationRequestForm
from blockmig.models import Migration
from blockmig.preflight import check_bandwidth
from blockmig.states import State
from hosts import selectors as host_selectors
from hosts.models import Disk, Domain, Hypervisor
from hosts.roles import ROLE_FOR, user_roles

ERRORS = {400: s.ErrorSerializer, 401: s.ErrorSerializer, 403: s.ErrorSerializer, 404: s.ErrorSerializer}
ACTION_ERRORS = {**ERRORS, 409: s.ErrorSerializer, 422: s.ErrorSerializer}
IDEMPOTENCY = OpenApiParameter(
    "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, description="Carry the request out once per key (per user)."
)


def needs(perm: str, doing: str) -> str:
    """The 403 message the pages give: “Seeing migrations needs the viewer role.”"""
    return f"{doing} needs the {ROLE_FOR.get(perm, 'right')} role."


class HasRole(permissions.BasePermission):
    """The view's `perm` (a model permission that hosts.roles gives to roles)."""

    def has_permission(self, request: Request, view) -> bool:
        perm = getattr(view, "perm", None)
        if perm is None or not request.user or not request.user.is_authenticated:
            return perm is None
        if request.user.has_perm(perm):
            return True
        self.message = needs(perm, view.doing)
        return False


class ApiView(APIView):
    """Every API view: the token's audit marker for the request, no login redirect (the
    API answers 401 itself), the role check."""

    permission_classes = [permissions.IsAuthenticated, HasRole]
    perm: str | None = None
    doing = ""

    @classmethod
    def as_view(cls, **initkwargs):
        return login_not_required(super().as_view(**initkwargs))

    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        self._via: Token[str] | None = AUDIT_VIA.set(via_of(request))

    def finalize_response(self, request: Request, response, *args, **kwargs):
        marker = getattr(self, "_via", None)
        if marker is not None:
            AUDIT_VIA.reset(marker)
            self._via = None
        return super().finalize_response(request, response, *args, **kwargs)


class Pages(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class AuditCursor(CursorPagination):
    """Newest first; a cursor stays right while new events arrive (unlike page numbers)."""

    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000
    ordering = ("-created_at", "-id")


# ---- who am I, tokens ---------------------------------------------------------------------


class MeView(ApiView):
    @extend_schema(responses={200: s.MeSerializer, **ERRORS}, summary="The calling user, roles and how they signed in")
    def get(self, request: Request) -> Response:
        return Response({"username": request.user.get_username(), "roles": user_roles(request.user), "via": via_of(request)})


class TokenListCreateView(ApiView):
    """List your tokens; create one with a user name and password (what `blockmig login` does)."""

    def get_permissions(self):
        return [permissions.AllowAny()] if self.request.method == "POST" else super().get_permissions()

    def get_throttles(self):
        return [TokenCreateThrottle()] if self.request.method == "POST" else super().get_throttles()

    @extend_schema(responses={200: s.TokenSerializer(many=True), **ERRORS}, summary="Your API tokens")
    def get(self, request: Request) -> Response:
        tokens = ApiToken.objects.filter(user=signed_in_user(request))
        return Response(s.TokenSerializer(tokens, many=True).data)

    @extend_schema(
        request=s.TokenCreateSerializer,
        responses={201: s.TokenCreatedSerializer, **ERRORS, 429: s.ErrorSerializer},
        summary="Create a token with your user name and password (the token is shown once)",
        auth=[],
    )
    def post(self, request: Request) -> Response:
        form = s.TokenCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        user = authenticate(request._request, username=data["username"], password=data["password"])
        if user is None:
            raise ApiError("authentication_failed", "That user name and password do not match an active account.")
        days = data.get("expires_in_days")
        try:
            token, plain = token_create(
                user=user, name=data["name"], expires_at=timezone.now() + timedelta(days=days) if days else None
            )
        except Refused as refused:
            raise ApiError("invalid", refused.message, {refused.field or "non_field": [refused.message]}) from None
        return Response({**s.TokenSerializer(token).data, "token": plain}, status=status.HTTP_201_CREATED)


class TokenRevokeView(ApiView):
    @extend_schema(responses={200: s.TokenSerializer, **ERRORS}, summary="Revoke one of your tokens (at once)")
    def delete(self, request: Request, prefix: str) -> Response:
        token = ApiToken.objects.filter(user=signed_in_user(request), prefix=prefix).first()
        if token is None:
            raise NotFound(f"You have no token with the prefix {prefix}.")
        return Response(s.TokenSerializer(token_revoke(token=token, user=request.user)).data)


# ---- inventory --------------------------------------------------------------------------


def find_hypervisor(name: str) -> Hypervisor:
    hypervisor = Hypervisor.objects.filter(name=name).first()
    if hypervisor is None:
        raise NotFound(f"No hypervisor named {name}: `blockmig hosts` lists them.")
    return hypervisor


def find_domain(hypervisor: Hypervisor, ident: str) -> Domain:
    """A domain by UUID, or by name where the name is unique on the host."""
    domains = Domain.objects.filter(hypervisor=hypervisor)
    found = domains.filter(uuid=ident.lower()).first()
    if found is not None:
        return found
    named = list(domains.filter(name=ident)[:2])
    if len(named) > 1:
        raise ApiError(
            "invalid",
            f"{hypervisor.name} has more than one domain named {ident}: give its UUID.",
            {"domain": ["Ambiguous name."]},
        )
    if not named:
        raise NotFound(f"No domain {ident} on {hypervisor.name} (as of the last sync): check the name, or refresh the host.")
    return named[0]


class HypervisorList(ApiView, generics.ListAPIView):
    perm, doing = "hosts.view_hypervisor", "Seeing hypervisors"
    serializer_class = s.HypervisorSerializer
    pagination_class = Pages

    def get_queryset(self) -> QuerySet[Hypervisor]:
        return host_selectors.hypervisors_with_counts().order_by("name")


class HypervisorDetail(ApiView, generics.RetrieveAPIView):
    perm, doing = "hosts.view_hypervisor", "Seeing hypervisors"
    serializer_class = s.HypervisorSerializer

    def get_object(self) -> Hypervisor:
        hypervisor = host_selectors.hypervisors_with_counts().filter(name=self.kwargs["name"]).first()
        if hypervisor is None:
            raise NotFound(f"No hypervisor named {self.kwargs['name']}: `blockmig hosts` lists them.")
        return hypervisor


@extend_schema(parameters=[OpenApiParameter("q", OpenApiTypes.STR, description="Part of the name, or the start of the UUID.")])
class DomainList(ApiView, generics.ListAPIView):
    perm, doing = "hosts.view_domain", "Seeing domains"
    serializer_class = s.DomainSerializer
    pagination_class = Pages

    def get_queryset(self) -> QuerySet[Domain]:
        hypervisor = find_hypervisor(self.kwargs["name"])
        return host_selectors.hypervisor_domains(hypervisor, self.request.query_params.get("q", "")).select_related("hypervisor")


class DomainDetail(ApiView, generics.RetrieveAPIView):
    perm, doing = "hosts.view_domain", "Seeing domains"
    serializer_class = s.DomainDetailSerializer

    def get_object(self) -> Domain:
        hypervisor = find_hypervisor(self.kwargs["name"])
        return host_selectors.domain_with_disks(hypervisor, find_domain(hypervisor, self.kwargs["domain"]).uuid)


class DiskDetail(ApiView, generics.RetrieveAPIView):
    """One disk with its backing chain (active layer first; `chain_text` reads base ← … ← active)."""

    perm, doing = "hosts.view_disk", "Seeing disks"
    serializer_class = s.DiskSerializer

    def get_object(self) -> Disk:
        hypervisor = find_hypervisor(self.kwargs["name"])
        domain = find_domain(hypervisor, self.kwargs["domain"])
        disk = Disk.objects.filter(domain=domain, target=self.kwargs["target"]).first()
        if disk is None:
            targets = ", ".join(domain.disks.values_list("target", flat=True)) or "none"
            raise NotFound(f"{domain.name} has no disk {self.kwargs['target']} (it has {targets}).")
        return host_selectors.disk_with_chain(hypervisor, domain.uuid, disk.target)


# ---- migrations ---------------------------------------------------------------------------


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


def _first(fields: dict[str, list[str]]) -> str:
    for messages in fields.values():
        if messages:
            return messages[0]
    return "The request is invalid."


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
            raise ApiError("invalid", _first(fields), fields)
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


# ---- audit ----------------------------------------------------------------------------------


@extend_schema(
    parameters=[
        OpenApiParameter("host", OpenApiTypes.STR, description="The hypervisor's name."),
        OpenApiParameter("domain", OpenApiTypes.STR, description="Part of the domain's name."),
        OpenApiParameter("user", OpenApiTypes.STR, description="A user name; “-” for the engine's own steps."),
        OpenApiParameter("state", OpenApiTypes.STR, enum=State.values, description="The state reached."),
        OpenApiParameter("event_type", OpenApiTypes.STR),
        OpenApiParameter("migration", OpenApiTypes.INT),
        OpenApiParameter("since", OpenApiTypes.DATETIME, description="ISO 8601; without a zone: UTC."),
        OpenApiParameter("until", OpenApiTypes.DATETIME, description="ISO 8601; without a zone: UTC."),
    ]
)
class AuditList(ApiView, generics.ListAPIView):
    """The audit trail with the audit page's filters, newest first, cursor-paginated."""

    perm, doing = "blockmig.view_auditevent", "Reading the audit trail"
    serializer_class = s.AuditEventSerializer
    pagination_class = AuditCursor

    def get_queryset(self):
        form = AuditFilterForm(self.request.query_params, **selectors.audit_filter_choices())
        if not form.is_valid():
            fields = {("non_field" if k == "__all__" else k): [str(m) for m in v] for k, v in form.errors.items()}
            raise ApiError("invalid", f"Fix the filters first: {_first(fields)}", fields)
        return selectors.audit_events(**form.filters())
