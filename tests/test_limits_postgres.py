"""The copy limits hold when many threads race for slots on PostgreSQL (the database decides,
with the hypervisor's row lock): tests/limits_race_on_postgres.py runs in a pytest of its own
against a fresh database in the private cluster of `make postgres` (127.0.0.1:5439)."""

from __future__ import annotations

import json

from tests.postgres import pytest_on_postgres


def test_slots_never_exceed_the_limits_when_threads_race_on_postgresql(tmp_path):
    done = pytest_on_postgres("tests/limits_race_on_postgres.py", "blockmig_limits", tmp_path, "-s")
    figures = json.loads(next(line for line in done.stdout.splitlines() if line.startswith('{"admitted"')))
    assert figures["worst_on_host"] <= 3 and figures["worst_into_root"] <= 2
    assert figures["admitted"] >= 10
