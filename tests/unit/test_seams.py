"""The seams of the engine: the stage registry, plan marks and requests, provider plugins.

Provider plugins are registered the way a package registers them, through the
``labdeploy.providers`` entry point group (tests/provider_plugin.py installs the recorder's);
nothing in ``deploy/`` names them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deploy.cli import main
from deploy.errors import ConfigError, PlanError
from deploy.model import open_lab
from deploy.plan import Request, make_plan
from deploy.providers.base import TaggedResource, Tags
from deploy.providers.registry import provider_class
from deploy.reaper import reason
from deploy.render import plan_text
from deploy.resources import ResourceId
from deploy.session import LabSession
from deploy.stages import STAGES, stage_of
from deploy.state import LabState, ResourceRecord
from tests.integration.sshd_fixtures import SshServer
from tests.recorder_provider import RecorderProvider, calls, write_config
from tests.unit.labfiles import lab_file

K8S = """name: k8s
providers:
  local: {kind: libvirt}
images:
  deb: {build: {}}
networks:
  mgmt: {provider: local, mode: user}
defaults: {image: deb, networks: [mgmt]}
groups:
  cp: {count: 1, roles: [k8s-control-plane]}
kubernetes: {version: "1.36", control_plane: cp, cni: {cilium: {version: 1.17.0}},
             apt: {repo: "https://pkgs.k8s.io/core:/stable:/v{version}/deb/ /"}}
ansible: [{hosts: all, roles: [lab_baseline]}]
"""


def converged(plan_resources: dict[str, object], lab: str) -> LabState:
    state = LabState(lab)
    for key, res in plan_resources.items():
        state.resources[key] = ResourceRecord(key, res.kind, res.input_hash, "ok", res.provider)  # type: ignore[attr-defined]
    return state


# --- the stage registry ---------------------------------------------------------------------


def test_every_kind_is_declared_once_and_its_executor_and_teardown_load() -> None:
    kinds = [s.kind for s in STAGES]
    assert len(kinds) == len(set(kinds))
    for stage in STAGES:
        if stage.supported:
            assert callable(stage.executor())
        assert stage.teardown is None or callable(stage.teardown_fn())
        assert set(stage.waits_for) <= set(kinds)
    assert stage_of("configure").batched
    with pytest.raises(PlanError, match="unknown resource kind 'bogus'"):
        stage_of("bogus")


def test_resource_ids_are_typed_strings() -> None:
    rid = ResourceId("machine", "web-1")
    assert rid == "machine:web-1"
    assert (rid.kind, rid.name) == ("machine", "web-1")
    assert ResourceId.parse("image:local/deb").name == "local/deb"
    assert json.loads(json.dumps({rid: 1})) == {"machine:web-1": 1}
    with pytest.raises(PlanError, match="not a resource id"):
        ResourceId.parse("web-1")


# --- plan: unsupported steps, no side effects, requests ---------------------------------------


def test_plan_marks_steps_no_stage_can_run_and_counts_them_apart(tmp_path: Path) -> None:
    resolved = open_lab(lab_file(tmp_path, K8S))[1]
    plan = make_plan(resolved, LabState("k8s"))
    counts = plan.count()
    assert counts["unsupported"] == 1  # ansible:0 (Ansible roles come with the Ansible issue)
    assert counts["create"] == len(plan.resources) - 1
    text = plan_text(plan)
    assert "  ! ansible:0" in text
    assert "not supported yet" in text
    assert "1 not supported yet (marked !)" in text


def test_validate_says_which_steps_up_would_refuse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(lab_file(tmp_path, K8S))]) == 0
    err = capsys.readouterr().err
    assert "cannot run 1 step(s) of this lab yet" in err
    assert "ansible:0" in err


def test_plan_has_no_side_effects(tmp_path: Path) -> None:
    lab = lab_file(tmp_path, K8S)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["plan", str(lab), "--no-refresh"]) == 2
    assert main(["plan", str(lab)]) == 2
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no key, no state folder


def test_replace_and_reconfigure_requests(tmp_path: Path) -> None:
    text = K8S.split("kubernetes:", 1)[0].replace("k8s-control-plane", "base")
    resolved = open_lab(lab_file(tmp_path, text))[1]
    state = converged(make_plan(resolved, LabState("k8s")).resources, "k8s")
    plan = make_plan(resolved, state, request=Request(frozenset({"cp-1"})))
    actions = {c.resource_id: (c.action, c.reason) for c in plan.changes}
    assert actions["machine:cp-1"] == ("replace", "replacement requested")
    assert actions["reachable:cp-1"] == ("update", "machine:cp-1 changes")
    assert actions["image:local/deb"][0] == "keep"
    assert "-/+ machine:cp-1" in plan_text(plan)
    again = make_plan(resolved, state, request=Request(reconfigure=frozenset()))
    assert [(c.resource_id, c.action) for c in again.changes if c.action != "keep"] == [("configure:cp-1", "update")]


def test_unknown_replace_or_reconfigure_target_is_a_plan_error(tmp_path: Path) -> None:
    resolved = open_lab(lab_file(tmp_path, K8S.replace("k8s-control-plane", "base")))[1]
    with pytest.raises(PlanError, match="no resource machine:cp-2") as err:
        make_plan(resolved, LabState("k8s"), request=Request(frozenset({"machine:cp-2"})))
    assert "did you mean 'machine:cp-1'" in err.value.hint
    with pytest.raises(PlanError, match="nope is not a node with roles"):
        make_plan(resolved, LabState("k8s"), request=Request(reconfigure=frozenset({"nope"})))


# --- provider plugins ---------------------------------------------------------------------------


def test_a_plugin_kind_is_found_through_its_entry_point() -> None:
    assert provider_class("recorder") is RecorderProvider


def test_a_lab_names_a_plugin_kind_and_its_fields_are_checked_with_positions(tmp_path: Path) -> None:
    good = f"name: p\nproviders:\n  rec: {{kind: recorder, workdir: {tmp_path}}}\nimages:\n  deb: {{build: {{}}}}\n" \
           "networks:\n  mgmt: {provider: rec, mode: user}\ndefaults: {image: deb, provider: rec, networks: [mgmt]}\n" \
           "nodes: {vm: {}}\n"
    resolved = open_lab(lab_file(tmp_path, good))[1]
    assert resolved.providers["rec"].kind == "recorder"
    bad = good.replace("workdir:", "wrokdir:")
    with pytest.raises(ConfigError) as err:
        open_lab(lab_file(tmp_path, bad))
    text = str(err.value)
    assert "lab.yaml:3:" in text
    assert "providers.rec" in text
    assert "wrokdir" in text
    nat = good.replace("mode: user", "mode: nat, cidr: 10.99.0.0/24")
    with pytest.raises(ConfigError, match=r"provider rec \(recorder\) cannot make nat networks"):
        open_lab(lab_file(tmp_path, nat))


def test_unknown_kind_names_the_registered_ones_and_the_nearest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        open_lab(lab_file(tmp_path, "name: p\nproviders:\n  x: {kind: recordr}\nnodes: {vm: {provider: x}}\n"))
    problem = next(p for p in err.value.problems if "unknown provider kind" in p.message)
    assert problem.location.line == 3
    assert "did you mean 'recorder'?" in problem.hint
    assert "registered by packages: recorder" in problem.hint


def test_kind_whose_library_is_missing_names_the_install_command(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    info = plugins / "fakevs-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakevs\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[labdeploy.providers]\nfakevs = fakevs_provider:Provider [vsphere]\n")
    (plugins / "fakevs_provider.py").write_text("import pyVmomi_not_installed_here  # noqa\n")
    lab = lab_file(tmp_path, "name: p\nproviders:\n  dc: {kind: fakevs}\nnodes: {vm: {provider: dc}}\n")
    code = (f"import sys; sys.path.insert(0, {str(plugins)!r}); from deploy.cli import main; "
            f"sys.exit(main(['validate', {str(lab)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 3, done.stderr
    assert "provider kind 'fakevs' needs pyVmomi_not_installed_here: pip install 'labdeploy[vsphere]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_up_through_a_plugin_kind_and_replace_a_machine(tmp_path: Path, sshd: SshServer) -> None:
    work = tmp_path / "rec"
    write_config(work, ssh={"host": sshd.host, "port": sshd.port, "user": sshd.user, "key": str(sshd.key_path)})
    lab = lab_file(tmp_path, f"name: p\nproviders:\n  rec: {{kind: recorder, workdir: {work}}}\n"
                             "images:\n  deb: {build: {}}\nnetworks:\n  mgmt: {provider: rec, mode: user}\n"
                             "defaults: {image: deb, provider: rec, networks: [mgmt]}\nnodes: {vm: {}}\n")
    session = LabSession(lab, state_dir=tmp_path / "state", artifacts_root=tmp_path / "artifacts")
    assert session.up(verify=False).result.ok
    assert [c["key"] for c in calls(work, "create")] == ["machine:vm"]
    again = LabSession(lab, state_dir=tmp_path / "state", artifacts_root=tmp_path / "artifacts")
    replaced = again.up(verify=False, request=Request(frozenset({"machine:vm"})))
    assert replaced.result.outcomes["machine:vm"].status == "ok"
    order = [(c["call"], c["phase"]) for c in calls(work) if c["key"] == "machine:vm" and c["phase"] != "event"]
    assert order[-4:] == [("delete_machine", "start"), ("delete_machine", "end"),
                          ("create_machine", "start"), ("create_machine", "end")]
    assert [c["key"] for c in calls(work, "create")] == ["machine:vm", "machine:vm"]  # created anew


# --- reap reasons ---------------------------------------------------------------------------------


def test_reap_takes_expired_and_orphans_and_age_only_when_asked(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    live = tmp_path / "live"
    live.mkdir()
    (live / "state.json").write_text("{}")
    tags = Tags("lab", "r1", now - timedelta(days=2), now + timedelta(hours=1), str(live))

    def res(t: Tags) -> TaggedResource:
        return TaggedResource("machine", "m", t, "local")

    assert reason(res(tags), now, None, None) == ""  # alive, not expired: kept whatever its age
    assert reason(res(tags), now, timedelta(days=1), None).startswith("created 2d ago")
    assert reason(res(replace(tags, expires=now - timedelta(minutes=5))), now, None, None) == "expired 5m ago (ttl)"
    orphan = reason(res(replace(tags, state=str(tmp_path / "gone"))), now, None, None)
    assert orphan.startswith("orphan: the state of lab lab")
    base = TaggedResource("volume", "base-1", Tags("", "", now - timedelta(days=3)), "local")
    assert reason(base, now, None, None) == ""
    assert reason(base, now, timedelta(days=1), None).startswith("unused base image")
    assert reason(base, now, timedelta(days=1), "lab") == ""  # one lab's reap never takes shared images


def test_an_executor_bug_fails_its_steps_with_its_own_traceback_in_the_run_log(
        tmp_path: Path, sshd: SshServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import deploy.steps
    from deploy.errors import StageError

    def broken(_batch: list[object], _ctx: object) -> dict[str, object]:
        raise RuntimeError("boom in the image executor")

    monkeypatch.setattr(deploy.steps, "run_image", broken)  # the registry names it; run looks it up
    work = tmp_path / "rec"
    write_config(work, ssh={"host": sshd.host, "port": sshd.port, "user": sshd.user, "key": str(sshd.key_path)})
    lab = lab_file(tmp_path, f"name: p\nproviders:\n  rec: {{kind: recorder, workdir: {work}}}\n"
                             "images:\n  deb: {build: {}}\nnetworks:\n  mgmt: {provider: rec, mode: user}\n"
                             "defaults: {image: deb, provider: rec, networks: [mgmt]}\nnodes: {vm: {}}\n")
    session = LabSession(lab, state_dir=tmp_path / "state", artifacts_root=tmp_path / "artifacts")
    with pytest.raises(StageError, match="internal error: RuntimeError"):
        session.up(verify=False)
    log = next((tmp_path / "artifacts" / "p").glob("*/run.log")).read_text()
    assert "Traceback" in log
    assert "in broken" in log
    assert "boom in the image executor" in log
