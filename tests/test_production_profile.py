"""A safe production profile: DEBUG off by default, no built-in secret key, the TLS switches,
`check --deploy` clean, a Content-Security-Policy the pages keep, strong passwords, and
sign-in throttling with failed sign-ins in the audit trail."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.password_validation import validate_password
from django.contrib.messages import constants
from django.contrib.messages.storage.base import Message
from django.contrib.messages.storage.cookie import CookieStorage
from django.core.exceptions import ValidationError
from django.test import RequestFactory, override_settings
from django.urls import reverse

from blockmig.models import AuditEvent, Migration, MigrationDisk
from blockmig.states import State
from hosts.models import Disk, Domain, Hypervisor

REPO = Path(__file__).resolve().parents[1]
OLD_BUILT_IN_KEY = "blockmig-insecure-dev-key-change-me-in-production"
# What the README's production section documents (the key is any long random value).
PRODUCTION_ENV = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": "k" * 20 + "-a-long-random-value-from-the-secret-store-" + "Zq9" * 8,
    "DJANGO_ALLOWED_HOSTS": "blockmig.example.org",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://blockmig.example.org",
    "DJANGO_SESSION_COOKIE_SECURE": "1",
    "DJANGO_CSRF_COOKIE_SECURE": "1",
    "DJANGO_SECURE_SSL_REDIRECT": "1",
    "DJANGO_SECURE_PROXY_SSL_HEADER": "1",
    "DJANGO_SECURE_HSTS_SECONDS": "31536000",
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "DJANGO_SECURE_HSTS_PRELOAD": "1",
    # The lab's file mailer is development-only (check --deploy says so): production mails.
    "BLOCKMIG_EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
}


def clean_env(**extra) -> dict:
    """This process's environment without any DJANGO_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_") and k != "PYTEST_VERSION"}
    env["DJANGO_SETTINGS_MODULE"] = "blockmig.settings"
    return {**env, **extra}


def settings_in_fresh_process(expression: str, env: dict) -> subprocess.CompletedProcess:
    code = f"import django; django.setup(); from django.conf import settings; print({expression})"
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def test_debug_is_off_unless_asked_for():
    assert settings_in_fresh_process("settings.DEBUG", clean_env()).stdout.strip() == "False"
    assert settings_in_fresh_process("settings.DEBUG", clean_env(DJANGO_DEBUG="1")).stdout.strip() == "True"


def test_no_testserver_in_allowed_hosts_outside_tests():
    hosts = settings_in_fresh_process("settings.ALLOWED_HOSTS", clean_env()).stdout
    assert "testserver" not in hosts and "127.0.0.1" in hosts


def test_without_a_secret_key_and_debug_off_it_refuses_to_start(tmp_path):
    env = clean_env(DJANGO_SECRET_KEY_FILE=str(tmp_path / "missing"))
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "No secret key: set DJANGO_SECRET_KEY, or DJANGO_SECRET_KEY_FILE" in done.stderr


def test_secret_key_is_read_from_the_named_file(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("from-a-file-" + "x" * 50 + "\n")
    done = settings_in_fresh_process("settings.SECRET_KEY", clean_env(DJANGO_SECRET_KEY_FILE=str(key_file)))
    assert done.stdout.strip() == "from-a-file-" + "x" * 50


def test_the_old_built_in_key_is_not_the_key(settings):
    assert settings.SECRET_KEY != OLD_BUILT_IN_KEY and len(settings.SECRET_KEY) >= 50


def test_make_secret_key_creates_a_private_file_once(tmp_path):
    var = tmp_path / "var"
    for _ in range(2):
        subprocess.run(["make", "-s", f"VAR={var}", "secret-key"], cwd=REPO, check=True, capture_output=True, timeout=60)
    key = var / "secret_key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    first = key.read_text()
    subprocess.run(["make", "-s", f"VAR={var}", "secret-key"], cwd=REPO, check=True, capture_output=True, timeout=60)
    assert key.read_text() == first and len(first.strip()) >= 50


def test_messages_cookie_forged_with_the_old_built_in_key_is_ignored(client_for):
    """The attack the issue names: a messages cookie signed with the public constant."""
    script = "<script>alert('forged')</script>"
    with override_settings(SECRET_KEY=OLD_BUILT_IN_KEY):
        storage = CookieStorage(RequestFactory().get("/"))
        forged = storage._encode([Message(constants.ERROR, script)])
    client = client_for("viewer")
    client.cookies["messages"] = forged
    html = client.get(reverse("dashboard")).content.decode()
    assert "forged" not in html


def test_check_deploy_passes_with_the_documented_production_settings():
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO,
        env=clean_env(**PRODUCTION_ENV),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


# -- Content-Security-Policy -------------------------------------------------------------------

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
INLINE_STYLE = re.compile(r"<style\b|\sstyle=|\son[a-z]+=", re.I)


@pytest.fixture
def pages(users):
    host = Hypervisor.objects.create(name="kvm01", uri="qemu:///system", allowed_roots=["/backups"])
    domain = Domain.objects.create(hypervisor=host, uuid="u-1", name="testvm", state="running")
    Disk.objects.create(domain=domain, target="vda", source="/images/vda.qcow2", format="qcow2")
    migration = Migration.objects.create(
        hypervisor=host,
        domain_uuid="u-1",
        domain_name="testvm",
        state=State.COPYING,
        requested_by=users["operator"],
        bytes_done=2**29,
        bytes_total=2**30,
    )
    MigrationDisk.objects.create(
        migration=migration,
        hypervisor=host,
        domain_uuid="u-1",
        target="vda",
        source_path="/images/vda.qcow2",
        destination="/backups/vda.qcow2",
        cur=2**29,
        end=2**30,
    )
    return [
        reverse("dashboard"),
        reverse("hypervisor_list"),
        reverse("hypervisor_detail", args=["kvm01"]),
        reverse("domain_detail", args=["kvm01", "u-1"]),
        reverse("disk_detail", args=["kvm01", "u-1", "vda"]),
        reverse("migration_list"),
        reverse("migration_detail", args=[migration.pk]),
        reverse("audit_list"),
    ]


def test_every_page_carries_a_strict_content_security_policy(client_for, pages):
    client = client_for("operator")
    for url in [*pages, reverse("login")]:
        policy = client.get(url).headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "style-src 'self'" in policy, (url, policy)
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert "frame-ancestors 'none'" in policy


def test_pages_hold_no_inline_script_or_style_the_policy_would_block(client_for, pages):
    client = client_for("operator")
    for url in [*pages, reverse("login")]:
        html = client.get(url).content.decode()
        assert not INLINE_SCRIPT.search(html), (url, INLINE_SCRIPT.search(html).group(0))
        assert not INLINE_STYLE.search(html), (url, INLINE_STYLE.search(html).group(0))


def test_progress_bar_width_is_drawn_without_a_style_attribute(client_for, pages):
    html = client_for("operator").get(pages[6]).content.decode()
    assert 'class="mig-bar__fill" x="0" y="0" height="100%" width="50.0%"' in html


# -- passwords and sign-in throttling ----------------------------------------------------------


@pytest.mark.parametrize("weak", ["blockmig", "123456789012", "password1234"])
def test_weak_passwords_are_refused(weak):
    with pytest.raises(ValidationError):
        validate_password(weak)


def test_a_strong_password_is_accepted():
    validate_password("correct horse battery staple")


def test_failed_sign_ins_are_audited_and_the_sixth_is_locked_out(client, users, settings):
    settings.AXES_FAILURE_LIMIT = 5
    url = reverse("login")
    for _ in range(5):
        response = client.post(url, {"username": "operator", "password": "wrong-password"})
        assert response.status_code in (200, 429)
    # Even the right password is refused now, with a page that says why and what to do.
    operator = users["operator"]
    operator.set_password("correct horse battery staple")
    operator.save()
    response = client.post(url, {"username": "operator", "password": "correct horse battery staple"})
    assert response.status_code == 429
    text = response.content.decode()
    assert "Too many failed sign-ins" in text and "paused for 15 minutes" in text and "axes_reset_username" in text
    failed = AuditEvent.objects.filter(event_type="login_failed")
    assert failed.count() >= 5
    assert {e.details["username"] for e in failed} == {"operator"}
    assert all("wrong-password" not in str(e.details) for e in failed)
    assert AuditEvent.objects.filter(event_type="login_locked_out", details__username="operator").exists()


def test_another_user_from_the_same_address_can_still_sign_in(client, users, settings):
    settings.AXES_FAILURE_LIMIT = 3
    viewer = users["viewer"]
    viewer.set_password("correct horse battery staple")
    viewer.save()
    url = reverse("login")
    for _ in range(4):
        client.post(url, {"username": "operator", "password": "wrong-password"})
    response = client.post(url, {"username": "viewer", "password": "correct horse battery staple"})
    assert response.status_code == 302
