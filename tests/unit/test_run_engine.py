"""The run engine with the recorder provider: parallelism, failure isolation, re-runs, secrets.

Machines report the real sshd fixture as their SSH endpoint, so ``reachable`` really connects.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.errors import StageError
from deploy.model.schema import SecretRef
from deploy.session import LabSession
from tests.integration.sshd_fixtures import SshServer
from tests.recorder_provider import calls, use_recorder, write_config

LAB = """name: eng
providers:
  local: {kind: libvirt}
images:
  deb: {build: {}}
networks:
  mgmt: {provider: local, mode: user}
  labnet: {provider: local, mode: isolated, cidr: 10.20.0.0/24}
defaults: {image: deb, networks: [mgmt, labnet]}
groups:
  web: {count: 2}
  db: {count: 1}
"""
STEPS = {"image:local/deb", "network:labnet"} | {f"{k}:{n}" for k in ("machine", "reachable")
                                                  for n in ("web-1", "web-2", "db-1")}


class Rig:
    def __init__(self, tmp_path: Path, sshd: SshServer) -> None:
        self.tmp = tmp_path
        self.lab = tmp_path / "lab.yaml"
        self.lab.write_text(LAB)
        self.work = tmp_path / "recorder"
        self.ssh = {"host": sshd.host, "port": sshd.port, "user": sshd.user, "key": str(sshd.key_path)}
        self.configure()

    def configure(self, **config: object) -> None:
        write_config(self.work, ssh=self.ssh, **config)

    def session(self, password: SecretRef | None = None) -> LabSession:
        session = LabSession(self.lab, state_dir=self.tmp / "state", artifacts_root=self.tmp / "artifacts")
        use_recorder(session.resolved, self.work, password)
        return session

    def state(self) -> dict[str, str]:
        data = json.loads((self.tmp / "state" / "state.json").read_text())
        return {rid: rec["status"] for rid, rec in data["resources"].items()}

    def last_summary(self) -> dict[str, object]:
        state = json.loads((self.tmp / "state" / "state.json").read_text())
        return dict(json.loads((Path(state["runs"][-1]["artifacts"]) / "summary.json").read_text()))


@pytest.fixture
def rig(tmp_path: Path, sshd: SshServer) -> Rig:
    return Rig(tmp_path, sshd)


def test_up_applies_every_step_then_keeps_them(rig: Rig) -> None:
    first = rig.session().up(parallel=4, verify=False)
    assert first.result.ok
    assert {rid for rid, o in first.result.outcomes.items() if o.status == "ok"} == STEPS
    assert set(rig.state().values()) == {"ok"}
    created = [c["key"] for c in calls(rig.work, "create")]
    assert sorted(created) == ["machine:db-1", "machine:web-1", "machine:web-2"]

    second = rig.session().up(parallel=4, verify=False)
    assert not second.plan.has_changes
    assert {rid: o.status for rid, o in second.result.outcomes.items()} == dict.fromkeys(STEPS, "kept")
    assert len(calls(rig.work, "create_machine", "start")) == 3  # nothing applied again


def test_independent_steps_run_in_parallel(rig: Rig) -> None:
    rig.configure(sleep={"machine:web-1": 0.8, "machine:web-2": 0.8, "machine:db-1": 0.8})
    rig.session().up(parallel=4, verify=False)
    starts = {c["key"]: c["t"] for c in calls(rig.work, "create_machine", "start")}
    ends = {c["key"]: c["t"] for c in calls(rig.work, "create_machine", "end")}
    assert len(starts) == 3
    assert max(starts.values()) < min(ends.values())  # all three were in flight at once


def test_parallel_one_runs_steps_one_after_another(rig: Rig) -> None:
    rig.configure(sleep={"machine:web-1": 0.3, "machine:web-2": 0.3, "machine:db-1": 0.3})
    rig.session().up(parallel=1, verify=False)
    spans = sorted((c["t"], e["t"]) for c, e in zip(calls(rig.work, "create_machine", "start"),
                                                     calls(rig.work, "create_machine", "end"), strict=True))
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1))


def test_failure_skips_dependents_while_other_branches_finish(rig: Rig) -> None:
    rig.configure(fail={"machine:web-1": "disk full"}, sleep={"machine:db-1": 0.5})
    with pytest.raises(StageError) as info:
        rig.session().up(parallel=4, verify=False)
    assert info.value.stage == "machines"
    assert info.value.host == "web-1"
    assert "disk full" in info.value.message
    steps = rig.last_summary()["steps"]
    assert isinstance(steps, dict)
    assert steps["machine:web-1"]["status"] == "failed"
    assert steps["reachable:web-1"]["status"] == "skipped"
    assert steps["reachable:web-2"]["status"] == "ok"
    assert steps["reachable:db-1"]["status"] == "ok"  # the slow independent branch finished
    assert rig.state()["machine:web-1"] == "failed"
    assert rig.last_summary()["outcome"] == "failed"


def test_rerun_after_failure_retries_only_what_failed(rig: Rig) -> None:
    rig.configure(fail={"machine:web-1": "disk full"})
    with pytest.raises(StageError):
        rig.session().up(parallel=4, verify=False)
    rig.configure()
    again = rig.session().up(parallel=4, verify=False)
    actions = {c.resource_id: c.action for c in again.plan.changes}
    assert actions["machine:web-1"] == "retry"
    assert actions["reachable:web-1"] == "create"
    assert {a for rid, a in actions.items() if "web-1" not in rid} == {"keep"}
    per_machine = [c["key"] for c in calls(rig.work, "create_machine", "start")]
    assert per_machine.count("machine:web-2") == per_machine.count("machine:db-1") == 1
    assert per_machine.count("machine:web-1") == 2
    assert set(rig.state().values()) == {"ok"}


def test_machine_deleted_behind_our_back_is_created_again(rig: Rig) -> None:
    rig.session().up(parallel=4, verify=False)
    machines = json.loads((rig.work / "machines.json").read_text())
    del machines["db-1"]
    (rig.work / "machines.json").write_text(json.dumps(machines))
    plan = rig.session().plan()
    actions = {c.resource_id: c.action for c in plan.changes}
    assert actions["machine:db-1"] == "create"
    assert actions["reachable:db-1"] == "update"
    assert actions["machine:web-1"] == "keep"
    rig.session().up(parallel=4, verify=False)
    assert "db-1" in json.loads((rig.work / "machines.json").read_text())


def test_unreachable_machine_fails_reachable_stage(rig: Rig) -> None:
    import deploy.steps
    from tests.integration.sshd_fixtures import free_port

    dead = dict(rig.ssh, port=free_port())
    rig.configure(ssh_nodes={"db-1": dead})
    original = deploy.steps.REACHABLE_TIMEOUT
    deploy.steps.REACHABLE_TIMEOUT = 1.0
    try:
        with pytest.raises(StageError) as info:
            rig.session().up(parallel=4, verify=False)
    finally:
        deploy.steps.REACHABLE_TIMEOUT = original
    assert info.value.stage == "reachable"
    assert info.value.host == "db-1"
    assert "TCP connect" in info.value.message
    assert rig.state()["reachable:web-1"] == "ok"


def test_destroy_removes_recorded_and_tagged_machines(rig: Rig) -> None:
    rig.session().up(parallel=4, verify=False)
    removed = rig.session().destroy()
    assert {"machine:web-1", "machine:web-2", "machine:db-1", "network:labnet"} <= set(removed)
    assert json.loads((rig.work / "machines.json").read_text()) == {}
    assert rig.state() == {}


def test_secret_never_reaches_state_or_artifacts(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cr3t-Pa55word-for-recorder"
    monkeypatch.setenv("RECORDER_PASSWORD", secret)
    rig.configure(leak_secret=True)
    rig.session(password=SecretRef(env="RECORDER_PASSWORD")).up(parallel=4, verify=False)
    assert calls(rig.work, "create_network", "end")  # the provider did resolve and use the secret
    files = [p for root in (rig.tmp / "state", rig.tmp / "artifacts") for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "run.log" for p in files)
    for path in files:
        assert secret.encode() not in path.read_bytes(), path
    run_log = next(p for p in files if p.name == "run.log").read_text()
    assert "logging in with password ***" in run_log
    state = json.loads((rig.tmp / "state" / "state.json").read_text())
    assert state["resources"]["network:labnet"]["outputs"]["login"] == "admin:***@recorder"


def test_artifacts_of_a_run(rig: Rig) -> None:
    result = rig.session().up(parallel=4, verify=False)
    names = {p.name for p in result.artifacts.iterdir()}
    assert {"resolved.json", "plan.json", "plan.txt", "events.jsonl", "timings.json", "run.log",
            "summary.json"} <= names
    events = [json.loads(line) for line in (result.artifacts / "events.jsonl").read_text().splitlines()]
    assert events[0]["event"] == "run"
    assert events[0]["status"] == "started"
    assert events[-1] == {**events[-1], "event": "run", "status": "ok", "changed": 8}
    timings = json.loads((result.artifacts / "timings.json").read_text())
    assert set(timings) == {"images", "networks", "machines", "reachable"}
