"""Continuing an interrupted approval on PostgreSQL, where the plan's row lock is a real
`SELECT … FOR UPDATE` (SQLite's IMMEDIATE transactions serialize writers instead): the
tests of tests/test_plan_continue.py, two presses at once among them, run in a pytest of
their own against a fresh database in the private cluster of `make postgres`."""

from __future__ import annotations

from tests.postgres import pytest_on_postgres


def test_continue_and_two_presses_at_once_on_postgresql(tmp_path):
    pytest_on_postgres("tests/test_plan_continue.py", "blockmig_continue", tmp_path)
