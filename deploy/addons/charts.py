"""Where an add-on's chart comes from, and the identity its checkpoint hashes.

    mirrors.charts folder   <folder>/<chart>-<version>.tgz; its sha256 is the chart's digest
    mirrors.charts http(s)  a chart repository: ``helm --repo <url> <chart> --version <v>``
    mirrors.charts oci://   ``<oci-url>/<chart> --version <v>``
    repo: (no mirror)       the chart's upstream repository, http(s) or oci://, as above
    chart: oci://…          the chart reference itself

A chart taken from a repository or registry is known at plan time only by its reference and
version (published chart versions are immutable); the archive's digest is known for a folder.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from deploy.errors import PlanError
from deploy.model.checks_addons import chart_folder
from deploy.model.schema_addons import AddonSpec


@dataclass(frozen=True)
class ChartSource:
    ref: str  # what helm is given as CHART: an archive path, a chart name (with repo) or an oci:// reference
    version: str
    repo: str | None = None  # --repo of an http(s) chart repository
    digest: str | None = None  # sha256 of the archive, where it is a local file

    @property
    def local(self) -> bool:
        return self.digest is not None

    def args(self) -> list[str]:
        """CHART and the flags that name it (a local archive is its own version)."""
        repo = ["--repo", self.repo] if self.repo else []
        return [self.ref] if self.local else [self.ref, *repo, "--version", self.version]

    def identity(self) -> dict[str, str | None]:
        return {"ref": self.ref, "repo": self.repo, "version": self.version, "digest": self.digest}


def source(addon: AddonSpec, charts: str | None, lab_dir: Path) -> ChartSource:
    """The chart of ``addon``; ``charts`` is the lab's mirrors.charts, ``lab_dir`` the lab file's folder."""
    if charts:
        folder = chart_folder(lab_dir, charts)
        if folder is not None:
            return _archive(addon, folder)
        return _remote(addon, charts)
    if addon.chart.startswith("oci://"):
        return ChartSource(addon.chart, addon.version)
    if addon.repo is None:
        raise PlanError(f"add-on {addon.name}: chart {addon.chart!r} has no source",
                        hint="set repo:, write chart: as oci://…, or set mirrors.charts")
    return _remote(addon, addon.repo)


def basename(addon: AddonSpec) -> str:
    return addon.chart.rstrip("/").rsplit("/", 1)[-1]


def _archive(addon: AddonSpec, folder: Path) -> ChartSource:
    path = folder / f"{basename(addon)}-{addon.version}.tgz"
    try:
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise PlanError(f"add-on {addon.name}: cannot read chart archive {path}: {exc.strerror}",
                        hint="`helm package` the chart into mirrors.charts") from None
    return ChartSource(str(path), addon.version, digest=sha)


def _remote(addon: AddonSpec, base: str) -> ChartSource:
    if base.startswith("oci://"):
        return ChartSource(f"{base.rstrip('/')}/{basename(addon)}", addon.version)
    return ChartSource(basename(addon) if base != addon.repo else addon.chart, addon.version, repo=base)
