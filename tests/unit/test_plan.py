"""Plan: resources and dependencies of a lab, and the diff against recorded state."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.errors import PlanError
from deploy.model import ResolvedLab, open_lab
from deploy.plan import Plan, Resource, build_resources, check_acyclic, diff, make_plan
from deploy.state import LabState, ResourceRecord

LAB = """name: lab1
providers:
  local: {kind: libvirt}
images:
  deb: {build: {}}
networks:
  mgmt: {provider: local, mode: user}
  labnet: {provider: local, mode: isolated, cidr: 10.20.0.0/24}
defaults: {image: deb, networks: [mgmt, labnet]}
groups:
  control: {count: 1, roles: [base]}
  workers: {count: 2, roles: [base]}
nodes:
  solo: {networks: [mgmt]}
"""


def resolve_text(tmp_path: Path, text: str = LAB) -> ResolvedLab:
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    return open_lab(path)[1]


def converged(plan: Plan) -> LabState:
    """The state after applying ``plan`` successfully."""
    state = LabState(plan.lab)
    for rid, res in plan.resources.items():
        state.resources[rid] = ResourceRecord(rid, res.kind, res.input_hash, "ok", res.provider)
    return state


def actions(plan: Plan) -> dict[str, str]:
    return {c.resource_id: c.action for c in plan.changes}


def test_resources_and_dependencies(tmp_path: Path) -> None:
    resources = build_resources(resolve_text(tmp_path))
    assert set(resources) == {
        "image:local/deb", "network:labnet",
        "machine:control-1", "reachable:control-1", "configure:control-1",
        "machine:workers-1", "reachable:workers-1", "configure:workers-1",
        "machine:workers-2", "reachable:workers-2", "configure:workers-2",
        "machine:solo", "reachable:solo",
    }
    assert resources["machine:workers-1"].deps == ("image:local/deb", "network:labnet")
    assert resources["machine:solo"].deps == ("image:local/deb",)  # user-mode networks are no resource
    assert resources["reachable:solo"].deps == ("machine:solo",)
    assert resources["configure:control-1"].deps == ("reachable:control-1",)


def test_everything_is_created_on_an_empty_state(tmp_path: Path) -> None:
    plan = make_plan(resolve_text(tmp_path), LabState("lab1"))
    assert set(actions(plan).values()) == {"create"}
    assert plan.has_changes
    assert plan.count()["create"] == 13


def test_converged_state_keeps_everything(tmp_path: Path) -> None:
    resolved = resolve_text(tmp_path)
    state = converged(make_plan(resolved, LabState("lab1")))
    plan = make_plan(resolved, state)
    assert set(actions(plan).values()) == {"keep"}
    assert not plan.has_changes


def test_changed_machine_updates_its_reachable_and_configure_only(tmp_path: Path) -> None:
    state = converged(make_plan(resolve_text(tmp_path), LabState("lab1")))
    changed = resolve_text(tmp_path, LAB.replace("workers: {count: 2,", "workers: {count: 2, cpus: 4,"))
    plan = make_plan(changed, state)
    updated = {rid for rid, action in actions(plan).items() if action != "keep"}
    assert updated == {f"{kind}:workers-{i}" for kind in ("machine", "reachable", "configure") for i in (1, 2)}
    change = next(c for c in plan.changes if c.resource_id == "reachable:workers-1")
    assert (change.action, change.reason) == ("update", "machine:workers-1 changes")
    assert next(c for c in plan.changes if c.resource_id == "machine:workers-1").reason == "inputs changed"


def test_changed_image_propagates_to_every_machine(tmp_path: Path) -> None:
    state = converged(make_plan(resolve_text(tmp_path), LabState("lab1")))
    plan = make_plan(resolve_text(tmp_path, LAB.replace("build: {}", "build: {release: trixie}")), state)
    assert {rid for rid, a in actions(plan).items() if a == "keep"} == {"network:labnet"}


def test_failed_and_interrupted_steps_are_retried(tmp_path: Path) -> None:
    resolved = resolve_text(tmp_path)
    state = converged(make_plan(resolved, LabState("lab1")))
    state.resources["machine:workers-1"].status = "failed"
    state.resources["reachable:control-1"].status = "running"
    state.resources["machine:solo"].status = "interrupted"
    plan = make_plan(resolved, state)
    got = actions(plan)
    assert got["machine:workers-1"] == "retry"
    assert got["reachable:control-1"] == "retry"
    assert got["machine:solo"] == "retry"
    assert got["reachable:workers-1"] == "update"  # its dependency changes
    assert got["machine:workers-2"] == "keep"


def test_missing_machine_is_created_again(tmp_path: Path) -> None:
    resolved = resolve_text(tmp_path)
    state = converged(make_plan(resolved, LabState("lab1")))
    plan = make_plan(resolved, state, missing=["machine:solo"])
    change = next(c for c in plan.changes if c.resource_id == "machine:solo")
    assert (change.action, change.reason) == ("create", "recorded but no longer exists")
    assert actions(plan)["reachable:solo"] == "update"
    assert actions(plan)["machine:control-1"] == "keep"


def test_removed_resources_are_deleted_dependents_first(tmp_path: Path) -> None:
    resolved = resolve_text(tmp_path)
    state = converged(make_plan(resolved, LabState("lab1")))
    smaller = resolve_text(tmp_path, LAB.replace("workers: {count: 2", "workers: {count: 0")
                           .replace("  labnet: {provider: local, mode: isolated, cidr: 10.20.0.0/24}\n", "")
                           .replace("networks: [mgmt, labnet]", "networks: [mgmt]"))
    plan = make_plan(smaller, state)
    deletes = [c.resource_id for c in plan.changes if c.action == "delete"]
    assert set(deletes) == {"network:labnet"} | {f"{k}:workers-{i}" for k in ("machine", "reachable", "configure")
                                                 for i in (1, 2)}
    position = {rid: i for i, rid in enumerate(deletes)}
    for i in (1, 2):
        configure, reachable = position[f"configure:workers-{i}"], position[f"reachable:workers-{i}"]
        assert configure < reachable < position[f"machine:workers-{i}"]
        assert position[f"machine:workers-{i}"] < position["network:labnet"]
    assert [c.action for c in plan.changes[-len(deletes):]] == ["delete"] * len(deletes)


def test_order_respects_dependencies_and_is_deterministic(tmp_path: Path) -> None:
    resolved = resolve_text(tmp_path)
    first = make_plan(resolved, LabState("lab1"))
    second = make_plan(resolve_text(tmp_path), LabState("lab1"))
    order = [c.resource_id for c in first.changes]
    assert order == [c.resource_id for c in second.changes]
    assert {r: x.input_hash for r, x in first.resources.items()} == {
        r: x.input_hash for r, x in second.resources.items()}
    seen: set[str] = set()
    for rid in order:
        assert set(first.resources[rid].deps) <= seen, rid
        seen.add(rid)


def test_kubernetes_and_ansible_resources(tmp_path: Path) -> None:
    text = LAB + """kubernetes:
  version: '1.36'
  control_plane: control
  workers: workers
  cni: {cilium: {version: 1.17.0}}
  mesh: {istio: {version: 1.24.0}}
ansible: [{hosts: workers, roles: [x]}]
"""
    resources = build_resources(resolve_text(tmp_path, text))
    assert resources["cluster:kubernetes"].deps == ("configure:control-1",)  # kubeadm init on the first one
    assert resources["member:workers-1"].deps == ("cluster:kubernetes", "configure:workers-1")
    members = ("member:workers-1", "member:workers-2")
    assert resources["addon:cni"].deps == ("cluster:kubernetes", *members)
    assert resources["addon:mesh"].deps == ("cluster:kubernetes", *members, "addon:cni")
    assert resources["ansible:0"].deps == ("configure:workers-1", "configure:workers-2")
    check_acyclic(resources)


def test_missing_dependency_is_a_plan_error() -> None:
    resources = {"machine:a": Resource("machine:a", "machine", "a", "p", ("image:p/x",))}
    with pytest.raises(PlanError, match=r"machine:a depends on image:p/x, which the lab does not define"):
        check_acyclic(resources)


def test_cycle_is_a_plan_error() -> None:
    resources = {
        "machine:a": Resource("machine:a", "machine", "a", "p", ("reachable:a",)),
        "reachable:a": Resource("reachable:a", "reachable", "a", "p", ("machine:a",)),
    }
    with pytest.raises(PlanError, match="dependency cycle"):
        diff("lab1", resources, LabState("lab1"))


def test_plan_json_round_trips(tmp_path: Path) -> None:
    import json

    data = json.loads(json.dumps(make_plan(resolve_text(tmp_path), LabState("lab1")).to_json()))
    assert data["counts"]["create"] == 13
    assert data["resources"]["machine:solo"]["deps"] == ["image:local/deb"]


K8S = LAB + """kubernetes: {version: '1.36', control_plane: control, workers: workers, cni: {bridge: {}},
             runtimes: [runc, gvisor]}
bundle: {source: build}
"""


def test_a_new_worker_is_a_new_member_and_the_others_are_rechecked_not_rebuilt(tmp_path: Path) -> None:
    state = converged(make_plan(resolve_text(tmp_path, K8S), LabState("lab1")))
    plan = make_plan(resolve_text(tmp_path, K8S.replace("workers: {count: 2", "workers: {count: 3")), state)
    changed = {rid: action for rid, action in actions(plan).items() if action != "keep"}
    assert {rid: a for rid, a in changed.items() if rid.endswith("workers-3")} == {
        "machine:workers-3": "create", "reachable:workers-3": "create", "configure:workers-3": "create",
        "member:workers-3": "create"}
    # every node's /etc/hosts gains the new one, so configure re-converges them and the cluster steps
    # re-check (an initialised control plane and joined members do nothing: deploy/cluster/join.py)
    assert {a for rid, a in changed.items() if not rid.endswith("workers-3")} == {"update"}
    assert "addon:cni" in changed  # the CNI routes to the new node


def test_a_removed_worker_leaves_the_cluster_before_its_machine_goes(tmp_path: Path) -> None:
    state = converged(make_plan(resolve_text(tmp_path, K8S), LabState("lab1")))
    plan = make_plan(resolve_text(tmp_path, K8S.replace("workers: {count: 2", "workers: {count: 1")), state)
    deletes = [c.resource_id for c in plan.changes if c.action == "delete"]
    assert deletes == ["member:workers-2", "configure:workers-2", "reachable:workers-2", "machine:workers-2"]
    assert actions(plan)["cluster:kubernetes"] == "update"  # /etc/hosts changed: re-checked, not re-initialised
    assert state.resources["member:workers-2"].provider == "local"  # its teardown runs (it needs a provider)
