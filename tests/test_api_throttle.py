"""Rate limits per token: one token's burst is refused with 429, JSON and Retry-After, while
another token of the same user still gets through."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.cache import caches
from django.test import Client
from rest_framework.settings import api_settings

from blockmig.api.throttling import ApiRateThrottle
from blockmig.api.tokens import token_create

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def three_per_minute(monkeypatch):
    rates = {**api_settings.DEFAULT_THROTTLE_RATES, "api": "3/minute"}
    monkeypatch.setattr(ApiRateThrottle, "THROTTLE_RATES", rates)
    caches["api"].clear()
    yield
    caches["api"].clear()


def get(token: str):
    return Client().get("/api/v1/me/", headers={"Authorization": f"Bearer {token}"})


def test_a_burst_gets_429_with_retry_after_and_other_tokens_go_on(users, three_per_minute):
    _, first = token_create(user=users["viewer"], name="one")
    _, second = token_create(user=users["viewer"], name="two")
    assert [get(first).status_code for _ in range(3)] == [200, 200, 200]
    refused = get(first)
    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= 60
    error = refused.json()["error"]
    assert error["code"] == "rate_limited" and "Retry in" in error["message"]
    assert get(second).status_code == 200


def test_outside_pytest_the_counts_live_in_redis():
    """Every daphne must share the counts: the production settings put them in Redis (the
    private one `make services` starts), and a count written there is read back."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_VERSION"}
    env["DJANGO_SECRET_KEY"] = settings.SECRET_KEY
    probe = (
        "import django, os; django.setup(); from django.core.cache import caches; c = caches['api']; "
        "key = f'probe-{os.getpid()}'; c.set(key, 41, 10); c.incr(key); print(type(c).__name__, c.get(key)); c.delete(key)"
    )
    done = subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["RedisCache", "42"]
