"""Checks of the ``addons:`` list: names, ``after:`` references and cycles, chart sources, values files.

The Helm releases of a lab are ordered by ``after:`` at plan time; everything that would make that
order impossible, or a chart unfindable, is said here with the line it was written on.
"""

from __future__ import annotations

import difflib
import graphlib
from collections.abc import Iterator
from pathlib import Path

import yaml

from deploy.errors import Problem
from deploy.model.load import LoadedLab
from deploy.model.problems import names, problem
from deploy.model.resolve import ResolvedLab
from deploy.model.schema_addons import TYPED_ADDONS, AddonSpec


def typed_addons(resolved: ResolvedLab) -> list[str]:
    """The resource names of the typed add-ons the lab's ``kubernetes:`` section asks for."""
    k8s = resolved.lab.kubernetes
    if k8s is None:
        return []
    present = {"cni": k8s.cni, "mesh": k8s.mesh, "gpu": k8s.gpu_operator,
               "runtimes": set(k8s.runtimes) - {"runc"} or None}
    return [name for name in TYPED_ADDONS if present[name]]


def check_addon_names(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    """Each release name once, none a typed add-on's, and a cluster to install them into."""
    addons = resolved.lab.addons
    if addons and resolved.lab.kubernetes is None:
        yield problem(loaded, ("addons",), "addons: needs a cluster, and the lab has no kubernetes: section",
                      "add kubernetes: (version, control_plane) or remove addons:")
    seen: dict[str, int] = {}
    for index, addon in enumerate(addons):
        if addon.name in TYPED_ADDONS:
            yield problem(loaded, ("addons", index, "name"), f"add-on name {addon.name!r} is the typed add-on's",
                          f"{', '.join(TYPED_ADDONS)} name kubernetes.cni, .mesh, .gpu_operator and .runtimes; "
                          "pick another name")
        elif addon.name in seen:
            first = loaded.positions.locate(("addons", seen[addon.name], "name")).line
            yield problem(loaded, ("addons", index, "name"), f"add-on {addon.name!r} is defined twice",
                          f"the first is addons[{seen[addon.name]}] (line {first}); a release name is unique")
        else:
            seen[addon.name] = index


def check_addon_after(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    """``after:`` names known add-ons, and the add-ons' order has no cycle (which is printed)."""
    addons = resolved.lab.addons
    known = [a.name for a in addons] + typed_addons(resolved)
    for index, addon in enumerate(addons):
        for pos, other in enumerate(addon.after):
            if other == addon.name:
                yield problem(loaded, ("addons", index, "after", pos), f"add-on {addon.name} is after itself",
                              "remove it from its own after:")
            elif other not in known:
                near = difflib.get_close_matches(other, known, n=1)
                guess = f"did you mean {near[0]!r}? " if near else ""
                yield problem(loaded, ("addons", index, "after", pos),
                              f"add-on {addon.name}: after: names unknown add-on {other!r}",
                              f"{guess}the lab's add-ons: {names(known)}")
    yield from _cycle(loaded, addons)


def _cycle(loaded: LoadedLab, addons: list[AddonSpec]) -> Iterator[Problem]:
    index = {a.name: i for i, a in enumerate(addons)}
    graph = {a.name: [d for d in a.after if d in index and d != a.name] for a in addons}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        cycle: list[str] = list(reversed(exc.args[1]))  # graphlib lists it dependency-first
        first = cycle[0]
        yield problem(loaded, ("addons", index[first], "after"),
                      f"the add-ons' after: forms a cycle: {' -> '.join(cycle)} (each is after the next)",
                      "an add-on is installed after those it names; remove one of these after: entries")


def chart_folder(lab_dir: Path, charts: str) -> Path | None:
    """``mirrors.charts`` as a folder of chart archives, relative to the lab file's folder (None for a URL)."""
    if "://" in charts and not charts.startswith("file://"):
        return None
    path = Path(charts.removeprefix("file://")).expanduser()
    return path if path.is_absolute() else lab_dir / path


def check_addon_sources(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    """Each chart has a source: a chart archive in the mirror folder, a repository, or an oci:// chart."""
    charts = resolved.lab.mirrors.charts
    folder = chart_folder(loaded.file.parent, charts) if charts else None
    if charts and folder is None and not charts.startswith(("http://", "https://", "oci://")):
        yield problem(loaded, ("mirrors", "charts"), f"mirrors.charts {charts!r} is neither a folder nor a URL",
                      "write a folder of chart archives, http(s)://host/path or oci://host/path")
        return
    if folder is not None and not folder.is_dir():
        yield problem(loaded, ("mirrors", "charts"), f"mirrors.charts folder {folder} does not exist",
                      "paths are relative to the lab file's folder")
        return
    for index, addon in enumerate(resolved.lab.addons):
        yield from _source(loaded, index, addon, charts, folder)
        yield from _values_files(loaded, index, addon)


def _source(loaded: LoadedLab, index: int, addon: AddonSpec, charts: str | None,
            folder: Path | None) -> Iterator[Problem]:
    if folder is not None:
        archive = f"{addon.chart.rsplit('/', 1)[-1]}-{addon.version}.tgz"
        if not (folder / archive).is_file():
            held = sorted(p.name for p in folder.glob("*.tgz"))
            yield problem(loaded, ("addons", index, "version"), f"add-on {addon.name}: {archive} is not in {folder}",
                          f"`helm package` the chart into that folder; it holds: {', '.join(held) or 'no charts'}")
    elif charts is None and addon.repo is None and not addon.chart.startswith("oci://"):
        yield problem(loaded, ("addons", index, "chart"), f"add-on {addon.name}: chart {addon.chart!r} has no source",
                      "set repo: (https://… or oci://…), write chart: as oci://…, or set mirrors.charts")
    if addon.repo is not None and not addon.repo.startswith(("http://", "https://", "oci://")):
        yield problem(loaded, ("addons", index, "repo"), f"add-on {addon.name}: repo {addon.repo!r} is not a URL",
                      "write https://charts.example.org or oci://registry.example.org/charts")


def _values_files(loaded: LoadedLab, index: int, addon: AddonSpec) -> Iterator[Problem]:
    base = loaded.file.parent
    for pos, name in enumerate(addon.values_files):
        path = ("addons", index, "values_files", pos)
        if not (base / name).is_file():
            yield problem(loaded, path, f"add-on {addon.name}: values file {name} does not exist",
                          f"paths are relative to the lab file's folder ({base})")
            continue
        try:
            data = yaml.safe_load((base / name).read_text())
        except (OSError, yaml.YAMLError) as exc:
            yield problem(loaded, path, f"add-on {addon.name}: values file {name} is not YAML: {exc}".splitlines()[0])
            continue
        if data is not None and not isinstance(data, dict):
            yield problem(loaded, path, f"add-on {addon.name}: values file {name} is not a YAML mapping",
                          "a values file maps value names to values, as a chart's values.yaml does")


ADDON_CHECKS = [check_addon_names, check_addon_after, check_addon_sources]
