"""Preflight refusals that need no host: each names what to fix and changes nothing."""

import pytest

from blockmig.errors import Refused
from blockmig.lifecycle import DiskRequest, migration_request
from blockmig.models import AuditEvent, Migration
from blockmig.preflight.options import check_bandwidth, check_options
from blockmig.preflight.shape import check_destination_shape
from hosts.models import Hypervisor
from tests.helpers import make_user

ROOTS = ["/srv/backups"]


@pytest.fixture
def operator(db):
    return make_user("op", "operator")


@pytest.fixture
def host(db):
    return Hypervisor.objects.create(name="h1", uri="qemu+tcp://unreachable.invalid/system", allowed_roots=ROOTS)


def request(user, host, **overrides):
    kwargs = dict(user=user, hypervisor=host, domain_uuid="0" * 36, disks=[DiskRequest("vda", "/srv/backups/c.qcow2")])
    kwargs.update(overrides)
    return migration_request(**kwargs)


def assert_nothing_changed():
    """No migration row; the one trace a refused request leaves is the audit of its refusal."""
    assert Migration.objects.count() == 0
    assert list(AuditEvent.objects.values_list("event_type", "migration_id", "details__action")) == [("refused", None, "request")]


def test_relative_destination_refused():
    with pytest.raises(Refused, match="absolute path") as refused:
        check_destination_shape("backups/c.qcow2", ROOTS)
    assert refused.value.field == "destination"


@pytest.mark.parametrize("char", ["\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\x85", "\x9b"])
def test_control_character_in_destination_refused(char):
    with pytest.raises(Refused, match="control character") as refused:
        check_destination_shape(f"/srv/backups/a{char}b.qcow2", ROOTS)
    assert refused.value.field == "destination"
    assert f"U+{ord(char):04X}" in refused.value.message


def test_trailing_newline_is_refused_not_stripped():
    with pytest.raises(Refused, match="control character"):
        check_destination_shape("/srv/backups/c.qcow2\n", ROOTS)


def test_name_longer_than_255_bytes_refused():
    long_name = "é" * 128  # 256 bytes in UTF-8, 128 characters
    with pytest.raises(Refused, match="256 bytes long"):
        check_destination_shape(f"/srv/backups/{long_name}", ROOTS)
    assert check_destination_shape(f"/srv/backups/{'a' * 255}", ROOTS).endswith("a" * 255)


@pytest.mark.parametrize("value", [10**14, 10**20, 2**31])
def test_bandwidth_above_the_limit_refused(value):
    with pytest.raises(Refused, match="at most 2147483647 MiB/s") as refused:
        check_bandwidth(value)
    assert refused.value.field == "bandwidth_mib"


def test_bandwidth_at_the_limit_accepted():
    assert check_bandwidth(2**31 - 1) == 2**31 - 1


def test_dotdot_destination_refused():
    with pytest.raises(Refused, match=r"“\.\.”"):
        check_destination_shape("/srv/backups/../etc/c.qcow2", ROOTS)


def test_destination_outside_roots_refused():
    with pytest.raises(Refused, match="outside"):
        check_destination_shape("/etc/c.qcow2", ROOTS)


def test_destination_that_is_the_root_itself_refused():
    with pytest.raises(Refused, match="outside"):
        check_destination_shape("/srv/backups", ROOTS)


def test_prefix_sibling_of_root_refused():
    with pytest.raises(Refused, match="outside"):
        check_destination_shape("/srv/backups-evil/c.qcow2", ROOTS)


def test_host_without_roots_refuses_every_destination():
    with pytest.raises(Refused, match="no allowed storage roots"):
        check_destination_shape("/srv/backups/c.qcow2", [])


def test_destination_inside_root_accepted():
    assert check_destination_shape("/srv/backups//sub/./c.qcow2", ROOTS) == "/srv/backups/sub/c.qcow2"


@pytest.mark.parametrize("value", [-1, "-5", "fast", 1.5, float("nan"), float("inf"), None, True])
def test_bad_bandwidth_refused(value):
    with pytest.raises(Refused) as refused:
        check_bandwidth(value)
    assert refused.value.field == "bandwidth_mib"


@pytest.mark.parametrize("value", [0, 10, "20", 3.0])
def test_good_bandwidth_accepted(value):
    assert check_bandwidth(value) == int(float(value))


def test_bad_granularity_refused():
    with pytest.raises(Refused, match="power of two"):
        check_options(mode="shallow", dest_format="qcow2", granularity=3000, buf_size=None)


def test_unknown_format_refused():
    with pytest.raises(Refused, match="format"):
        check_options(mode="shallow", dest_format="vmdk", granularity=None, buf_size=None)


def test_user_without_operator_role_refused(db, host):
    with pytest.raises(Refused, match="operator role"):
        request(make_user("v", "viewer"), host)
    assert_nothing_changed()


def test_request_with_negative_bandwidth_changes_nothing(operator, host):
    with pytest.raises(Refused):
        request(operator, host, bandwidth_mib=-3)
    assert_nothing_changed()


def test_request_outside_roots_changes_nothing(operator, host):
    with pytest.raises(Refused, match="outside"):
        request(operator, host, disks=[DiskRequest("vda", "/tmp/c.qcow2")])
    assert_nothing_changed()


def test_no_disks_refused(operator, host):
    with pytest.raises(Refused, match="at least one disk"):
        request(operator, host, disks=[])


def test_two_disks_to_one_destination_refused(operator, host):
    disks = [DiskRequest("vda", "/srv/backups/c.qcow2"), DiskRequest("vdb", "/srv/backups/c.qcow2")]
    with pytest.raises(Refused, match="same destination"):
        request(operator, host, disks=disks)


def test_unreachable_host_refused(operator, host, settings):
    settings.BLOCKMIG_CONNECT_TIMEOUT = 2
    with pytest.raises(Refused, match="unreachable"):
        request(operator, host)
    assert_nothing_changed()
