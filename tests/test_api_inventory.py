"""The REST API's inventory: hypervisors with health and counts, domains searched and found by
name or UUID, a disk with its chain; unknown ones are 404 saying what is there."""

from __future__ import annotations

from tests.api_fixtures import UUID, api, domain, error, host


def test_hypervisors_list_with_health_and_counts(api, domain):
    body = api("viewer").get("/api/v1/hypervisors/").json()
    assert body["count"] == 1
    (kvm01,) = body["results"]
    assert kvm01["name"] == "kvm01" and kvm01["health"] == "ok" and kvm01["domain_count"] == 1 and kvm01["running_count"] == 1
    assert kvm01["allowed_roots"] == ["/backups"]


def test_unknown_hypervisor_is_404_saying_how_to_list(api, db):
    err = error(api("viewer").get("/api/v1/hypervisors/nope/domains/"))
    assert err["code"] == "not_found" and "blockmig hosts" in err["message"]


def test_domains_searchable_and_found_by_name_or_uuid(api, domain):
    viewer = api("viewer")
    assert [d["name"] for d in viewer.get("/api/v1/hypervisors/kvm01/domains/", q="test").json()["results"]] == ["testvm"]
    assert viewer.get("/api/v1/hypervisors/kvm01/domains/", q="zzz").json()["results"] == []
    by_name = viewer.get("/api/v1/hypervisors/kvm01/domains/testvm/").json()
    by_uuid = viewer.get(f"/api/v1/hypervisors/kvm01/domains/{UUID.upper()}/").json()
    assert by_name == by_uuid and by_name["uuid"] == UUID and [d["target"] for d in by_name["disks"]] == ["vda"]


def test_disk_with_its_chain_active_first_and_as_text(api, domain):
    body = api("viewer").get("/api/v1/hypervisors/kvm01/domains/testvm/disks/vda/").json()
    assert [layer["path"] for layer in body["chain"]] == ["/images/snap2.qcow2", "/images/snap1.qcow2", "/images/base.qcow2"]
    assert body["chain_text"] == "/images/base.qcow2 ← /images/snap1.qcow2 ← /images/snap2.qcow2"
    assert body["job"] is None


def test_unknown_disk_names_the_ones_there(api, domain):
    err = error(api("viewer").get("/api/v1/hypervisors/kvm01/domains/testvm/disks/vdz/"))
    assert err["code"] == "not_found" and err["message"] == "testvm has no disk vdz (it has vda)."
