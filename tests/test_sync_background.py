"""The background sync: the sync_loop command."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from hosts.models import Domain, Hypervisor
from hosts.testnode import node_uri, write_node

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def node(tmp_path) -> Path:
    path = tmp_path / "node.xml"
    write_node(path, 12)
    return path


@pytest.mark.django_db(transaction=True)
def test_sync_loop_once_syncs_enabled_hosts_and_skips_disabled_ones(node, capsys):
    enabled = Hypervisor.objects.create(name="on", uri=node_uri(node))
    disabled = Hypervisor.objects.create(name="off", uri=node_uri(node), enabled=False)

    call_command("sync_loop", "--once")

    assert Domain.objects.filter(hypervisor=enabled).count() == 12
    assert not Domain.objects.filter(hypervisor=disabled).exists()
    assert "on: 12 domains, 12 re-read" in capsys.readouterr().out


def test_sync_loop_finishes_its_round_and_exits_on_sigterm(tmp_path):
    # The process has its own settings: the node file goes where they allow test:/// files
    # (the default directory under BLOCKMIG_VAR_DIR, also named by the environment).
    nodes = tmp_path / "var" / "test-nodes"
    nodes.mkdir(parents=True)
    node = nodes / "node.xml"
    write_node(node, 12)
    env = {
        **os.environ,
        "BLOCKMIG_VAR_DIR": str(tmp_path / "var"),
        "DJANGO_SECRET_KEY": "sync-loop-test-" + "k" * 50,
        "BLOCKMIG_TEST_DRIVER_DIR": str(nodes),
        "DJANGO_SETTINGS_MODULE": "blockmig.settings",
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, cwd=ROOT)
    subprocess.run(
        [
            *manage,
            "shell",
            "-c",
            f"from hosts.models import Hypervisor; Hypervisor.objects.create(name='fake', uri='{node_uri(node)}')",
        ],
        env=env,
        check=True,
        cwd=ROOT,
    )
    loop = subprocess.Popen(
        [*manage, "sync_loop", "--interval", "3600"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        first_line = loop.stdout.readline()
        assert first_line.startswith("fake: 12 domains")
        loop.send_signal(signal.SIGTERM)
        # Sitting out the hour-long interval would time this out: the signal ended the wait.
        rest, _ = loop.communicate(timeout=20)
    finally:
        if loop.poll() is None:
            loop.kill()
    assert loop.returncode == 0
    assert "sync loop stopped" in rest
