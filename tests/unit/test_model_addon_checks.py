"""`validate` refuses an ``addons:`` list that could not be ordered or whose charts cannot be found, by line."""

from __future__ import annotations

import itertools
from pathlib import Path

from tests.unit.labfiles import only, problems_of, valid

LAB = """name: lab1
images:
  deb: {build: {}}
networks:
  mgmt: {mode: user}
  labnet: {mode: isolated, cidr: 10.20.0.0/24}
defaults: {image: deb, networks: [mgmt, labnet]}
groups:
  control: {count: 1}
kubernetes:
  version: "1.36"
  control_plane: control
  cni: {bridge: {}}
mirrors: {charts: charts}
addons:
"""  # addons: is line 15; the entries start on line 16


def _lab(tmp_path: Path, entries: str, archives: tuple[str, ...] = ("podinfo-6.7.0.tgz", "redis-20.1.0.tgz")) -> str:
    (tmp_path / "charts").mkdir(exist_ok=True)
    for name in archives:
        (tmp_path / "charts" / name).write_bytes(b"stand-in archive: validate checks presence, not content")
    return LAB + entries


def test_a_lab_with_ordered_addons_validates(tmp_path: Path) -> None:
    resolved = valid(tmp_path, _lab(tmp_path, "  - {name: redis, chart: redis, version: 20.1.0, after: [cni]}\n"
                                              "  - {name: podinfo, chart: podinfo, version: 6.7.0, after: [redis]}\n"))
    assert [a.name for a in resolved.lab.addons] == ["redis", "podinfo"]
    assert resolved.lab.addons[1].timeout == 300


def test_after_naming_an_unknown_addon_points_at_the_entry_and_guesses(tmp_path: Path) -> None:
    problem = only(tmp_path, _lab(tmp_path, "  - {name: redis, chart: redis, version: 20.1.0}\n"
                                            "  - {name: podinfo, chart: podinfo, version: 6.7.0, after: [rediss]}\n"))
    assert problem.message == "add-on podinfo: after: names unknown add-on 'rediss'"
    assert (problem.location.line, problem.location.path) == (17, "addons[1].after[0]")
    assert problem.hint.startswith("did you mean 'redis'? the lab's add-ons: cni, podinfo, redis")


def test_a_cycle_of_after_is_printed_in_install_order(tmp_path: Path) -> None:
    problem = only(tmp_path, _lab(tmp_path, "  - {name: redis, chart: redis, version: 20.1.0, after: [podinfo]}\n"
                                            "  - {name: podinfo, chart: podinfo, version: 6.7.0, after: [redis]}\n"))
    assert problem.message.startswith("the add-ons' after: forms a cycle: ")
    assert problem.message.endswith(" (each is after the next)")
    cycle = problem.message.rpartition(": ")[2].removesuffix(" (each is after the next)").split(" -> ")
    assert cycle[0] == cycle[-1]
    assert sorted(cycle[:-1]) == ["podinfo", "redis"]
    assert problem.location.path in ("addons[0].after", "addons[1].after")
    assert problem.location.line in (16, 17)


def test_a_longer_cycle_reads_each_after_the_next(tmp_path: Path) -> None:
    problem = only(tmp_path, _lab(tmp_path, "  - {name: a, chart: redis, version: 20.1.0, after: [c]}\n"
                                            "  - {name: b, chart: redis, version: 20.1.0, after: [a]}\n"
                                            "  - {name: c, chart: podinfo, version: 6.7.0, after: [b]}\n"))
    chain = problem.message.rpartition(": ")[2].removesuffix(" (each is after the next)").split(" -> ")
    after = {"a": "c", "b": "a", "c": "b"}
    assert len(chain) == 4
    assert all(after[x] == y for x, y in itertools.pairwise(chain))


def test_a_chart_version_that_is_not_a_version(tmp_path: Path) -> None:
    problem = only(tmp_path, _lab(tmp_path, "  - {name: podinfo, chart: podinfo, version: '6.x'}\n"))
    assert problem.message == "'6.x' is not a chart version; write the exact SemVer version, e.g. 1.17.0"
    assert (problem.location.line, problem.location.path) == (16, "addons[0].version")
    assert only(tmp_path, _lab(tmp_path, "  - {name: podinfo, chart: podinfo, version: '>=6.7.0'}\n")
                ).location.path == "addons[0].version"


def test_duplicate_names_and_typed_names_are_refused(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, _lab(tmp_path, "  - {name: podinfo, chart: podinfo, version: 6.7.0}\n"
                                                    "  - {name: podinfo, chart: redis, version: 20.1.0}\n"
                                                    "  - {name: mesh, chart: redis, version: 20.1.0}\n"))
    assert [(p.message, p.location.line) for p in problems] == [
        ("add-on 'podinfo' is defined twice", 17),
        ("add-on name 'mesh' is the typed add-on's", 18),
    ]
    assert problems[0].hint.startswith("the first is addons[0] (line 16)")


def test_a_chart_missing_from_the_mirror_folder_lists_what_it_holds(tmp_path: Path) -> None:
    problem = only(tmp_path, _lab(tmp_path, "  - {name: podinfo, chart: podinfo, version: 6.8.0}\n"))
    assert problem.message == f"add-on podinfo: podinfo-6.8.0.tgz is not in {tmp_path / 'charts'}"
    assert "it holds: podinfo-6.7.0.tgz, redis-20.1.0.tgz" in problem.hint
    assert problem.location.path == "addons[0].version"


def test_without_a_mirror_a_chart_needs_a_repo_or_an_oci_reference(tmp_path: Path) -> None:
    text = LAB.replace("mirrors: {charts: charts}\n", "")
    problem = only(tmp_path, text + "  - {name: podinfo, chart: podinfo, version: 6.7.0}\n")
    assert (problem.message, problem.location.path) == ("add-on podinfo: chart 'podinfo' has no source",
                                                        "addons[0].chart")
    valid(tmp_path, text + "  - {name: podinfo, chart: podinfo, version: 6.7.0, repo: 'https://charts.example'}\n"
                           "  - {name: p2, chart: 'oci://registry.example/charts/podinfo', version: 6.7.0}\n")


def test_values_files_must_exist_and_addons_need_a_cluster(tmp_path: Path) -> None:
    problem = only(tmp_path, _lab(tmp_path, "  - {name: podinfo, chart: podinfo, version: 6.7.0,"
                                            " values_files: [podinfo.yaml]}\n"))
    assert (problem.message, problem.location.path) == ("add-on podinfo: values file podinfo.yaml does not exist",
                                                        "addons[0].values_files[0]")
    text = _lab(tmp_path, "  - {name: podinfo, chart: podinfo, version: 6.7.0}\n")
    start, end = text.index("kubernetes:"), text.index("mirrors:")
    no_cluster = only(tmp_path, text[:start] + text[end:])
    assert no_cluster.message == "addons: needs a cluster, and the lab has no kubernetes: section"


def test_a_values_file_must_be_a_yaml_mapping(tmp_path: Path) -> None:
    entry = "  - {name: podinfo, chart: podinfo, version: 6.7.0, values_files: [v.yaml]}\n"
    (tmp_path / "v.yaml").write_text("- replicaCount: 2\n")
    problem = only(tmp_path, _lab(tmp_path, entry))
    assert (problem.message, problem.location.line) == ("add-on podinfo: values file v.yaml is not a YAML mapping", 16)
    (tmp_path / "v.yaml").write_text("replicaCount: [2\n")
    assert only(tmp_path, _lab(tmp_path, entry)).message.startswith("add-on podinfo: values file v.yaml is not YAML")
    (tmp_path / "v.yaml").write_text("replicaCount: 2\n")
    assert valid(tmp_path, _lab(tmp_path, entry)).lab.addons[0].values_files == ["v.yaml"]
