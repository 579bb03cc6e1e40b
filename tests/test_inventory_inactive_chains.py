"""Chains of stopped domains: qemu-img's JSON, storage volume XML, the walk and its cache.

The parsers are fed the text qemu-img 7.2 and libvirt 9.0 printed on this machine; the
local reader runs the real qemu-img on real qcow2 files in a temporary directory.
"""

import os
import subprocess

import pytest

from hosts.inactive_chains import (
    ImageFacts,
    LocalImageReader,
    Missing,
    Unknown,
    parse_qemu_img_info,
    parse_volume_xml,
    walk,
)
from hosts.records import ChainLayer

# `qemu-img info --backing-chain -U --output=json /img/l3.qcow2`; l3 names its backing file
# relatively ("l2.qcow2"), l2 names its own absolutely (format-specific data trimmed).
QEMU_IMG_CHAIN = """[
    {"backing-filename-format": "qcow2", "virtual-size": 10485760, "filename": "/img/l3.qcow2",
     "cluster-size": 65536, "format": "qcow2", "actual-size": 200704,
     "full-backing-filename": "/img/l2.qcow2", "backing-filename": "l2.qcow2", "dirty-flag": false},
    {"backing-filename-format": "qcow2", "virtual-size": 10485760, "filename": "/img/l2.qcow2",
     "cluster-size": 65536, "format": "qcow2", "actual-size": 196608,
     "full-backing-filename": "/base/l1.qcow2", "backing-filename": "/base/l1.qcow2", "dirty-flag": false},
    {"virtual-size": 10485760, "filename": "/base/l1.qcow2", "cluster-size": 65536,
     "format": "qcow2", "actual-size": 135168, "dirty-flag": false}
]"""

# `qemu-img info -U --output=json l3.qcow2` run in /img: no full-backing-filename is absolute.
QEMU_IMG_ONE_RELATIVE = """{"backing-filename-format": "qcow2", "virtual-size": 1073741824,
  "filename": "l3.qcow2", "format": "qcow2", "actual-size": 200704,
  "full-backing-filename": "l2.qcow2", "backing-filename": "l2.qcow2", "dirty-flag": false}"""

# `virsh vol-dumpxml /tmp/qi/l3.qcow2` in a dir pool on /tmp/qi (timestamps trimmed).
VOLUME_XML = """<volume type='file'>
  <name>l3.qcow2</name>
  <key>/tmp/qi/l3.qcow2</key>
  <capacity unit='bytes'>10485760</capacity>
  <allocation unit='bytes'>200704</allocation>
  <physical unit='bytes'>196616</physical>
  <target>
    <path>/tmp/qi/l3.qcow2</path>
    <format type='qcow2'/>
    <permissions><mode>0644</mode><owner>0</owner><group>0</group></permissions>
    <compat>1.1</compat>
    <clusterSize unit='B'>65536</clusterSize>
    <features/>
  </target>
  <backingStore>
    <path>/tmp/qi/l2.qcow2</path>
    <format type='qcow2'/>
    <permissions><mode>0644</mode><owner>0</owner><group>0</group></permissions>
  </backingStore>
</volume>"""

BASE_VOLUME_XML = """<volume type='file'><name>base.raw</name>
  <capacity unit='KiB'>1024</capacity><allocation unit='KiB'>4</allocation>
  <target><path>/pool/base.raw</path><format type='raw'/></target></volume>"""


def test_qemu_img_backing_chain_json_gives_every_layer_active_first_with_absolute_paths():
    layers = parse_qemu_img_info(QEMU_IMG_CHAIN, "/img/l3.qcow2")

    assert [(f.path, f.format, f.backing_path, f.backing_format) for f in layers] == [
        ("/img/l3.qcow2", "qcow2", "/img/l2.qcow2", "qcow2"),
        ("/img/l2.qcow2", "qcow2", "/base/l1.qcow2", "qcow2"),
        ("/base/l1.qcow2", "qcow2", "", ""),
    ]
    assert [(f.virtual_size, f.actual_size) for f in layers] == [(10485760, 200704), (10485760, 196608), (10485760, 135168)]


def test_qemu_img_relative_backing_name_is_resolved_against_the_images_directory():
    (facts,) = parse_qemu_img_info(QEMU_IMG_ONE_RELATIVE, "/srv/images/l3.qcow2")

    assert (facts.path, facts.backing_path) == ("/srv/images/l3.qcow2", "/srv/images/l2.qcow2")
    assert facts.virtual_size == 1 << 30


def test_qemu_img_answer_that_is_not_json_raises_value_error():
    with pytest.raises(ValueError):
        parse_qemu_img_info("qemu-img: Could not open 'x': No such file or directory", "/x")


def test_volume_xml_gives_path_format_sizes_and_the_backing_file():
    facts = parse_volume_xml(VOLUME_XML)

    assert facts == ImageFacts(
        path="/tmp/qi/l3.qcow2",
        format="qcow2",
        virtual_size=10485760,
        actual_size=200704,
        backing_path="/tmp/qi/l2.qcow2",
        backing_format="qcow2",
    )


def test_volume_xml_of_a_base_image_has_no_backing_file_and_units_are_applied():
    facts = parse_volume_xml(BASE_VOLUME_XML)

    assert (facts.path, facts.format, facts.backing_path) == ("/pool/base.raw", "raw", "")
    assert (facts.virtual_size, facts.actual_size) == (1024 * 1024, 4 * 1024)


def chain_of(n: int) -> dict[str, ImageFacts]:
    """A lookup table for /c/l{n}.qcow2 ← … ← /c/l1.qcow2."""
    return {
        f"/c/l{i}.qcow2": ImageFacts(
            path=f"/c/l{i}.qcow2",
            format="qcow2",
            virtual_size=1 << 30,
            actual_size=i * 1000,
            backing_path=f"/c/l{i - 1}.qcow2" if i > 1 else "",
            backing_format="qcow2" if i > 1 else "",
        )
        for i in range(1, n + 1)
    }


def test_walk_follows_sixty_layers_to_the_base():
    table = chain_of(60)

    walked = walk("/c/l60.qcow2", "qcow2", "file", table.__getitem__)

    assert walked.known and walked.note == ""
    assert [layer.path for layer in walked.layers] == [f"/c/l{i}.qcow2" for i in range(60, 0, -1)]
    assert [layer.depth for layer in walked.layers] == list(range(60))
    assert walked.layers[0] == ChainLayer(depth=0, path="/c/l60.qcow2", format="qcow2", capacity=1 << 30, allocation=60000)


def test_walk_marks_a_missing_middle_layer_and_says_so():
    table = chain_of(5)
    del table["/c/l3.qcow2"]

    walked = walk("/c/l5.qcow2", "qcow2", "file", lambda path: table.get(path) or Missing())

    assert [(layer.path, layer.missing) for layer in walked.layers] == [
        ("/c/l5.qcow2", False),
        ("/c/l4.qcow2", False),
        ("/c/l3.qcow2", True),
    ]
    assert walked.known
    assert walked.note == "missing: /c/l3.qcow2 (deleted or moved)"


def test_walk_where_nothing_can_tell_says_the_chain_is_unknown_instead_of_standalone():
    walked = walk("/remote/vm.qcow2", "qcow2", "block", lambda _path: Unknown("no pool holds it"))

    assert walked.layers == (ChainLayer(depth=0, path="/remote/vm.qcow2", format="qcow2", type="block"),)
    assert not walked.known
    assert walked.note == "Chain unknown while stopped below /remote/vm.qcow2: no pool holds it"


def test_walk_stops_at_a_loop():
    loop = {
        "/a": ImageFacts(path="/a", format="qcow2", backing_path="/b", backing_format="qcow2"),
        "/b": ImageFacts(path="/b", format="qcow2", backing_path="/a", backing_format="qcow2"),
    }

    walked = walk("/a", "qcow2", "file", loop.__getitem__)

    assert [layer.path for layer in walked.layers] == ["/a", "/b"]
    assert not walked.known and "loops" in walked.note


def make_chain(directory, length: int) -> list[str]:
    """A real qcow2 chain l1 (base) ← … ← l{length}, each naming its parent relatively."""
    paths = []
    for i in range(1, length + 1):
        path = directory / f"l{i}.qcow2"
        command = ["qemu-img", "create", "-q", "-f", "qcow2"]
        if i > 1:
            command += ["-b", f"l{i - 1}.qcow2", "-F", "qcow2"]
        subprocess.run([*command, str(path), "16M"], check=True, cwd=directory)
        paths.append(str(path))
    return paths


def read(reader: LocalImageReader, path: str):
    return walk(path, "qcow2", "file", reader.lookup_for_walk())


def test_local_reader_runs_qemu_img_once_per_chain_and_not_again_while_the_files_are_unchanged(tmp_path):
    paths = make_chain(tmp_path, 5)
    reader = LocalImageReader()

    first = read(reader, paths[-1])
    again = read(reader, paths[-1])

    assert [layer.path for layer in first.layers] == paths[::-1]
    assert first.known and not any(layer.missing for layer in first.layers)
    assert again == first
    assert reader.runs == 1


def test_local_reader_reads_a_layer_again_when_it_changed(tmp_path):
    paths = make_chain(tmp_path, 3)
    reader = LocalImageReader()
    read(reader, paths[-1])

    # Rebase the top layer straight onto the base: its mtime and size change.
    subprocess.run(["qemu-img", "rebase", "-u", "-b", "l1.qcow2", "-F", "qcow2", paths[2]], check=True, cwd=tmp_path)
    stat = os.stat(paths[2])
    os.utime(paths[2], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    walked = read(reader, paths[-1])

    assert [layer.path for layer in walked.layers] == [paths[2], paths[0]]
    assert reader.runs == 2


def test_local_reader_marks_a_deleted_middle_layer_missing(tmp_path):
    paths = make_chain(tmp_path, 4)
    os.unlink(paths[1])  # l2
    reader = LocalImageReader()

    walked = read(reader, paths[-1])

    assert [(layer.path, layer.missing) for layer in walked.layers] == [
        (paths[3], False),
        (paths[2], False),
        (paths[1], True),
    ]
    assert walked.note == f"missing: {paths[1]} (deleted or moved)"
    # The whole-chain read failed on the missing layer; the layers above were read one by one.
    assert reader.runs == 3


def test_fingerprint_changes_when_a_middle_layer_goes_and_not_while_nothing_changes(tmp_path):
    paths = make_chain(tmp_path, 4)
    reader = LocalImageReader()
    cold = reader.fingerprint([paths[-1]])
    read(reader, paths[-1])
    warm = reader.fingerprint([paths[-1]])

    assert cold != warm  # before the walk only the top layer was known
    assert reader.fingerprint([paths[-1]]) == warm
    os.unlink(paths[1])
    gone = reader.fingerprint([paths[-1]])
    assert gone != warm and f"missing:{paths[1]}" in gone
    assert reader.runs == 1  # fingerprints never run qemu-img
