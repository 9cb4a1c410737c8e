"""Where an add-on's chart comes from, as the arguments helm is given, and what the checkpoint hashes."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.addons import charts
from deploy.errors import PlanError
from deploy.model.schema_addons import AddonSpec


def _addon(**fields: object) -> AddonSpec:
    return AddonSpec.model_validate({"name": "web", "chart": "podinfo", "version": "6.7.0", **fields})


@pytest.mark.parametrize(("addon", "mirror", "args"), [
    (_addon(repo="https://stefanprodan.github.io/podinfo"), "http://charts.internal/stable/",
     ["podinfo", "--repo", "http://charts.internal/stable/", "--version", "6.7.0"]),  # the mirror wins
    (_addon(), "oci://registry.internal:5000/charts/",
     ["oci://registry.internal:5000/charts/podinfo", "--version", "6.7.0"]),
    (_addon(repo="https://stefanprodan.github.io/podinfo"), None,
     ["podinfo", "--repo", "https://stefanprodan.github.io/podinfo", "--version", "6.7.0"]),
    (_addon(repo="oci://ghcr.io/stefanprodan/charts"), None,
     ["oci://ghcr.io/stefanprodan/charts/podinfo", "--version", "6.7.0"]),
    (_addon(chart="oci://ghcr.io/stefanprodan/charts/podinfo"), None,
     ["oci://ghcr.io/stefanprodan/charts/podinfo", "--version", "6.7.0"]),
    (_addon(chart="oci://ghcr.io/stefanprodan/charts/podinfo"), "http://charts.internal",
     ["podinfo", "--repo", "http://charts.internal", "--version", "6.7.0"]),  # the mirror by the chart's name
])
def test_remote_sources_name_the_chart_by_reference_and_version(addon: AddonSpec, mirror: str | None,
                                                                args: list[str], tmp_path: Path) -> None:
    source = charts.source(addon, mirror, tmp_path)
    assert source.args() == args
    assert source.digest is None  # known by reference until helm pulls it
    assert source.identity()["version"] == "6.7.0"


def test_a_mirror_folder_is_relative_to_the_lab_and_hashes_the_archive(tmp_path: Path) -> None:
    (tmp_path / "charts").mkdir()
    (tmp_path / "charts" / "podinfo-6.7.0.tgz").write_bytes(b"one")
    one = charts.source(_addon(), "charts", tmp_path)
    assert one.args() == [str(tmp_path / "charts" / "podinfo-6.7.0.tgz")]  # an archive is its own version
    (tmp_path / "charts" / "podinfo-6.7.0.tgz").write_bytes(b"two")
    assert charts.source(_addon(), f"file://{tmp_path / 'charts'}", tmp_path / "x").digest != one.digest
    with pytest.raises(PlanError, match=r"cannot read chart archive .*podinfo-6.8.0.tgz"):
        charts.source(_addon(version="6.8.0"), "charts", tmp_path)


def test_without_mirror_or_repo_there_is_no_source(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="add-on web: chart 'podinfo' has no source"):
        charts.source(_addon(), None, tmp_path)
