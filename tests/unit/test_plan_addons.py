"""Plan of the lab's Helm releases: their order, a kept release, upgrades that say their versions, uninstalls."""

from __future__ import annotations

import hashlib
from pathlib import Path

from deploy.addons import releases, typed
from deploy.model import ResolvedLab, open_lab
from deploy.plan import Plan, check_acyclic, make_plan
from deploy.render import plan_text
from deploy.state import LabState, ResourceRecord

LAB = """name: lab1
images:
  deb: {build: {}}
networks:
  mgmt: {mode: user}
  labnet: {mode: isolated, cidr: 10.20.0.0/24}
defaults: {image: deb, networks: [mgmt, labnet]}
groups:
  control: {count: 1, roles: [k8s-control-plane]}
  workers: {count: 1, roles: [k8s-worker]}
kubernetes:
  version: "1.36"
  control_plane: control
  workers: workers
  apt: {repo: 'https://pkgs.k8s.io/core:/stable:/v{version}/deb/ /'}
  cni: {cilium: {version: 1.17.0}}
  mesh: {istio: {version: 1.24.0}}
mirrors: {charts: charts}
addons:
  - {name: redis, chart: redis, version: 20.1.0, namespace: data}
  - {name: podinfo, chart: podinfo, version: 6.7.0, namespace: demo, after: [redis, mesh], values: {replicaCount: 2}}
"""
ARCHIVES = ("redis-20.1.0.tgz", "redis-20.2.0.tgz", "podinfo-6.7.0.tgz",  # and the typed add-ons' charts:
            "cilium-1.17.0.tgz", "base-1.24.0.tgz", "istiod-1.24.0.tgz")


def _resolve(tmp_path: Path, text: str = LAB) -> ResolvedLab:
    charts = tmp_path / "charts"
    charts.mkdir(exist_ok=True)
    for name in ARCHIVES:
        if not (charts / name).exists():
            (charts / name).write_bytes(f"archive {name}".encode())
    (tmp_path / "lab.yaml").write_text(text)
    return open_lab(tmp_path / "lab.yaml")[1]


def _applied(plan: Plan) -> LabState:
    """The state after a successful run: each release records what the step records."""
    state = LabState(plan.lab)
    for rid, res in plan.resources.items():
        outputs = releases.outputs(res.inputs) if "chart" in res.inputs else {}
        outputs = typed.outputs(res.inputs) if "releases" in res.inputs else outputs
        state.resources[rid] = ResourceRecord(rid, res.kind, res.input_hash, "ok", res.provider, outputs=outputs)
    return state


def _change(plan: Plan, rid: str) -> tuple[str, str]:
    change = next(c for c in plan.changes if c.resource_id == rid)
    return change.action, change.reason


def test_releases_wait_for_the_cluster_the_cni_and_their_after(tmp_path: Path) -> None:
    plan = make_plan(_resolve(tmp_path), LabState("lab1"))
    deps = plan.resources["addon:podinfo"].deps
    assert set(deps) == {"cluster:kubernetes", "member:workers-1", "addon:cni", "addon:redis", "addon:mesh"}
    assert set(plan.resources["addon:redis"].deps) == {"cluster:kubernetes", "member:workers-1", "addon:cni"}
    assert "addon:cni" in plan.resources["addon:mesh"].deps
    order = check_acyclic(plan.resources)
    assert order.index("addon:cni") < order.index("addon:redis") < order.index("addon:podinfo")
    assert order.index("addon:mesh") < order.index("addon:podinfo")
    assert [c.supported for c in plan.changes if c.resource_id in ("addon:redis", "addon:podinfo")] == [True, True]


def test_the_checkpoint_is_the_archives_digest_and_the_rendered_values(tmp_path: Path) -> None:
    inputs = make_plan(_resolve(tmp_path), LabState("lab1")).resources["addon:podinfo"].inputs

    archive = tmp_path / "charts" / "podinfo-6.7.0.tgz"
    assert inputs["chart"] == {"ref": str(archive), "repo": None, "version": "6.7.0",
                               "digest": hashlib.sha256(archive.read_bytes()).hexdigest()}
    assert inputs["values"] == hashlib.sha256(b"replicaCount: 2\n").hexdigest()
    assert inputs["helm"] == {"wait": True, "timeout": 300, "atomic": False}


def test_an_unchanged_lab_keeps_every_release(tmp_path: Path) -> None:
    resolved = _resolve(tmp_path)
    state = _applied(make_plan(resolved, LabState("lab1")))
    again = make_plan(_resolve(tmp_path), state)
    assert _change(again, "addon:redis") == ("keep", "")
    assert _change(again, "addon:podinfo") == ("keep", "")
    assert not again.has_changes


def test_a_new_chart_version_plans_an_upgrade_naming_both_versions(tmp_path: Path) -> None:
    state = _applied(make_plan(_resolve(tmp_path), LabState("lab1")))
    plan = make_plan(_resolve(tmp_path, LAB.replace("version: 20.1.0", "version: 20.2.0")), state)
    assert _change(plan, "addon:redis") == ("update", "upgrade 20.1.0 → 20.2.0")
    assert "~ addon:redis" in plan_text(plan)
    assert "update  (upgrade 20.1.0 → 20.2.0)" in plan_text(plan)
    assert _change(plan, "addon:cni") == ("keep", "")
    assert _change(plan, "addon:podinfo") == ("keep", "")  # after: redis orders it; its release is unchanged


def test_a_changed_cluster_still_reinstalls_the_releases(tmp_path: Path) -> None:
    state = _applied(make_plan(_resolve(tmp_path), LabState("lab1")))
    plan = make_plan(_resolve(tmp_path, LAB.replace("kubernetes:\n", "kubernetes:\n  pod_cidr: 10.245.0.0/16\n")),
                     state)
    assert _change(plan, "cluster:kubernetes") == ("update", "inputs changed")
    assert _change(plan, "addon:redis") == ("update", "cluster:kubernetes changes")


def test_changed_values_and_a_repackaged_archive_are_updates_that_say_so(tmp_path: Path) -> None:
    state = _applied(make_plan(_resolve(tmp_path), LabState("lab1")))
    plan = make_plan(_resolve(tmp_path, LAB.replace("replicaCount: 2", "replicaCount: 3")), state)
    assert _change(plan, "addon:podinfo") == ("update", "values changed")
    assert _change(plan, "addon:redis") == ("keep", "")
    (tmp_path / "charts" / "redis-20.1.0.tgz").write_bytes(b"the same version packaged again, other content")
    plan = make_plan(_resolve(tmp_path), state)
    assert _change(plan, "addon:redis") == ("update", "chart 20.1.0 changed (another archive)")


def test_a_removed_addon_plans_its_uninstall_before_the_cluster_goes(tmp_path: Path) -> None:
    state = _applied(make_plan(_resolve(tmp_path), LabState("lab1")))
    without = LAB.replace("  - {name: podinfo, chart: podinfo, version: 6.7.0, namespace: demo, after: [redis, mesh],"
                          " values: {replicaCount: 2}}\n", "")
    plan = make_plan(_resolve(tmp_path, without), state)
    assert _change(plan, "addon:podinfo") == ("delete", "no longer in the lab: helm uninstall podinfo -n demo")
    assert _change(plan, "addon:redis") == ("keep", "")
    assert plan.count()["delete"] == 1
    no_cluster = LAB.split("kubernetes:", maxsplit=1)[0].replace(", roles: [k8s-control-plane]", "").replace(
        ", roles: [k8s-worker]", "")
    everything = make_plan(_resolve(tmp_path, no_cluster), state)
    deleted = [c.resource_id for c in everything.changes if c.action == "delete"]
    assert deleted.index("addon:podinfo") < deleted.index("cluster:kubernetes")


def test_with_a_built_bundle_the_releases_wait_for_the_step_that_builds_helm(tmp_path: Path) -> None:
    plan = make_plan(_resolve(tmp_path, LAB + "bundle: {source: build}\n"), LabState("lab1"))
    helm = next(r for r in plan.resources if r.startswith("bundle:helm@"))
    assert helm in plan.resources["addon:redis"].deps
    assert helm in plan.resources["addon:podinfo"].deps
    assert helm in plan.resources["addon:cni"].deps  # Cilium is a Helm release too
    check_acyclic(plan.resources)  # the stage registry lets add-ons wait for bundle steps
