"""Personal API tokens: made, found and revoked here only.

A token reads `bm_<prefix>_<secret>`. The prefix is public and unique, so one indexed
lookup finds the row; the sha256 of the whole token is compared in constant time. The
plain token exists only in the response that creates it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from blockmig.api.models import ApiToken
from blockmig.audit import audit_record
from blockmig.errors import Refused

TOKEN_RE = re.compile(r"^bm_([a-z0-9]{8})_([A-Za-z0-9_-]{20,100})$")
# last_used_at is written at most this often per token, so a busy script does not turn
# every read into a database write.
LAST_USED_GRANULARITY = timedelta(seconds=60)
MAX_NAME = 64


class TokenRefused(Exception):
    """A token that does not let its bearer in. `code` is the API's error code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_create(*, user, name: str, expires_at: datetime | None = None) -> tuple[ApiToken, str]:
    """A new token for `user`; returns the row and the plain token (shown once)."""
    name = (name or "").strip()
    if not name:
        raise Refused("Give the token a name that says what it is for (e.g. “nightly job”).", "name")
    if len(name) > MAX_NAME:
        raise Refused(f"A token name may have at most {MAX_NAME} characters.", "name")
    if expires_at is not None and expires_at <= timezone.now():
        raise Refused("The expiry must be in the future (or leave it empty for no expiry).", "expires_at")
    for _ in range(5):
        prefix = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(8))
        plain = f"bm_{prefix}_{secrets.token_urlsafe(32)}"
        try:
            with transaction.atomic():
                token = ApiToken.objects.create(
                    user=user, name=name, prefix=prefix, secret_hash=_hash(plain), expires_at=expires_at
                )
                audit_record(
                    event_type="token_created",
                    actor=user,
                    details={"token": name, "prefix": prefix, "expires_at": expires_at.isoformat() if expires_at else None},
                )
            return token, plain
        except IntegrityError:
            if ApiToken.objects.filter(user=user, name=name, revoked_at__isnull=True).exists():
                raise Refused(
                    f"You already have a token named “{name}”: choose another name or revoke that one.", "name"
                ) from None
    raise RuntimeError("could not find a free token prefix")  # 36^8 prefixes: not in practice


def token_revoke(*, token: ApiToken, user) -> ApiToken:
    """Revoke one of `user`'s own tokens (at once: the next request with it is refused)."""
    if token.user_id != user.pk:
        raise Refused("You can revoke only your own tokens.")
    with transaction.atomic():
        changed = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        if changed:
            audit_record(event_type="token_revoked", actor=user, details={"token": token.name, "prefix": token.prefix})
    token.refresh_from_db()
    return token


def token_authenticate(plain: str) -> ApiToken:
    """The live token `plain` names (its user joined in), or TokenRefused saying why not."""
    match = TOKEN_RE.match(plain.strip())
    if not match:
        raise TokenRefused("token_invalid", "The API token is malformed: it should look like bm_xxxxxxxx_….")
    token = ApiToken.objects.select_related("user").filter(prefix=match.group(1)).first()
    if token is None or not hmac.compare_digest(token.secret_hash, _hash(plain.strip())):
        raise TokenRefused("token_invalid", "The API token is not known: create one on your profile page (/profile/).")
    if token.revoked_at is not None:
        raise TokenRefused("token_revoked", f"The API token “{token.name}” was revoked: create a new one on /profile/.")
    if token.is_expired:
        raise TokenRefused("token_expired", f"The API token “{token.name}” has expired: create a new one on /profile/.")
    if not token.user.is_active:
        raise TokenRefused("token_invalid", "The token's user account is disabled.")
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_GRANULARITY:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token
