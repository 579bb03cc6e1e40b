"""The OpenAPI schema: served at /api/v1/schema/, browsable at /api/v1/docs/ from local
static files, and the committed docs/openapi.yaml is what the code generates (CI fails on
drift, saying how to regenerate it)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.request import urlopen

import yaml
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiYamlRenderer
from drf_spectacular.validation import validate_schema

from blockmig.api.errors import CODES
from blockmig.states import State

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "docs" / "openapi.yaml"
REGENERATE = ".venv/bin/python manage.py spectacular --file docs/openapi.yaml"


def generated() -> str:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    validate_schema(schema)
    return OpenApiYamlRenderer().render(schema, renderer_context={}).decode()


def test_committed_schema_matches_the_code(db):
    assert COMMITTED.exists(), f"docs/openapi.yaml is missing: run {REGENERATE}"
    assert COMMITTED.read_text() == generated(), f"docs/openapi.yaml drifted from the code: run {REGENERATE} and commit it"


def test_schema_lists_every_endpoint_and_the_state_values(db):
    schema = yaml.safe_load(generated())
    paths = set(schema["paths"])
    for path in (
        "/api/v1/hypervisors/",
        "/api/v1/migrations/",
        "/api/v1/migrations/{id}/approve/",
        "/api/v1/audit/",
        "/api/v1/tokens/",
    ):
        assert path in paths
    assert set(schema["components"]["schemas"]["MigrationStateEnum"]["enum"]) == set(State.values)
    assert schema["components"]["securitySchemes"]["apiToken"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "bm_<prefix>_<secret>",
    }


def test_schema_and_docs_are_served_without_a_cdn(live_server):
    """Through a real server (static files included): every script, style and icon of the
    docs page comes from this origin, and the page has no inline script or style for the
    CSP to block."""
    schema = urlopen(f"{live_server.url}/api/v1/schema/").read()
    assert schema.startswith(b"openapi: 3")
    with urlopen(f"{live_server.url}/api/v1/docs/") as response:
        docs = response.read().decode()
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    sources = re.findall(r'(?:src|href)="([^"]+)"', docs)
    assert any("swagger-ui-bundle.js" in s for s in sources) and all(s.startswith("/") for s in sources), sources
    assert "<style" not in docs and not re.search(r"<script(?![^>]*\bsrc=)", docs)
    for asset in sources:
        with urlopen(live_server.url + asset.replace("&amp;", "&")) as response:
            assert response.status == 200 and response.read(), asset


def test_every_error_code_is_documented():
    text = (REPO / "docs" / "api.md").read_text()
    missing = [code for code in CODES if f"`{code}`" not in text]
    assert not missing, f"docs/api.md does not document {missing}"
