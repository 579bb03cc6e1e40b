"""A throwaway blockmig site for a benchmark: its own var dir (removed at exit), its own
secret key, Django set up. Import it before anything that needs Django's settings."""

import atexit
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def throwaway_site(
    prefix: str,
    log_level: str = "ERROR",
    *,
    env: dict[str, str] | None = None,
    own_sqlite: bool = False,
    migrate: bool = False,
    remove_at_exit: bool = True,
) -> Path:
    """The site's var dir (a temp dir named `prefix…`). `env` is set as given (a bench's own
    channel prefix, DJANGO_DEBUG, a forced log level); `log_level` only when the caller's
    environment names none. `own_sqlite`: the database is a SQLite file in the var dir,
    whatever DATABASE_URL said (and the site's subprocesses inherit it); `migrate`: its
    tables are made."""
    sys.path.insert(0, str(ROOT))
    var = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["BLOCKMIG_VAR_DIR"] = str(var)
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))  # the site's own key
    if remove_at_exit:
        atexit.register(shutil.rmtree, var, ignore_errors=True)
    os.environ.update(env or {})
    if own_sqlite:
        os.environ["DATABASE_URL"] = f"sqlite:///{var / 'db.sqlite3'}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "blockmig.settings")
    os.environ.setdefault("BLOCKMIG_LOG_LEVEL", log_level)

    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
    return var
