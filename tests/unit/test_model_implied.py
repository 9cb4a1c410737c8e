"""A small lab is small: provider, management network and image are implied, and shown as such."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.cli import main
from deploy.errors import ConfigError
from deploy.model import open_lab
from deploy.model.resolve import ResolvedLab
from deploy.plan import build_resources

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "labs" / "quickstart" / "lab.yaml"

# The quickstart as it was written before defaults were implied: it must resolve to the same lab.
QUICKSTART_LONG = """name: quickstart
ttl: 12h
providers:
  local: {kind: libvirt, uri: "qemu:///system", accel: auto}
images:
  debian12: {build: {distro: debian, release: bookworm}}
networks:
  mgmt: {provider: local, mode: user}
defaults: {provider: local, image: debian12, cpus: 1, memory: 1GiB, disk: 8GiB, networks: [mgmt]}
groups:
  vm: {count: 1}
verify:
  - {name: kernel answers, hosts: all, run: "uname -s", expect: Linux}
"""


def resolve_text(tmp_path: Path, text: str) -> ResolvedLab:
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    return open_lab(path)[1]


def test_two_lines_are_a_whole_lab(tmp_path: Path) -> None:
    lab = resolve_text(tmp_path, "name: tiny\nnodes: {vm: {}}\n")
    vm = lab.nodes["vm"]
    assert (vm.provider, vm.image, [(n.network, n.mode) for n in vm.nics]) == ("local", "debian12", [("mgmt", "user")])
    local = lab.providers["local"]
    assert (local.kind, getattr(local, "uri", None), getattr(local, "accel", None)) == (
        "libvirt", "qemu:///system", "auto")
    assert lab.networks["mgmt"].provider == "local"
    image = lab.images["debian12"]
    assert (image.source, image.distro, image.release) == ("build", "debian", "bookworm")
    assert (lab.implied.providers, lab.implied.networks, lab.implied.images) == (("local",), ("mgmt",), ("debian12",))
    assert set(build_resources(lab)) == {"image:local/debian12", "machine:vm", "reachable:vm"}


def test_short_quickstart_resolves_to_the_long_form(tmp_path: Path) -> None:
    short = open_lab(QUICKSTART)[1]
    long = resolve_text(tmp_path, QUICKSTART_LONG)
    assert short.nodes == long.nodes
    assert (short.images, short.networks, short.providers) == (long.images, long.networks, long.providers)
    assert short.ttl_seconds == long.ttl_seconds
    same_inputs = {rid: r.input_hash for rid, r in build_resources(short).items()}
    assert same_inputs == {rid: r.input_hash for rid, r in build_resources(long).items()}  # no re-create
    assert long.implied.providers == long.implied.networks == long.implied.images == ()
    vm = short.nodes["vm-1"]
    assert (vm.cpus, vm.memory_mib, vm.disk_gib) == (1, 1024, 8)
    assert len(QUICKSTART.read_text().splitlines()) <= 12


def test_nothing_is_implied_over_what_the_lab_defines(tmp_path: Path) -> None:
    lab = resolve_text(tmp_path, """name: lab1
providers:
  kvm: {kind: libvirt, accel: tcg}
images:
  noble: {build: {release: trixie}}
networks:
  front: {mode: user}
nodes:
  vm: {}
""")
    vm = lab.nodes["vm"]
    assert (vm.provider, vm.image, [n.network for n in vm.nics]) == ("kvm", "noble", ["front"])
    assert sorted(lab.providers) == ["kvm"]
    assert lab.implied.providers == lab.implied.networks == lab.implied.images == ()


def test_implied_mgmt_does_not_take_a_name_the_lab_uses(tmp_path: Path) -> None:
    lab = resolve_text(tmp_path, "name: lab1\nnetworks:\n  mgmt: {mode: isolated, cidr: 10.9.0.0/24}\n"
                       "nodes:\n  b: {}\n")
    assert [n.network for n in lab.nodes["b"].nics] == ["local-mgmt"]
    assert lab.networks["local-mgmt"].mode == "user"
    assert lab.implied.networks == ("local-mgmt",)


def test_nodes_that_cannot_build_get_no_implied_image(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text("name: lab1\nproviders:\n  dc1: {kind: vsphere, host: vc, user: u, password: {env: P}, "
                    "datacenter: d, datastore: s}\nnodes:\n  esxi: {}\n")
    with pytest.raises(ConfigError) as info:
        open_lab(path)
    (problem,) = info.value.problems
    assert problem.message == "node esxi: no image"
    assert problem.location.line == 5


def test_validate_resolved_marks_what_was_implied(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--resolved", str(QUICKSTART)]) == 0
    out = capsys.readouterr().out
    assert "local (implied)" in out
    assert "debian12 (implied)" in out
    assert "mgmt (implied)" in out
    assert "implied provider local: {kind: libvirt, uri: qemu:///system, accel: auto}" in out
    assert "implied network mgmt: {provider: local, mode: user}" in out
    assert "implied image debian12: {build: {distro: debian, release: bookworm}}" in out


def test_validate_says_what_was_implied(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(QUICKSTART)]) == 0
    assert "implied: provider local, network mgmt, image debian12 (see --resolved)" in capsys.readouterr().out
