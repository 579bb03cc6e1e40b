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


def throwaway_site(prefix: str, log_level: str = "ERROR") -> Path:
    sys.path.insert(0, str(ROOT))
    var = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["BLOCKMIG_VAR_DIR"] = str(var)
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))  # the site's own key
    atexit.register(shutil.rmtree, var, ignore_errors=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "blockmig.settings")
    os.environ.setdefault("BLOCKMIG_LOG_LEVEL", log_level)

    import django

    django.setup()
    return var
