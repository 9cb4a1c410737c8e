"""The bundle's view of the lab, at ``validate``: what ``bundle: {source: build|offline}`` will ask for.

A Kubernetes minor or a runtime that the bundle's catalog does not know would otherwise fail
only at ``plan`` (offline) or halfway through ``up`` (build).
"""

from __future__ import annotations

from collections.abc import Iterator

from deploy.errors import PlanError, Problem
from deploy.model.load import LoadedLab
from deploy.model.resolve import ResolvedLab


def check_bundle_catalog(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    k8s = resolved.lab.kubernetes
    if resolved.lab.bundle.source not in ("build", "offline") or k8s is None:
        return
    from deploy.model.checks_kubernetes import supported_minor

    if not supported_minor(k8s.version):
        return  # check_kubernetes_version says so, for every bundle source
    from deploy.bundle.build import lab_wanted

    try:
        lab_wanted(resolved)
    except PlanError as exc:
        where = ("kubernetes", "version") if "minor" in exc.message or "Kubernetes" in exc.message else ("bundle",)
        yield Problem(f"bundle: {exc.message}", loaded.positions.locate(where), exc.hint)
