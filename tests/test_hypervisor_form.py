"""Adding and editing a hypervisor: the URI is checked, the host must answer, the roots
must be absolute directories, and a host that fails any of it is not saved."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from blockmig.models import AuditEvent
from hosts.forms import HypervisorForm, parse_roots
from hosts.models import Hypervisor

UNREACHABLE = "qemu+tcp://127.0.0.1:1/system"


def post(client, url_name, data, *args):
    return client.post(reverse(url_name, args=args), data)


def form_data(**overrides) -> dict:
    data = {"name": "testhost", "uri": "test:///default", "allowed_roots": "/srv/images\n", "enabled": "on"}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_good_uri_saves_and_stores_facts(client_for):
    client = client_for("admin")
    response = post(client, "hypervisor_add", form_data())
    assert response.status_code == 302 and response["Location"] == reverse("hypervisor_detail", args=["testhost"])
    host = Hypervisor.objects.get(name="testhost")
    assert host.uri == "test:///default" and host.allowed_roots == ["/srv/images"] and host.enabled
    assert host.driver == "TEST" and host.virt_type == "test" and host.hostname and host.libvirt_version
    page = client.get(response["Location"]).content.decode()
    assert "Added testhost: connected (TEST" in page


@pytest.mark.parametrize(
    "uri, message",
    [
        ("not a uri", "is not a libvirt URI: it needs a scheme"),
        ("http://kvm01/system", "Unsupported scheme “http”"),
        ("qemu+ssh:///system", "A qemu+ssh URI needs a host name"),
        ("qemu:///nonsense", "A QEMU URI ends in /system"),
    ],
)
def test_bad_uri_shows_why_and_saves_nothing(uri, message, client_for):
    response = post(client_for("admin"), "hypervisor_add", form_data(uri=uri))
    assert response.status_code == 200
    html = response.content.decode()
    assert message in html
    assert 'id="id_uri_errors"' in html  # the error sits next to its field
    assert not Hypervisor.objects.exists()


def test_unreachable_host_shows_why_and_saves_nothing(client_for):
    response = post(client_for("admin"), "hypervisor_add", form_data(uri=UNREACHABLE))
    assert response.status_code == 200
    html = response.content.decode()
    assert f"Cannot reach {UNREACHABLE}" in html
    assert not Hypervisor.objects.exists()
    uri_input = html[html.rindex("<input", 0, html.index('id="id_uri"')) :].split(">", 1)[0]
    assert "autofocus" in uri_input  # the cursor lands on the field to fix


def test_unreachable_new_uri_on_edit_keeps_the_old_one(client_for):
    Hypervisor.objects.create(name="lab", uri="test:///default")
    response = post(client_for("admin"), "hypervisor_edit", form_data(name="lab", uri=UNREACHABLE), "lab")
    assert response.status_code == 200 and "Cannot reach" in response.content.decode()
    assert Hypervisor.objects.get(name="lab").uri == "test:///default"


def test_editing_roots_of_an_unreachable_host_needs_no_connection(client_for):
    """Only a new host, a new URI or re-enabling is tested: an admin can still fix the roots
    (or disable) a host that is down right now."""
    Hypervisor.objects.create(name="down", uri=UNREACHABLE, allowed_roots=["/old"])
    response = post(client_for("admin"), "hypervisor_edit", form_data(name="down", uri=UNREACHABLE, allowed_roots="/new"), "down")
    assert response.status_code == 302
    assert Hypervisor.objects.get(name="down").allowed_roots == ["/new"]
    response = post(client_for("admin"), "hypervisor_edit", form_data(name="down", uri=UNREACHABLE, enabled=None), "down")
    assert response.status_code == 302 and not Hypervisor.objects.get(name="down").enabled
    # Turning it back on tests the connection again.
    response = post(client_for("admin"), "hypervisor_edit", form_data(name="down", uri=UNREACHABLE), "down")
    assert response.status_code == 200 and "Cannot reach" in response.content.decode()
    assert not Hypervisor.objects.get(name="down").enabled


@pytest.mark.parametrize(
    "roots, message",
    [
        ("srv/images", "“srv/images” is not absolute: start it with /."),
        ("/srv/../etc", "“/srv/../etc” contains “..”: name the directory itself."),
        ("/", "“/” would allow destinations anywhere on the host"),
    ],
)
def test_bad_roots_are_refused(roots, message, client_for):
    response = post(client_for("admin"), "hypervisor_add", form_data(allowed_roots=roots))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Hypervisor.objects.exists()


def test_roots_are_normalised_and_deduplicated():
    assert parse_roots(" /srv//images/ \n\n/srv/images\n/var/lib/./backups\n") == ["/srv/images", "/var/lib/backups"]
    assert parse_roots("") == []


def test_roots_round_trip_through_the_edit_form(client_for):
    Hypervisor.objects.create(name="lab", uri="test:///default", allowed_roots=["/a", "/b"])
    html = client_for("admin").get(reverse("hypervisor_edit", args=["lab"])).content.decode()
    assert ">\n/a\n/b</textarea>" in html


def test_reserved_and_duplicate_names_are_refused(client_for):
    response = post(client_for("admin"), "hypervisor_add", form_data(name="add"))
    assert "“add” is reserved" in response.content.decode()
    Hypervisor.objects.create(name="lab", uri="test:///default")
    response = post(client_for("admin"), "hypervisor_add", form_data(name="lab"))
    assert "Hypervisor with this Name already exists." in response.content.decode()
    assert Hypervisor.objects.count() == 1


def test_form_is_keyboard_friendly(client_for):
    html = client_for("admin").get(reverse("hypervisor_add")).content.decode()
    assert '<label for="id_name">' in html and "autofocus" in html.split('id="id_name"')[0].rsplit("<input", 1)[1]
    assert 'aria-describedby="id_allowed_roots_helptext"' in html
    assert "One absolute directory per line." in html


def test_auto_pivot_is_not_set_by_the_hypervisor_form(client_for, users):
    # The pivot policy is the migration app's, set and audited on its own page
    # (test_host_pivot_policy: test_admin_sets_auto_pivot_and_it_is_audited).
    assert "auto_pivot" not in HypervisorForm(user=users["admin"]).fields
    Hypervisor.objects.create(name="lab", uri="test:///default")
    response = post(client_for("admin"), "hypervisor_edit", form_data(name="lab", auto_pivot="on"), "lab")
    assert response.status_code == 302
    assert Hypervisor.objects.get(name="lab").auto_pivot is False
    assert not AuditEvent.objects.filter(event_type="policy_changed").exists()
    detail = client_for("viewer").get(reverse("hypervisor_detail", args=["lab"])).content.decode()
    assert f'href="{reverse("hypervisor_policy", args=["lab"])}"' in detail


# ---- storage roots that would let a copy land among the system's files ---------------------


@pytest.mark.parametrize(
    "roots, message",
    [
        ("/etc", "“/etc” is a system directory"),
        ("/etc/foo", "“/etc/foo” lies in the system directory /etc"),
        ("/usr/local/images", "“/usr/local/images” lies in the system directory /usr"),
        ("/lib64", "“/lib64” is a system directory"),
        ("/proc/self", "lies in the system directory /proc"),
        ("/root/images", "lies in the system directory /root"),
        ("/boot", "“/boot” is a system directory"),
        ("/var/lib/libvirt/images", "lies in the system directory /var/lib/libvirt"),
        ("/var", "“/var” contains the system directory /var/"),
        ("//", "“/” would allow destinations anywhere on the host"),
    ],
)
def test_system_directories_are_refused_as_roots(roots, message, client_for):
    response = post(client_for("admin"), "hypervisor_add", form_data(allowed_roots=f"/srv/images\n{roots}"))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Hypervisor.objects.exists()


def test_storage_directories_stay_allowed():
    assert parse_roots("/var/tmp/blockmig\n/srv/backups\n/var/lib/blockmig\n/home/images") == [
        "/var/tmp/blockmig",
        "/srv/backups",
        "/var/lib/blockmig",
        "/home/images",
    ]


def test_a_system_directory_chosen_on_purpose_is_allowed(settings):
    settings.BLOCKMIG_ALLOW_SYSTEM_ROOTS = ["/var/lib/libvirt/images"]
    assert parse_roots("/var/lib/libvirt/images\n/var/lib/libvirt/images/pool2") == [
        "/var/lib/libvirt/images",
        "/var/lib/libvirt/images/pool2",
    ]
    with pytest.raises(ValidationError, match="/var/lib/libvirt"):
        parse_roots("/var/lib/libvirt")  # the rest of libvirt's state is still off limits
    with pytest.raises(ValidationError, match="/etc"):
        parse_roots("/etc")


def test_a_root_reached_through_a_symlink_is_refused_on_the_local_host(client_for, tmp_path):
    real = tmp_path / "real-images"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    # Only the roots change, so the form does not connect to the local libvirtd.
    Hypervisor.objects.create(name="local", uri="qemu:///system", allowed_roots=["/srv/old"])
    response = post(
        client_for("admin"),
        "hypervisor_edit",
        form_data(name="local", uri="qemu:///system", allowed_roots=f"{tmp_path}/link"),
        "local",
    )
    assert response.status_code == 200
    assert f"“{tmp_path}/link” is really {real} on this host" in response.content.decode()
    assert Hypervisor.objects.get(name="local").allowed_roots == ["/srv/old"]
    # A symlink further up the path counts too, for directories that do not exist yet.
    with pytest.raises(ValidationError, match="is really"):
        parse_roots(f"{tmp_path}/link/new", local=True)

    response = post(
        client_for("admin"), "hypervisor_edit", form_data(name="local", uri="qemu:///system", allowed_roots=f"{real}//"), "local"
    )
    assert response.status_code == 302
    assert Hypervisor.objects.get(name="local").allowed_roots == [str(real)]


def test_a_symlink_into_a_system_directory_is_refused_on_the_local_host(tmp_path):
    (tmp_path / "etc-link").symlink_to("/etc")
    with pytest.raises(ValidationError, match="is really /etc"):
        parse_roots(f"{tmp_path}/etc-link", local=True)
