"""Hypervisor URIs that could run a program, read a file or reach a socket are refused
before libvirt sees them: in the form, in the Django admin, and in the adapter itself, so a
row saved by any other route (or before this check existed) is refused at sync time too."""

import os
import stat
from pathlib import Path

import pytest
from django.urls import reverse

from hosts.adapter import ConnectFailure, HostConnection, opening
from hosts.models import Domain, Hypervisor
from hosts.sync.hypervisor import hypervisor_sync
from hosts.testnode import node_uri, write_node
from hosts.uris import UnsafeURI, parse_uri, uri_problem

SECRET = "root:$y$j9T$not-a-real-hash-but-a-secret:19000:0:99999:7:::"


@pytest.fixture
def marker_script(tmp_path) -> tuple[Path, Path]:
    """A program that leaves a marker file if anything runs it (as libvirt's ssh command)."""
    marker = tmp_path / "marker"
    script = tmp_path / "evil.sh"
    script.write_text(f"#!/bin/sh\necho ran > {marker}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, marker


@pytest.fixture
def nodes_dir(tmp_path, settings) -> Path:
    directory = tmp_path / "nodes"
    directory.mkdir()
    settings.BLOCKMIG_TEST_DRIVER_DIR = directory
    return directory


@pytest.fixture
def secret_file(tmp_path) -> Path:
    """A readable file outside the node directory whose first line must never be shown."""
    path = tmp_path / "shadow"
    path.write_text(SECRET + "\n")
    return path


def form_data(**overrides) -> dict:
    data = {"name": "evil", "uri": "test:///default", "allowed_roots": "/srv/images", "enabled": "on"}
    data.update(overrides)
    return data


def refused(uri: str) -> str:
    with pytest.raises(UnsafeURI) as caught:
        parse_uri(uri)
    return str(caught.value)


# ---- which URIs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "qemu:///system",
        "qemu+ssh://kvm01/system",
        "qemu+ssh://root@kvm01.example.org/system",
        "qemu+ssh://deploy_user@kvm01:2222/system",
        "qemu+tls://kvm01.example.org/system",
        "qemu+tcp://10.0.0.7:16509/system",
        "qemu+tcp://[::1]:16509/system",
        "test:///default",
    ],
)
def test_the_transports_blockmig_uses_are_accepted(uri):
    assert uri_problem(uri) is None


@pytest.mark.parametrize(
    ("uri", "name"),
    [
        ("qemu+ssh://localhost/system?command=/tmp/x", "command"),
        ("qemu+ssh://kvm01/system?netcat=/tmp/x", "netcat"),
        ("qemu+ssh://kvm01/system?proxy=netcat", "proxy"),
        ("qemu+ssh://kvm01/system?socket=/etc/shadow", "socket"),
        ("qemu+ssh://kvm01/system?name=test:///etc/shadow", "name"),
        ("qemu+ssh://kvm01/system?mode=legacy", "mode"),
        ("qemu+ssh://kvm01/system?no_tty=1", "no_tty"),
        ("qemu+ssh://kvm01/system?no_verify=1", "no_verify"),
        ("qemu+ssh://kvm01/system?known_hosts=/tmp/kh", "known_hosts"),
        ("qemu+ssh://kvm01/system?sshauth=privkey", "sshauth"),
        ("qemu+ssh://kvm01/system?libssh_hostkey_verify=0", "libssh_hostkey_verify"),
        ("qemu+ssh://kvm01/system?COMMAND=/tmp/x", "COMMAND"),  # libvirt matches names ignoring case
        ("qemu+ssh://kvm01/system?comm%61nd=/tmp/x", "command"),  # libvirt decodes names
        ("qemu+tls://kvm01/system?pkipath=/root", "pkipath"),
        ("qemu+tls://kvm01/system?no_verify=1", "no_verify"),
        ("qemu+tls://kvm01/system?tls_priority=NORMAL", "tls_priority"),
        ("qemu+tcp://kvm01/system?socket=/run/x", "socket"),
        ("qemu:///system?socket=/tmp/probe", "socket"),
        ("test:///default?anything=1", "anything"),
    ],
)
def test_every_parameter_outside_the_allow_list_is_refused_by_name(uri, name):
    assert f"The URI parameter “{name}” is not allowed" in refused(uri)


def test_a_semicolon_cannot_smuggle_a_parameter_libvirt_would_see():
    # libvirt splits "no_verify=1;command=/x" at ";" (no "&" follows); urllib would not.
    assert "“;”" in refused("qemu+ssh://kvm01/system?no_verify=1;command=/tmp/x")


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("qemu+unix:///system?socket=/any/path", "Unsupported scheme “qemu+unix”"),
        ("qemu+libssh2://kvm01/system", "Unsupported scheme “qemu+libssh2”"),
        ("QEMU+SSH://kvm01/system?command=/tmp/x", "Unsupported scheme “QEMU+SSH”"),
        ("qemu:///session", "A QEMU URI ends in /system"),
        ("qemu+ssh://kvm01/session", "A QEMU URI ends in /system"),
        ("qemu+ssh://-oProxyCommand=x/system", "is not a host name blockmig accepts"),
        ("qemu+ssh://-l@kvm01/system", "is not a user name blockmig accepts"),
        ("qemu+tcp://root@kvm01/system", "takes no user name"),
        ("qemu+tcp://kvm01:99999/system", "is not a port"),
        ("qemu://kvm01/system", "names no host"),
        ("test://localhost/default", "names no host"),
        ("qemu+ssh://kvm01/system#x", "a fragment"),
        ("qemu+ssh://kvm01/system?keyfile=/a b", "a space or control character"),
        ("qemu:///system\n", "a space or control character"),
    ],
)
def test_schemes_hosts_and_paths_outside_the_rules_are_refused(uri, message):
    assert message in refused(uri)


def test_keyfile_only_under_the_configured_key_directory(tmp_path, settings):
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "id_ed25519").write_text("key")
    (tmp_path / "elsewhere").write_text("key")
    os.symlink(tmp_path / "elsewhere", keys / "link")

    settings.BLOCKMIG_SSH_KEY_DIR = None
    assert "BLOCKMIG_SSH_KEY_DIR" in refused(f"qemu+ssh://kvm01/system?keyfile={keys}/id_ed25519")

    settings.BLOCKMIG_SSH_KEY_DIR = str(keys)
    assert uri_problem(f"qemu+ssh://kvm01/system?keyfile={keys}/id_ed25519") is None
    for outside in (tmp_path / "elsewhere", keys / "link", f"{keys}/../elsewhere", "/etc/shadow"):
        message = refused(f"qemu+ssh://kvm01/system?keyfile={outside}")
        assert "“keyfile” must name a file under" in message
    assert "no such file" in refused(f"qemu+ssh://kvm01/system?keyfile={keys}/missing")
    assert "“command”" in refused(f"qemu+ssh://kvm01/system?keyfile={keys}/id_ed25519&command=/tmp/x")


# ---- command= never runs -----------------------------------------------------------------


def test_without_the_check_the_marker_script_does_run(marker_script, monkeypatch):
    """The control experiment: the URI below really runs its command through libvirt, so the
    tests that find no marker would notice a check that stopped refusing it."""
    script, marker = marker_script
    monkeypatch.setattr(opening, "uri_problem", lambda uri: None)
    with pytest.raises(ConnectFailure):
        with HostConnection(f"qemu+ssh://localhost/system?command={script}", timeout=10):
            pass
    assert marker.exists()


def test_adapter_refuses_command_before_connecting(marker_script):
    script, marker = marker_script
    with pytest.raises(ConnectFailure) as caught:
        with HostConnection(f"qemu+ssh://localhost/system?command={script}", timeout=10):
            pass
    assert caught.value.kind == "bad_uri" and "“command”" in caught.value.message
    assert not marker.exists()


def test_form_refuses_command_and_nothing_runs(client_for, marker_script):
    script, marker = marker_script
    response = client_for("admin").post(reverse("hypervisor_add"), form_data(uri=f"qemu+ssh://localhost/system?command={script}"))
    assert response.status_code == 200
    assert "The URI parameter “command” is not allowed" in response.content.decode()
    assert not Hypervisor.objects.exists() and not marker.exists()


def test_django_admin_uses_the_same_checks(client_for, marker_script):
    script, marker = marker_script
    client = client_for("admin")
    response = client.post(reverse("admin:hosts_hypervisor_add"), form_data(uri=f"qemu+ssh://localhost/system?command={script}"))
    assert response.status_code == 200
    assert "The URI parameter “command” is not allowed" in response.content.decode()
    assert not Hypervisor.objects.exists() and not marker.exists()
    response = client.post(reverse("admin:hosts_hypervisor_add"), form_data(allowed_roots="/etc"))
    assert "“/etc” is a system directory" in response.content.decode()
    assert not Hypervisor.objects.exists()


def test_django_admin_add_checks_the_connection_and_stores_facts(client_for):
    response = client_for("admin").post(reverse("admin:hosts_hypervisor_add"), form_data(name="viaadmin"))
    assert response.status_code == 302
    host = Hypervisor.objects.get(name="viaadmin")
    assert host.driver == "TEST" and host.allowed_roots == ["/srv/images"]


def test_sync_of_a_row_saved_behind_the_forms_back_runs_nothing(db, marker_script):
    script, marker = marker_script
    hypervisor = Hypervisor.objects.create(name="evil", uri=f"qemu+ssh://localhost/system?command={script}")
    result = hypervisor_sync(hypervisor)
    assert not result.ok and "“command”" in result.error
    hypervisor.refresh_from_db()
    assert "“command”" in hypervisor.last_sync_error
    assert not marker.exists()


def test_refresh_of_such_a_row_runs_nothing(client_for, marker_script):
    script, marker = marker_script
    Hypervisor.objects.create(name="evil", uri=f"qemu+ssh://localhost/system?command={script}")
    response = client_for("operator").post(reverse("hypervisor_refresh", args=["evil"]), follow=True)
    assert "The URI parameter “command” is not allowed" in response.content.decode()
    assert not marker.exists()


# ---- test:/// files -----------------------------------------------------------------------


def test_node_files_under_the_configured_directory_are_accepted(db, nodes_dir):
    node = nodes_dir / "node with space.xml"
    write_node(node, 3)
    hypervisor = Hypervisor.objects.create(name="fake", uri=node_uri(node))
    assert hypervisor_sync(hypervisor).ok
    assert Domain.objects.filter(hypervisor=hypervisor).count() == 3


@pytest.mark.parametrize("how", ["plain", "dotdot", "escaped", "symlink"])
def test_a_file_outside_the_node_directory_is_refused_without_its_content(how, client_for, nodes_dir, secret_file):
    uri = {
        "plain": f"test://{secret_file}",
        "dotdot": f"test://{nodes_dir}/../{secret_file.name}",
        "escaped": f"test://{nodes_dir}/%2e%2e/{secret_file.name}",
        "symlink": f"test://{nodes_dir}/link.xml",
    }[how]
    os.symlink(secret_file, nodes_dir / "link.xml")
    response = client_for("admin").post(reverse("hypervisor_add"), form_data(uri=uri))
    html = response.content.decode()
    assert "A test:/// file must be a node file under" in html
    assert "not-a-real-hash" not in html
    assert not Hypervisor.objects.exists()


def test_etc_shadow_is_refused_without_its_content(client_for):
    response = client_for("admin").post(reverse("hypervisor_add"), form_data(uri="test:///etc/shadow"))
    html = response.content.decode()
    assert "A test:/// file must be a node file under" in html
    first_line = Path("/etc/shadow").read_text().splitlines()[0] if os.access("/etc/shadow", os.R_OK) else "root:"
    assert first_line not in html and "root:" not in html


def test_libvirts_error_for_a_bad_node_file_is_not_shown(client_for, nodes_dir):
    """A file inside the directory that is not node XML: libvirt's own message quotes its
    first line, and blockmig says what is wrong without it."""
    (nodes_dir / "notxml.xml").write_text(SECRET + "\n")
    response = client_for("admin").post(reverse("hypervisor_add"), form_data(uri=f"test://{nodes_dir}/notxml.xml"))
    html = response.content.decode()
    assert "test driver could not load" in html
    assert "not-a-real-hash" not in html
    assert not Hypervisor.objects.exists()


def test_without_a_node_directory_only_the_default_test_host_is_allowed(settings, tmp_path):
    settings.BLOCKMIG_TEST_DRIVER_DIR = None
    node = tmp_path / "node.xml"
    write_node(node, 1)
    assert "BLOCKMIG_TEST_DRIVER_DIR" in refused(node_uri(node))
    assert uri_problem("test:///default") is None
