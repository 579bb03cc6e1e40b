"""Every refusal the API gives is one JSON shape:

    {"error": {"code": "<stable_code>", "message": "<what to fix>", "fields": {"<field>": ["…"]}}}

`code` is stable (scripts branch on it; docs/api.md lists them); `message` is the sentence
the console shows for the same refusal.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

# code → (HTTP status, when). The table docs/api.md shows; tests check each is documented.
CODES: dict[str, tuple[int, str]] = {
    "invalid": (400, "A field is missing or wrong (the form's own message is in `fields`)."),
    "malformed_request": (400, "The body is not valid JSON, or a query parameter cannot be read."),
    "not_authenticated": (401, "No token and no session: send `Authorization: Bearer bm_…`."),
    "token_invalid": (401, "The token is malformed or unknown."),
    "token_expired": (401, "The token's expiry has passed: create a new one on /profile/."),
    "token_revoked": (401, "The token was revoked on /profile/."),
    "authentication_failed": (401, "The user name or password is wrong (creating a token)."),
    "permission_denied": (403, "Your roles do not allow this; the message names the role that would."),
    "csrf_failed": (403, "A session request without the CSRF token (the console's own calls)."),
    "four_eyes": (403, "You requested this migration, so another approver must approve it."),
    "not_found": (404, "No such hypervisor, domain, disk, migration or token."),
    "method_not_allowed": (405, "This URL does not take that method."),
    "wrong_state": (409, "The migration's or plan's state does not allow this now (the message says which state)."),
    "refused": (409, "Preflight or the host refused the request; nothing was changed."),
    "too_soon": (409, "The plan may still be requesting its migrations: retry at the time the message names."),
    "idempotency_in_progress": (409, "A request with this Idempotency-Key is still running: retry in a moment."),
    "unsupported_media_type": (415, "Send JSON (Content-Type: application/json)."),
    "idempotency_key_reused": (422, "This Idempotency-Key was used for a different request."),
    "rate_limited": (429, "Too many requests for this token: wait Retry-After seconds."),
    "locked_out": (429, "Too many failed sign-ins (creating a token): django-axes' cool-off, Retry-After seconds."),
}


class ApiError(exceptions.APIException):
    """A refusal with its code, message and field errors."""

    def __init__(self, code: str, message: str, fields: dict[str, list[str]] | None = None, http_status: int | None = None):
        self.status_code = http_status or CODES[code][0]
        self.code = code
        self.message = message
        self.fields = fields or {}
        super().__init__(message, code)


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def _field_errors(detail) -> dict[str, list[str]]:
    if isinstance(detail, dict):
        out: dict[str, list[str]] = {}
        for name, value in detail.items():
            if isinstance(value, dict):
                for inner, messages in _field_errors(value).items():
                    out[f"{name}.{inner}"] = messages
            else:
                items = value if isinstance(value, list) else [value]
                flat: list[str] = []
                for item in items:
                    if isinstance(item, dict):
                        for inner, messages in _field_errors(item).items():
                            out[f"{name}.{inner}"] = messages
                    else:
                        flat.append(str(item))
                if flat:
                    out["non_field" if name == "non_field_errors" else name] = flat
        return out
    if isinstance(detail, list):
        return {"non_field": [str(d) for d in detail]}
    return {"non_field": [str(detail)]}


def _first_message(fields: dict[str, list[str]], fallback: str) -> str:
    for name, messages in fields.items():
        if messages:
            return messages[0] if name == "non_field" else f"{name}: {messages[0]}"
    return fallback


def _translate(exc: Exception) -> tuple[str, str, dict]:
    if isinstance(exc, ApiError):
        return exc.code, exc.message, exc.fields
    if isinstance(exc, exceptions.ValidationError):
        fields = _field_errors(exc.detail)
        return "invalid", _first_message(fields, "The request is invalid."), fields
    if isinstance(exc, exceptions.Throttled):
        # DRF sets Throttled.wait in __init__; djangorestframework-stubs 3.18.1 leaves it out.
        seconds = exc.wait  # type: ignore[attr-defined]
        wait = f" Retry in {int(seconds + 0.999)} s." if seconds is not None else ""
        return "rate_limited", f"Too many requests for this token.{wait}", {}
    if isinstance(exc, exceptions.NotAuthenticated):
        return "not_authenticated", "Sign in first: send “Authorization: Bearer <token>” (create one on /profile/).", {}
    if isinstance(exc, exceptions.AuthenticationFailed):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) and codes in CODES else "authentication_failed"
        return code, str(exc.detail), {}
    if isinstance(exc, exceptions.PermissionDenied | DjangoPermissionDenied):
        message = str(getattr(exc, "detail", "") or exc) or "Your roles do not allow this."
        return ("csrf_failed" if message.startswith("CSRF Failed") else "permission_denied"), message, {}
    if isinstance(exc, exceptions.NotFound | Http404):
        message = str(getattr(exc, "detail", "") or exc)
        return "not_found", message if message and message != "Not found." else "Not found.", {}
    if isinstance(exc, exceptions.MethodNotAllowed):
        return "method_not_allowed", str(exc.detail), {}
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return "unsupported_media_type", str(exc.detail), {}
    if isinstance(exc, exceptions.ParseError):
        return "malformed_request", str(exc.detail), {}
    return "invalid", str(getattr(exc, "detail", exc)), {}


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler for the status and headers (WWW-Authenticate, Retry-After), our body."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or None)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a real server error: Django's 500 handling and logging
    code, message, fields = _translate(exc)
    response.data = error_body(code, message, fields)
    if code == "not_authenticated" and response.status_code == status.HTTP_403_FORBIDDEN:
        response.status_code = status.HTTP_401_UNAUTHORIZED
    return response
