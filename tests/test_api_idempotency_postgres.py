"""Idempotency on PostgreSQL: tests/test_api_idempotency.py (two concurrent requests with one
key among them) runs again in a pytest of its own against a fresh database in the private
cluster of `make postgres` (127.0.0.1:5439), where the unique constraint on (user, key) is
PostgreSQL's, with real concurrent transactions rather than SQLite's one writer."""

from __future__ import annotations

from tests.postgres import pytest_on_postgres


def test_idempotency_holds_on_postgresql(tmp_path):
    pytest_on_postgres("tests/test_api_idempotency.py", "blockmig_idem", tmp_path)
