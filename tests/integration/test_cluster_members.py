"""A node leaving a kubeadm cluster: ``member`` teardown against kmock's API emulator over loopback HTTP,
and the engine keeping a node's machine while its member cannot be removed.

kmock stands in for the API server only as far as kmock_fixtures.py says (it runs no controllers;
its Eviction answers at once or with a PodDisruptionBudget's 429). The join itself and a real
removal are in tests/integration/test_cluster_vm.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from deploy.cluster import join
from deploy.errors import StageError
from deploy.plan import Change, Plan
from deploy.run import Engine
from deploy.state import LabState, ResourceRecord, StateStore
from tests.integration.kmock_fixtures import KubeServer
from tests.integration.test_kube_helpers import node, pod

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> Iterator[KubeServer]:
    srv = KubeServer()
    srv.declare_builtin()
    srv.seed(node("control-1"), node("workers-2"), pod("app-1", node_name="workers-2"),
             pod("app-2", node_name="control-1"))
    yield srv
    srv.close()


def _ctx(kubeconfig: Path | None, *, destroying: bool = False) -> Any:
    """What the member teardown and the engine's deletions read of a StepContext."""
    events: list[dict[str, Any]] = []
    outputs = {"cluster:kubernetes": {"kubeconfig": str(kubeconfig)} if kubeconfig else {}}
    providers = {"local": object()}
    return SimpleNamespace(
        destroying=destroying, emit=events.append, events=events,
        outputs_of=lambda rid: outputs.get(rid, {}),
        resolved=SimpleNamespace(providers=providers), providers=SimpleNamespace(get=providers.__getitem__))


def test_a_removed_worker_is_drained_then_deleted(server: KubeServer, tmp_path: Path) -> None:
    ctx = _ctx(server.kubeconfig(tmp_path))
    join.teardown_member(None, "workers-2", ctx)
    assert server.stored("Node", "workers-2") is None
    assert server.stored("Pod", "app-1", "demo") is None  # evicted before the node went
    assert server.stored("Pod", "app-2", "demo") is not None
    assert server.stored("Node", "control-1") is not None
    said = [e["message"] for e in ctx.events]
    assert said[-1] == "cluster: workers-2 drained (1 pods evicted) and deleted from the cluster"


def test_destroy_and_a_cluster_without_kubeconfig_touch_nothing(server: KubeServer, tmp_path: Path) -> None:
    join.teardown_member(None, "workers-2", _ctx(server.kubeconfig(tmp_path), destroying=True))
    join.teardown_member(None, "workers-2", _ctx(None))
    join.teardown_member(None, "workers-2", _ctx(tmp_path / "gone.kubeconfig"))
    assert server.stored("Node", "workers-2") is not None
    assert server.stored("Pod", "app-1", "demo") is not None


def _removal_plan() -> tuple[Plan, LabState]:
    state = LabState("lab1")
    ids = ("member:workers-2", "configure:workers-2", "reachable:workers-2", "machine:workers-2",
           "machine:other-1")
    for rid in ids:  # machines of a provider the lab no longer has: their deletion touches no hypervisor
        provider = "local" if rid.startswith("member:") else "gone"
        state.resources[rid] = ResourceRecord(rid, rid.split(":")[0], "h", "ok", provider)
    changes = [Change(rid, rid.split(":")[0], "delete", "no longer in the lab") for rid in ids]
    return Plan("lab1", {}, changes), state


def test_a_member_that_does_not_drain_keeps_its_machine(server: KubeServer, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    server.refuse_eviction.add(("demo", "app-1"))  # a PodDisruptionBudget
    monkeypatch.setattr(join, "DRAIN_TIMEOUT", 0.5)
    plan, state = _removal_plan()
    store = StateStore(tmp_path / "state", "lab1")
    store.root.mkdir()
    events: list[dict[str, Any]] = []
    result = Engine(plan, _ctx(server.kubeconfig(tmp_path)), store, state, parallel=1, on_event=events.append,
                    stop=threading.Event()).run()
    status = {rid: o.status for rid, o in result.outcomes.items()}
    assert status == {"member:workers-2": "failed", "configure:workers-2": "skipped",
                      "reachable:workers-2": "skipped", "machine:workers-2": "skipped", "machine:other-1": "ok"}
    assert "drain of workers-2 not finished" in (result.outcomes["member:workers-2"].error or "")
    assert result.outcomes["machine:workers-2"].error == "kept: member:workers-2 could not be removed"
    assert sorted(store.load().resources) == ["configure:workers-2", "machine:workers-2", "member:workers-2",
                                              "reachable:workers-2"]
    assert server.stored("Node", "workers-2") is not None  # cordoned, not deleted
    with pytest.raises(StageError, match="drain of workers-2"):
        join.teardown_member(None, "workers-2", _ctx(server.kubeconfig(tmp_path)))
