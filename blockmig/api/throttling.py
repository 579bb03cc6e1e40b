"""Rate limits: per token (each token its own bucket), per user for the console's session,
per address for the anonymous token-creation call. The counts live in the `api` cache
(Redis in production, so every daphne shares them; locmem under pytest)."""

from __future__ import annotations

from django.core.cache import caches
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from blockmig.api.models import ApiToken


class ApiRateThrottle(SimpleRateThrottle):
    scope = "api"

    def __init__(self) -> None:
        self.cache = caches["api"]
        super().__init__()

    def get_cache_key(self, request: Request, view) -> str:
        if isinstance(request.auth, ApiToken):
            ident = f"token-{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            ident = f"addr-{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


class TokenCreateThrottle(ApiRateThrottle):
    """Creating a token with a password is a sign-in: slower bucket (django-axes also locks
    out repeated failures)."""

    scope = "api_login"
