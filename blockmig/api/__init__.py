"""The REST API under /api/v1/ (Django REST framework, schema by drf-spectacular).

It is another door to the same rules: every write goes through `blockmig.lifecycle`, the
request through `blockmig.forms.migration_request.MigrationRequestForm` and
`blockmig.preflight`, so a refusal reads exactly as the pages show it. See docs/api.md.
"""
