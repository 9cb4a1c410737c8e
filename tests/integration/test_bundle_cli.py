"""The bundle from the lab's side: `deploy bundle build|list|prune`, `bundle: {source: offline|build}`.

The store lives in the test's folder (``LABDEPLOY_CACHE``); the Go module and build caches are
the shared ones (linked in), so crictl is compiled once per machine, not once per test run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from deploy.bundle import ArtifactKey, BundleStore
from deploy.bundle.build import lab_wanted
from deploy.cli import main
from deploy.model import open_lab
from deploy.plan import make_plan
from deploy.resources import ResourceId
from deploy.state import LabState
from deploy.steps import StepContext

K8S = """name: b
kubernetes: {version: "1.36", control_plane: cp, runtimes: [runc],
             apt: {repo: "https://pkgs.k8s.io/core:/stable:/v{version}/deb/ /"}}
groups:
  cp: {count: 1, roles: [k8s-control-plane]}
bundle: {source: SOURCE}
"""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    root.mkdir()
    shared = Path.home() / ".cache" / "labdeploy" / "go"
    shared.mkdir(parents=True, exist_ok=True)
    (root / "go").symlink_to(shared)
    monkeypatch.setenv("LABDEPLOY_CACHE", str(root))
    return root


def lab(tmp_path: Path, source: str, runtimes: str = "[runc]") -> Path:
    path = tmp_path / f"lab-{source}-{len(runtimes)}.yaml"
    path.write_text(K8S.replace("SOURCE", source).replace("[runc]", runtimes))
    return path


def test_offline_on_an_empty_store_fails_at_plan_listing_what_is_missing(
        tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(lab(tmp_path, "offline")), "--no-refresh"]) == 4
    err = capsys.readouterr().err
    assert "bundle: {source: offline}" in err
    assert "kubeadm@v1.36" in err
    assert "deploy bundle build" in err
    assert not (cache / "bundle").exists()  # the refusal wrote nothing
    assert not (tmp_path / ".labdeploy").exists()


def test_build_source_plans_one_step_per_artifact_and_marks_what_cannot_be_built(tmp_path: Path, cache: Path) -> None:
    resolved = open_lab(lab(tmp_path, "build"))[1]
    plan = make_plan(resolved, LabState("b"))
    want = lab_wanted(resolved)
    steps = {c.resource_id: c for c in plan.changes if c.kind == "bundle"}
    for recipe in want.recipes:
        assert steps[ResourceId("bundle", str(recipe.key))].supported
    for key in want.not_buildable:
        assert not steps[ResourceId("bundle", str(key))].supported
    assert want.not_buildable == []  # every artifact of a kubeadm 1.36 lab with runc has a recipe
    spin = make_plan(open_lab(lab(tmp_path, "build", runtimes="[runc, spin]"))[1], LabState("b"))
    marked = [c.resource_id for c in spin.changes if c.kind == "bundle" and not c.supported]
    assert marked == [ResourceId("bundle", "containerd-shim-spin-v2@unpinned/linux/amd64")]  # no recipe: marked !
    assert not (cache / "bundle").exists()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.usefixtures("cache")
def test_bundle_build_fills_the_store_then_is_a_no_op_and_lists_checksummed_files(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bundle", "build", "--runtimes", "runc"]) == 0
    first = capsys.readouterr().out
    assert "built   pause@" in first
    assert "crictl@" in first
    assert main(["bundle", "build", "--runtimes", "runc", "--output", "json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert {a["outcome"] for a in again["artifacts"]} == {"cached"}
    assert main(["bundle", "list", "--output", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    store = BundleStore()
    assert sorted(a["key"].split("@")[0] for a in listed) == ["crictl", "pause", "runc"]  # runc: the runtime asked for
    for item in listed:
        artifact = store.get(ArtifactKey.parse(item["key"]))
        assert artifact is not None
        assert _sha256(artifact.path) == item["sha256"]
        assert item["source"] == "build"
    assert main(["bundle", "prune", "--keep", "1"]) == 0
    assert "pruned 0 artifacts" in capsys.readouterr().out


@pytest.mark.usefixtures("cache")
def test_the_bundle_step_of_up_builds_into_the_store(tmp_path: Path) -> None:
    from deploy.steps import run_bundle

    resolved = open_lab(lab(tmp_path, "build"))[1]
    plan = make_plan(resolved, LabState("b"))
    pause = next(r for r in plan.resources.values() if r.kind == "bundle" and r.name.startswith("pause@"))

    class Ctx:  # the executor reads only these fields of the step context (and its real recipe lookup)
        bundle_recipe = StepContext.bundle_recipe

        def __init__(self) -> None:
            self.resolved = resolved
            self._recipes = None
            self.events: list[dict[str, object]] = []

        def emit(self, event: dict[str, object]) -> None:
            self.events.append(event)

    ctx = Ctx()
    out = run_bundle([pause], ctx)  # type: ignore[arg-type]
    result = out[pause.id]
    assert isinstance(result, dict), result
    assert result["outcome"] == "built"
    again = run_bundle([pause], ctx)[pause.id]  # type: ignore[arg-type]
    assert isinstance(again, dict)
    assert again["outcome"] == "cached"
    assert again["sha256"] == result["sha256"]
