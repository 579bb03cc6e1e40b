"""Failed sign-ins and lockouts in the audit trail (issue 9: who tried, from where)."""

from __future__ import annotations

from axes.signals import user_locked_out
from django.conf import settings
from django.contrib.auth.signals import user_login_failed
from django.dispatch import receiver
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render

from blockmig.api.errors import error_body
from blockmig.audit import audit_record


def _address(request) -> str:
    return request.META.get("REMOTE_ADDR", "") if request is not None else ""


@receiver(user_login_failed, dispatch_uid="blockmig-login-failed")
def record_failed_login(sender, credentials: dict, request=None, **kwargs) -> None:
    # Django passes the credentials with the password already masked; keep only the name.
    audit_record(event_type="login_failed", details={"username": credentials.get("username", ""), "address": _address(request)})


@receiver(user_locked_out, dispatch_uid="blockmig-login-locked-out")
def record_lockout(sender, request=None, username: str = "", ip_address: str = "", **kwargs) -> None:
    audit_record(event_type="login_locked_out", details={"username": username or "", "address": ip_address or _address(request)})


def lockout_response(request, original_response, credentials) -> HttpResponse:
    """django-axes' lockout page (AXES_LOCKOUT_CALLABLE), saying for how long and what to do."""
    minutes = round(settings.AXES_COOLOFF_TIME.total_seconds() / 60)
    if request.path.startswith("/api/"):
        # A token asked for with a password (blockmig login): the API's own refusal shape.
        message = f"Too many failed sign-ins for this user from this address: try again in {minutes} minutes, or ask an admin."
        return JsonResponse(error_body("locked_out", message), status=429, headers={"Retry-After": str(minutes * 60)})
    context = {"failure_limit": settings.AXES_FAILURE_LIMIT, "minutes": minutes}
    return render(request, "registration/locked_out.html", context, status=429)
