"""Loading a lab file: one test per kind of mistake, each asserting message, line and YAML path."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.errors import ConfigError, Problem
from deploy.model import open_lab
from deploy.model.load import load_lab

VALID_HEAD = "name: lab1\nproviders:\n  local: {kind: libvirt}\n"


def problems_of(tmp_path: Path, text: str) -> list[Problem]:
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        open_lab(path)
    assert all(p.location.file == str(path) for p in info.value.problems)
    return info.value.problems


def only_problem(tmp_path: Path, text: str) -> Problem:
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def test_yaml_syntax_error_names_its_line(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "name: lab1\nproviders:\n  local: {kind: libvirt\n  other: 1\n")
    assert problem.message.startswith("YAML syntax:")
    assert "expected ',' or '}'" in problem.message
    assert problem.location.line == 4
    assert "YAML syntax" in problem.hint


def test_tab_indentation_is_a_syntax_error_with_line(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "name: lab1\nproviders:\n\tlocal: {kind: libvirt}\n")
    assert "YAML syntax" in problem.message
    assert problem.location.line == 3


def test_empty_file(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "# only a comment\n")
    assert problem.message == "the lab file is empty, not a mapping"
    assert problem.location.line == 1
    assert "name:" in problem.hint


def test_non_mapping_file(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "- name: lab1\n- providers: {}\n")
    assert problem.message == "the lab file is a list, not a mapping"
    assert problem.location.line == 1


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the lab file"):
        load_lab(tmp_path / "nope.yaml")


def test_unknown_key_names_nearest_match_and_valid_keys(tmp_path: Path) -> None:
    text = VALID_HEAD + "groups:\n  workers:\n    count: 2\n    memroy: 4GiB\n"
    problem = only_problem(tmp_path, text)
    assert problem.message == "unknown key 'memroy' at groups.workers (line 7): did you mean 'memory'?"
    assert problem.location.line == 7
    assert problem.location.column == 5
    assert problem.location.path == "groups.workers.memroy"
    assert problem.hint.startswith("valid keys here: ")
    for key in ("count", "cpus", "memory", "networks", "roles"):
        assert key in problem.hint


def test_unknown_key_without_near_match_lists_valid_keys(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "name: lab1\nproviders:\n  local: {kind: libvirt, zzzz: 1}\n")
    assert "did you mean" not in problem.message
    assert problem.message.startswith("unknown key 'zzzz' at providers.local")
    assert problem.hint == "valid keys here: accel, kind, pool, pool_path, ssh_host_bind, uri, user_backend"
    assert problem.location.path == "providers.local.zzzz"
    assert problem.location.line == 3


def test_unknown_key_in_a_provider_uses_that_kinds_keys(tmp_path: Path) -> None:
    text = ("name: lab1\nproviders:\n  dc1:\n    kind: vsphere\n    host: h\n    usr: u\n"
            "    password: {env: P}\n    datacenter: d\n    datastore: s\n")
    problems = problems_of(tmp_path, text)
    unknown = next(p for p in problems if "unknown key" in p.message)
    assert "did you mean 'user'" in unknown.message
    assert "datastore" in unknown.hint
    assert "uri" not in unknown.hint
    assert unknown.location.line == 6


def test_missing_key_top_level(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "nodes: {vm: {}}\n")
    assert problem.message == "missing key 'name'"
    assert problem.location.line == 1
    assert problem.location.path == "(top level)"
    assert "name:" in problem.hint


def test_missing_key_nested_points_at_its_mapping(tmp_path: Path) -> None:
    text = VALID_HEAD + "kubernetes:\n  version: '1.31'\n"
    problem = only_problem(tmp_path, text)
    assert problem.message == "missing key 'control_plane'"
    assert problem.location.path == "kubernetes"
    assert problem.location.line == 4


def test_wrong_type(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, VALID_HEAD + "defaults:\n  cpus: many\n")
    assert "valid integer" in problem.message
    assert problem.location.line == 5
    assert problem.location.path == "defaults.cpus"
    assert problem.hint == "write a whole number, not 'many'"


def test_size_without_unit(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, VALID_HEAD + "defaults:\n  memory: 12\n")
    assert problem.message == "size 12 has no unit; write it as 12MiB or 12GiB"
    assert problem.location.line == 5
    assert problem.location.path == "defaults.memory"


def test_size_that_is_not_a_size(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, VALID_HEAD + "groups:\n  g: {disk: lots}\n")
    assert "'lots' is not a size" in problem.message
    assert "GiB" in problem.message
    assert problem.location.path == "groups.g.disk"
    assert problem.location.line == 5


def test_bad_cidr(tmp_path: Path) -> None:
    text = VALID_HEAD + "networks:\n  labnet: {provider: local, mode: isolated, cidr: 10.20.0.300/24}\n"
    problem = only_problem(tmp_path, text)
    assert problem.message.startswith("'10.20.0.300/24' is not a network CIDR such as 10.20.0.0/24")
    assert problem.location.line == 5
    assert problem.location.path == "networks.labnet.cidr"


def test_cidr_with_host_bits(tmp_path: Path) -> None:
    text = VALID_HEAD + "networks:\n  labnet: {mode: nat, cidr: 10.20.0.1/24}\n"
    problem = only_problem(tmp_path, text)
    assert "is not a network CIDR" in problem.message
    assert "host bits" in problem.message


def test_literal_password_is_refused_and_never_echoed(tmp_path: Path) -> None:
    secret = "Hunter2-very-secret"
    text = ("name: lab1\nproviders:\n  dc1:\n    kind: vsphere\n    host: vc\n    user: admin\n"
            f"    password: {secret}\n    datacenter: DC0\n    datastore: ds1\n")
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        open_lab(path)
    (problem,) = info.value.problems
    assert problem.message.startswith("a secret must be a reference, not a value")
    assert "{env: VAR_NAME}" in problem.message
    assert problem.location.line == 7
    assert problem.location.path == "providers.dc1.password"
    everything = str(info.value) + repr(info.value.problems) + info.value.hint
    assert secret not in everything


def test_secret_reference_needs_exactly_one_source(tmp_path: Path) -> None:
    text = ("name: lab1\nproviders:\n  dc1:\n    kind: vsphere\n    host: vc\n    user: admin\n"
            "    password: {env: A, file: b}\n    datacenter: DC0\n    datastore: ds1\n")
    problem = only_problem(tmp_path, text)
    assert "exactly one of env, file or cmd" in problem.message
    assert problem.location.line == 7


def test_unknown_provider_kind_lists_supported_kinds(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "name: lab1\nproviders:\n  local: {kind: docker}\n")
    assert problem.message == "unknown provider kind 'docker'"
    for kind in ("libvirt", "vsphere", "vagrant", "existing"):
        assert kind in problem.hint
    assert problem.location.line == 3
    assert problem.location.path == "providers.local"


def test_provider_without_kind(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "name: lab1\nproviders:\n  local: {uri: 'qemu:///system'}\n")
    assert problem.message == "a provider needs kind:"
    assert "libvirt" in problem.hint


def test_bad_literal(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "name: lab1\nproviders:\n  local: {kind: libvirt, accel: fast}\n")
    assert problem.message == "'fast' is not allowed; use 'auto', 'kvm' or 'tcg'"
    assert problem.location.line == 3
    assert problem.location.path == "providers.local.accel"


def test_bad_name_pattern(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "name: My_Lab\nproviders:\n  local: {kind: libvirt}\n")
    assert problem.message == "'My_Lab' is not a valid name: use lower-case letters, digits and dashes"
    assert problem.location.line == 1
    assert problem.location.path == "name"


def test_bad_group_name_pattern(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, VALID_HEAD + "groups:\n  Web_Servers: {count: 1}\n")
    assert "'Web_Servers' is not a valid name" in problem.message
    assert problem.location.line == 5


def test_image_with_two_sources(tmp_path: Path) -> None:
    text = VALID_HEAD + "images:\n  img: {build: {}, file: x.img, sha256: " + "a" * 64 + "}\n"
    problem = only_problem(tmp_path, text)
    assert problem.message == ("an image has exactly one of build, file, url, template or ova "
                               "(found build, file)")
    assert problem.location.line == 5
    assert problem.location.path == "images.img"


def test_url_image_without_sha256(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, VALID_HEAD + "images:\n  img: {url: 'http://x/y.img'}\n")
    assert problem.message.startswith("file and url images need sha256:")
    assert "sha256sum" in problem.message
    assert problem.location.path == "images.img"
    assert problem.location.line == 5


def test_verify_entry_with_run_and_pytest(tmp_path: Path) -> None:
    text = VALID_HEAD + "verify:\n  - {name: both, run: ls, pytest: t.py}\n"
    problem = only_problem(tmp_path, text)
    assert problem.message == "a verify entry has either run: (a command) or pytest: (a test file)"
    assert problem.location.line == 5
    assert problem.location.path == "verify[0]"


def test_negative_count(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, VALID_HEAD + "groups:\n  g: {count: -1}\n")
    assert "greater than or equal to 0" in problem.message
    assert problem.location.path == "groups.g.count"


def test_recursive_alias_is_a_config_error(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "&a [*a]\n")
    assert "anchor" in problem.message


def test_all_problems_of_a_file_reported_together(tmp_path: Path) -> None:
    text = (
        "name: lab1\n"
        "providers:\n"
        "  local: {kind: libvirt, acel: auto}\n"        # 3: unknown key
        "images:\n"
        "  img: {url: 'http://x/y.img'}\n"             # 5: no sha256
        "defaults:\n"
        "  cpus: many\n"                               # 7: wrong type
        "  memory: 12\n"                               # 8: size without unit
        "networks:\n"
        "  labnet: {mode: isolated, cidr: 10.0.0.0/33}\n"  # 10: bad cidr
    )
    problems = problems_of(tmp_path, text)
    assert [p.location.line for p in problems] == [3, 5, 7, 8, 10]
    path = tmp_path / "lab.yaml"
    with pytest.raises(ConfigError) as info:
        open_lab(path)
    assert str(info.value).startswith("5 problems in the lab:")
    assert f"{path}:10:" in str(info.value)
