"""Which pages may open the console's websockets: the same origins Django's CSRF check trusts.

A browser sends its session cookie with a websocket handshake from any page, so the Origin
header is what stops another site (or another service on another port of the same host)
from reading a user's stream. Channels' AllowedHostsOriginValidator matches host names
only and ignores the scheme and the port; this compares all three.

An Origin is accepted when (scheme, host, port) equals one of:

- the socket's own origin: the Host header (X-Forwarded-Host with USE_X_FORWARDED_HOST),
  if ALLOWED_HOSTS allows it, with https when the connection is secure (wss, or
  SECURE_PROXY_SSL_HEADER says so behind a proxy), as Django's CsrfViewMiddleware does;
- the address this daphne listens on, if ALLOWED_HOSTS allows it;
- an entry of CSRF_TRUSTED_ORIGINS (`https://*.example.com` also matches its subdomains,
  on that scheme and port only).

Anything else, a missing Origin, `null` or a malformed one, is refused before the session
is read (HTTP 403).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]  # scheme, lower-case host (IPv6 without brackets), port


def parse_origin(value: str) -> Origin | None:
    """`https://Example.com` → ("https", "example.com", 443); None if it is not an origin."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") or parts.query or parts.username:
        return None
    return scheme, parts.hostname, port or DEFAULT_PORTS[scheme]


def _headers(scope: dict) -> dict[bytes, str]:
    # Later duplicates win; a browser sends each of these once.
    return {name.lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}


def _allowed_hosts() -> list[str]:
    if settings.DEBUG and not settings.ALLOWED_HOSTS:
        return [".localhost", "127.0.0.1", "[::1]"]  # what HttpRequest.get_host allows then
    return settings.ALLOWED_HOSTS


def _secure(scope: dict, headers: dict[bytes, str]) -> bool:
    if settings.SECURE_PROXY_SSL_HEADER:
        meta_name, secure_value = settings.SECURE_PROXY_SSL_HEADER
        name = meta_name.removeprefix("HTTP_").replace("_", "-").lower().encode()
        if name in headers:
            return headers[name].split(",", 1)[0].strip() == secure_value
    return scope.get("scheme") == "wss"


def own_origins(scope: dict) -> set[Origin]:
    """The origins this very socket was opened on: its Host and the daphne's address."""
    headers = _headers(scope)
    scheme = "https" if _secure(scope, headers) else "http"
    candidates = []
    host = headers.get(b"x-forwarded-host") if settings.USE_X_FORWARDED_HOST else None
    host = host or headers.get(b"host")
    if host:
        candidates.append(host.split(",", 1)[0].strip())
    server = scope.get("server")
    if server and server[1]:
        address = str(server[0])
        candidates.append(f"[{address}]:{server[1]}" if ":" in address else f"{address}:{server[1]}")
    origins = set()
    for netloc in candidates:
        domain, _port = split_domain_port(netloc)
        if domain and validate_host(domain, _allowed_hosts()):
            origin = parse_origin(f"{scheme}://{netloc}")
            if origin:
                origins.add(origin)
    return origins


def trusted(origin: Origin) -> bool:
    """Whether CSRF_TRUSTED_ORIGINS lists `origin`, exactly or as a subdomain of a `*.` entry."""
    scheme, host, port = origin
    for entry in settings.CSRF_TRUSTED_ORIGINS:
        wildcard = "://*." in entry
        pattern = parse_origin(entry.replace("://*.", "://", 1) if wildcard else entry)
        if pattern is None or pattern[0] != scheme or pattern[2] != port:
            continue
        if host == pattern[1] or (wildcard and is_same_domain(host, "." + pattern[1])):
            return True
    return False


def origin_allowed(scope: dict) -> bool:
    value = _headers(scope).get(b"origin")
    origin = parse_origin(value) if value else None
    return origin is not None and (origin in own_origins(scope) or trusted(origin))


async def refuse_handshake(receive, send, code: int | None = None) -> None:
    """Refuse a websocket handshake: daphne answers HTTP 403 (a close code before the accept
    reaches only test clients). Done here rather than by a consumer: a consumer's every
    message costs a trip to the database thread all consumers of the process share."""
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close", **({"code": code} if code else {})})


class OriginValidator:
    """ASGI middleware: websockets from an origin not allowed above never reach the app."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await refuse_handshake(receive, send)
        return await self.application(scope, receive, send)
