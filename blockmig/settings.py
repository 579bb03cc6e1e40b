"""Settings for blockmig.

Everything a deployment changes comes from the environment; the defaults are the
one-machine setup that `make run` builds (SQLite under var/, a private Redis).
"""

import os
import secrets
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("BLOCKMIG_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, "1" if default else "0").strip().lower() in ("1", "true", "yes", "on")


def _env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# Off unless asked for: with DEBUG on, an error page shows settings and every URL pattern.
DEBUG = _env_bool("DJANGO_DEBUG")

# The key signs sessions and cookies (messages among them), so it never has a built-in value:
# DJANGO_SECRET_KEY, else the file DJANGO_SECRET_KEY_FILE names, else <var>/secret_key (which
# `make run` and `make test` create once, mode 0600). Every web and worker process of one
# deployment must share it.
SECRET_KEY_FILE = Path(os.environ.get("DJANGO_SECRET_KEY_FILE", VAR_DIR / "secret_key"))


def _secret_key() -> str:
    if os.environ.get("DJANGO_SECRET_KEY"):
        return os.environ["DJANGO_SECRET_KEY"]
    try:
        key = SECRET_KEY_FILE.read_text().strip()
    except OSError:
        key = ""
    if key:
        return key
    if DEBUG:
        warnings.warn(
            f"No secret key (DJANGO_SECRET_KEY or {SECRET_KEY_FILE}): using a random one for this process.", stacklevel=2
        )
        return secrets.token_urlsafe(50)
    raise ImproperlyConfigured(
        f"No secret key: set DJANGO_SECRET_KEY, or DJANGO_SECRET_KEY_FILE to a file holding one "
        f"(or create {SECRET_KEY_FILE} with `make secret-key`)."
    )


SECRET_KEY = _secret_key()
# Under pytest, Django's test set-up adds "testserver" itself.
ALLOWED_HOSTS = _env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = _env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

# Behind TLS (documented in the README's production section): every switch off by default so
# the plain-HTTP lab keeps working.
SESSION_COOKIE_SECURE = _env_bool("DJANGO_SESSION_COOKIE_SECURE")
CSRF_COOKIE_SECURE = _env_bool("DJANGO_CSRF_COOKIE_SECURE")
SECURE_SSL_REDIRECT = _env_bool("DJANGO_SECURE_SSL_REDIRECT")
if _env_bool("DJANGO_SECURE_PROXY_SSL_HEADER"):
    # Only behind a proxy that sets X-Forwarded-Proto itself and strips it from clients.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_SECURE_HSTS_SECONDS", "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS")
SECURE_HSTS_PRELOAD = _env_bool("DJANGO_SECURE_HSTS_PRELOAD")
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# Content-Security-Policy (Django's own, since 6.0): scripts, styles and sockets from this
# origin only, no inline script or style anywhere (the progress bar is an SVG for that).
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "object-src": [CSP.NONE],
}

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "axes",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "hosts",
    "blockmig",
    "blockmig.api",
    "blockmig.notify",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "blockmig.timezones.UserTimezoneMiddleware",
    # Last, as django-axes asks: it turns a lockout into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "blockmig.urls"
ASGI_APPLICATION = "blockmig.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=0,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + a generous busy timeout let the web process and the workers share the file.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Login throttling (django-axes): after BLOCKMIG_LOGIN_FAILURES failed logins for one user
# name from one address, that pair is locked out for BLOCKMIG_LOGIN_COOLOFF_MINUTES.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = int(os.environ.get("BLOCKMIG_LOGIN_FAILURES", "5"))
AXES_COOLOFF_TIME = timedelta(minutes=float(os.environ.get("BLOCKMIG_LOGIN_COOLOFF_MINUTES", "15")))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "blockmig.login_audit.lockout_response"
AXES_VERBOSE = False
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"
# daphne itself serves /static/ unless a proxy in front does (set BLOCKMIG_SERVE_STATIC=0 then).
BLOCKMIG_SERVE_STATIC = os.environ.get("BLOCKMIG_SERVE_STATIC", "1") == "1"

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6390/0")
CHANNEL_LAYERS: dict[str, dict[str, Any]] = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # channels_redis waits for messages in 5 s blocking reads; redis-py 8 would time
            # those out at 5 s and drop every idle socket, so allow a longer read.
            "hosts": [{"address": REDIS_URL, "socket_timeout": 30}],
            "prefix": os.environ.get("BLOCKMIG_CHANNEL_PREFIX", "blockmig"),
        },
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("BLOCKMIG_LOG_LEVEL", "INFO")},
}

# How long a hypervisor's data may age before the inventory marks it stale.
BLOCKMIG_SYNC_INTERVAL = int(os.environ.get("BLOCKMIG_SYNC_INTERVAL", "30"))
# Seconds a libvirt connection attempt may take before it counts as a timeout.
BLOCKMIG_CONNECT_TIMEOUT = float(os.environ.get("BLOCKMIG_CONNECT_TIMEOUT", "10"))
# Hosts synced at the same time (each holds one libvirt connection and, while it stores, one
# database connection): one slow or dead host then holds up only its own thread.
BLOCKMIG_SYNC_WORKERS = int(os.environ.get("BLOCKMIG_SYNC_WORKERS", "16"))
# Keepalive on every libvirt connection: a probe every INTERVAL s, closed after COUNT unanswered.
BLOCKMIG_KEEPALIVE_INTERVAL = int(os.environ.get("BLOCKMIG_KEEPALIVE_INTERVAL", "5"))
BLOCKMIG_KEEPALIVE_COUNT = int(os.environ.get("BLOCKMIG_KEEPALIVE_COUNT", "3"))
# test:/// URIs may name node files only in this directory (hosts.uris); test:///default is always allowed.
BLOCKMIG_TEST_DRIVER_DIR = Path(os.environ.get("BLOCKMIG_TEST_DRIVER_DIR", VAR_DIR / "test-nodes"))
# qemu+ssh's keyfile= may name files only under this directory; unset: keyfile= is refused.
BLOCKMIG_SSH_KEY_DIR = os.environ.get("BLOCKMIG_SSH_KEY_DIR") or None
# Storage roots inside system directories (e.g. /var/lib/libvirt/images) chosen on purpose.
BLOCKMIG_ALLOW_SYSTEM_ROOTS = [p for p in os.environ.get("BLOCKMIG_ALLOW_SYSTEM_ROOTS", "").split(":") if p]
# Where `make run` builds the demo lab (seed chain, testvm, backups/).
BLOCKMIG_LAB_DIR = Path(os.environ.get("BLOCKMIG_LAB_DIR", VAR_DIR / "lab"))

# --- migration engine (issue 3) ---------------------------------------------------------
# A worker holds a migration under a fenced lease it renews every heartbeat; a lease that
# runs out means the worker died, and the next poll of any worker takes the migration over.
# Irreversible steps need half a lease to spare, so keep heartbeat < lease / 2.
BLOCKMIG_LEASE_SECONDS = float(os.environ.get("BLOCKMIG_LEASE_SECONDS", "6"))
BLOCKMIG_HEARTBEAT_SECONDS = float(os.environ.get("BLOCKMIG_HEARTBEAT_SECONDS", "1.5"))
# How often each worker looks for migrations to claim besides its Redis wake-ups (one
# indexed SELECT): the bound on noticing an expired lease.
BLOCKMIG_POLL_SECONDS = float(os.environ.get("BLOCKMIG_POLL_SECONDS", "1"))
# Migrations one worker process drives at once (each is mostly waiting on libvirt).
BLOCKMIG_WORKER_SLOTS = int(os.environ.get("BLOCKMIG_WORKER_SLOTS", "8"))
# Take the undefine/copy/redefine path even where libvirt has the transient-job flag.
BLOCKMIG_FORCE_UNDEFINE = os.environ.get("BLOCKMIG_FORCE_UNDEFINE", "0") == "1"
# Under pytest the SQLite test database is a file (one per test run) so a real worker
# process can share it with the tests.
if os.environ.get("PYTEST_VERSION") and DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}

# --- websockets (issue 9) -----------------------------------------------------------------
# An open socket re-checks its session, its user (still active) and its permission before
# every frame and at least this often; a socket whose session ended closes with 4401, one
# whose user lost the permission with 4403.
BLOCKMIG_WS_REAUTH_SECONDS = float(os.environ.get("BLOCKMIG_WS_REAUTH_SECONDS", "30"))
# Open sockets one user may hold, counted in Redis across all daphne processes; further
# handshakes are refused (HTTP 403) before the user or the page is read.
BLOCKMIG_WS_MAX_PER_USER = int(os.environ.get("BLOCKMIG_WS_MAX_PER_USER", "20"))
# A socket's place in that count lapses this long after its daphne last renewed it (every
# third of it), so the sockets of a daphne that crashed stop counting by themselves.
BLOCKMIG_WS_SLOT_SECONDS = float(os.environ.get("BLOCKMIG_WS_SLOT_SECONDS", "60"))
# Handshakes of one user that one daphne runs at once (up to the first frame); the user's
# others wait their turn, so other users' handshakes are not stuck behind a burst of theirs.
BLOCKMIG_WS_HANDSHAKES_PER_USER = int(os.environ.get("BLOCKMIG_WS_HANDSHAKES_PER_USER", "2"))
# --- REST API (issue 12; docs/api.md) -------------------------------------------------------
# Requests per token (or per session user) and window: "<n>/<second|minute|hour|day>"; the
# token-creation call (user name + password) has its own, slower bucket per address.
BLOCKMIG_API_RATE = os.environ.get("BLOCKMIG_API_RATE", "300/minute")
BLOCKMIG_API_LOGIN_RATE = os.environ.get("BLOCKMIG_API_LOGIN_RATE", "10/minute")
# How long an Idempotency-Key is remembered, and how long a retry waits for the first
# request with its key to finish before it is told to come back.
BLOCKMIG_API_IDEMPOTENCY_HOURS = float(os.environ.get("BLOCKMIG_API_IDEMPOTENCY_HOURS", "24"))
BLOCKMIG_API_IDEMPOTENCY_WAIT_SECONDS = float(os.environ.get("BLOCKMIG_API_IDEMPOTENCY_WAIT_SECONDS", "10"))
# The rate-limit counts: Redis, shared by every daphne (one process's locmem under pytest).
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "api": (
        {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "blockmig-api"}
        if os.environ.get("PYTEST_VERSION") or os.environ.get("BLOCKMIG_API_CACHE") == "locmem"
        else {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": os.environ.get("BLOCKMIG_CHANNEL_PREFIX", "blockmig") + "-api",
        }
    ),
}
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "blockmig.api.auth.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_THROTTLE_CLASSES": ["blockmig.api.throttling.ApiRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api": BLOCKMIG_API_RATE, "api_login": BLOCKMIG_API_LOGIN_RATE},
    "EXCEPTION_HANDLER": "blockmig.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "blockmig API",
    "DESCRIPTION": "Live disk migration on libvirt/QEMU: inventory, migrations, approvals, audit. See docs/api.md.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {"MigrationStateEnum": "blockmig.states.State", "PlanStateEnum": "blockmig.plans.states.PlanState"},
}

# --- notifications, metrics and health (issue 12; docs/operations.md) --------------------
# Links in emails and webhook bodies point here (the address people open the console at).
BLOCKMIG_BASE_URL = os.environ.get("BLOCKMIG_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
# Email through Django's mailers: the lab writes each mail to a file under var/mail/; a
# deployment sets BLOCKMIG_EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend and EMAIL_*.
_MAIL_BACKEND = os.environ.get("BLOCKMIG_EMAIL_BACKEND", "django.core.mail.backends.filebased.EmailBackend")
_MAIL_OPTIONS: dict = {}
if _MAIL_BACKEND.endswith("filebased.EmailBackend"):
    _MAIL_OPTIONS = {"file_path": os.environ.get("BLOCKMIG_EMAIL_FILE_PATH", str(VAR_DIR / "mail"))}
elif _MAIL_BACKEND.endswith("smtp.EmailBackend"):
    _MAIL_OPTIONS = {
        "host": os.environ.get("EMAIL_HOST", "localhost"),
        "port": int(os.environ.get("EMAIL_PORT", "25")),
        "username": os.environ.get("EMAIL_HOST_USER", ""),
        "password": os.environ.get("EMAIL_HOST_PASSWORD", ""),
        "use_tls": _env_bool("EMAIL_USE_TLS"),
        "use_ssl": _env_bool("EMAIL_USE_SSL"),
        "timeout": float(os.environ.get("EMAIL_TIMEOUT", "10")),
    }
MAILERS = {"default": {"BACKEND": _MAIL_BACKEND, "OPTIONS": _MAIL_OPTIONS}}
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "blockmig@localhost")
# A delivery that fails is tried again after RETRY, 2×RETRY, 4×RETRY … seconds (at most
# RETRY_MAX apart), and marked failed after MAX_ATTEMPTS attempts.
BLOCKMIG_NOTIFY_MAX_ATTEMPTS = int(os.environ.get("BLOCKMIG_NOTIFY_MAX_ATTEMPTS", "8"))
BLOCKMIG_NOTIFY_RETRY_SECONDS = float(os.environ.get("BLOCKMIG_NOTIFY_RETRY_SECONDS", "30"))
BLOCKMIG_NOTIFY_RETRY_MAX_SECONDS = float(os.environ.get("BLOCKMIG_NOTIFY_RETRY_MAX_SECONDS", "3600"))
# How often each worker's sender looks for due deliveries, and how long one webhook may take.
BLOCKMIG_NOTIFY_POLL_SECONDS = float(os.environ.get("BLOCKMIG_NOTIFY_POLL_SECONDS", "2"))
BLOCKMIG_WEBHOOK_TIMEOUT = float(os.environ.get("BLOCKMIG_WEBHOOK_TIMEOUT", "5"))
# /metrics: a request with `Authorization: Bearer <METRICS_TOKEN>` (when set) or from an
# address in METRICS_ALLOW (comma-separated addresses or networks; default this machine only).
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
METRICS_ALLOW = _env_list("METRICS_ALLOW", "127.0.0.1/32,::1/128")
# A worker counts as alive for /readyz while its Redis heartbeat (renewed every third of
# this) has not lapsed.
BLOCKMIG_WORKER_ALIVE_SECONDS = float(os.environ.get("BLOCKMIG_WORKER_ALIVE_SECONDS", "15"))
