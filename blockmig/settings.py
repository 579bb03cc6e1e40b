"""Settings for blockmig.

Everything a deployment changes comes from the environment; the defaults are the
one-machine setup that `make run` builds (SQLite under var/, a private Redis).
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("BLOCKMIG_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "blockmig-insecure-dev-key-change-me-in-production")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver").split(",")
CSRF_TRUSTED_ORIGINS = [
    o for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o
]

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
    "django_tasks_db",
    "hosts",
    "blockmig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "blockmig.timezones.UserTimezoneMiddleware",
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

AUTH_PASSWORD_VALIDATORS = []
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
CHANNEL_LAYERS = {
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

TASKS = {
    "default": {
        "BACKEND": "django_tasks_db.DatabaseBackend",
        "QUEUES": ["default", "migrations", "sync"],
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
