"""`Idempotency-Key`: a POST that carries one is carried out once per (user, key).

The first request stores a record (the unique constraint on (user, key) decides which of
two concurrent requests is first), runs, and stores its response; a retry gets that same
response back, marked `Idempotent-Replayed: true`. The same key with another method, path
or body is refused (422), and a retry that arrives while the first still runs waits for it.
A server error (5xx) stores nothing, so the retry runs again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response

from blockmig.api.auth import signed_in_user
from blockmig.api.errors import ApiError
from blockmig.api.models import IdempotencyRecord

HEADER = "Idempotency-Key"
MAX_KEY = 255
POLL_SECONDS = 0.1


def fingerprint(request: Request) -> str:
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()


def _replay(record: IdempotencyRecord) -> Response:
    return Response(record.response, status=record.status, headers={"Idempotent-Replayed": "true"})


def _claim(request: Request, key: str, print_: str) -> IdempotencyRecord | None:
    """The new record if this request is the first with the key, else None."""
    try:
        with transaction.atomic():
            return IdempotencyRecord.objects.create(user=signed_in_user(request), key=key, fingerprint=print_)
    except IntegrityError:
        return None


def _wait_for(request: Request, key: str, print_: str) -> Response:
    """The stored response of the first request with this key (waiting while it runs)."""
    deadline = time.monotonic() + settings.BLOCKMIG_API_IDEMPOTENCY_WAIT_SECONDS
    while True:
        record = IdempotencyRecord.objects.filter(user=signed_in_user(request), key=key).first()
        if record is None:
            # The first request failed with a server error and let the key go: run this one.
            raise _Released()
        if record.fingerprint != print_:
            raise ApiError(
                "idempotency_key_reused",
                f"The Idempotency-Key “{key}” was already used for a different request; use a new key for a new request.",
            )
        if record.status is not None:
            return _replay(record)
        if time.monotonic() > deadline:
            raise ApiError("idempotency_in_progress", f"A request with Idempotency-Key “{key}” is still running: retry shortly.")
        time.sleep(POLL_SECONDS)


class _Released(Exception):
    pass


def run_once(request: Request, perform: Callable[[], Response], on_refusal: Callable[[APIException], Response]) -> Response:
    """perform() unless a request with the same key (same user) was performed already. A
    refusal (an APIException, made a response by `on_refusal`) is stored like a success:
    the retry of a refused request is refused the same way, without a second audit event."""
    key = request.headers.get(HEADER, "")
    if not key:
        return perform()
    if len(key) > MAX_KEY or not key.isprintable():
        raise ApiError(
            "invalid", f"An Idempotency-Key is up to {MAX_KEY} printable characters.", {HEADER: ["Too long or not printable."]}
        )
    print_ = fingerprint(request)
    keep = timedelta(hours=settings.BLOCKMIG_API_IDEMPOTENCY_HOURS)
    # Every expired record goes, whoever's: a user who stopped calling leaves none behind, and
    # the range on the indexed created_at usually finds nothing to delete.
    IdempotencyRecord.objects.filter(created_at__lt=timezone.now() - keep).delete()
    for _ in range(3):
        record = _claim(request, key, print_)
        if record is None:
            try:
                return _wait_for(request, key, print_)
            except _Released:
                continue
        try:
            try:
                response = perform()
            except APIException as refusal:
                response = on_refusal(refusal)
        except BaseException:
            record.delete()
            raise
        if response.status_code >= 500:
            record.delete()
        else:
            IdempotencyRecord.objects.filter(pk=record.pk).update(status=response.status_code, response=response.data)
        return response
    raise ApiError("idempotency_in_progress", f"Requests with Idempotency-Key “{key}” keep failing: retry shortly.")
