"""The command line: exit codes, messages without tracebacks, JSON output, graph formats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.cli import _argv, main
from deploy.model import open_lab
from deploy.plan import make_plan
from deploy.state import LabState, ResourceRecord, StateStore
from tests.integration.sshd_fixtures import SshServer
from tests.recorder_provider import write_config

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "labs" / "quickstart" / "lab.yaml"
BROKEN = "name: lab1\nproviders:\n  local: {kind: libvirt}\ngroups:\n  g: {memroy: 2GiB}\n"


def deploy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deploy.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    path = tmp_path / "lab.yaml"
    path.write_text(BROKEN)
    return path


def test_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(QUICKSTART)]) == 0
    assert "lab quickstart is valid (1 nodes, 1 networks)" in capsys.readouterr().out


def test_validate_broken_exits_3_with_message_and_line_and_no_traceback(broken: Path) -> None:
    done = deploy("validate", str(broken))
    assert done.returncode == 3
    assert f"{broken}:5:7" in done.stderr
    assert "unknown key 'memroy'" in done.stderr
    assert "did you mean 'memory'" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stdout == ""


def test_debug_shows_the_traceback(broken: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(broken), "--debug"]) == 3
    assert "Traceback" in capsys.readouterr().err


def test_validate_json_output(broken: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(QUICKSTART), "--output", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["valid"] is True
    assert set(data["nodes"]) == {"vm-1"}
    assert main(["validate", str(broken), "--output", "json"]) == 3
    error = json.loads(capsys.readouterr().out)
    assert error["error"] == "ConfigError"
    assert len(error["problems"]) == 1
    assert "memroy" in error["problems"][0]


def test_validate_resolved_prints_every_node() -> None:
    done = subprocess.run([sys.executable, "-m", "deploy.cli", "validate", "--resolved",
                           str(ROOT / "labs" / "k8s-sandbox" / "lab.yaml")], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False, env={**os.environ, "COLUMNS": "250"})
    assert done.returncode == 0
    text = done.stdout
    for node in ("control-1", "workers-1", "workers-2"):
        assert node in text
    assert "labnet=10.20.0.10" in text
    assert "4096MiB" in text


def test_missing_lab_file_exits_3(tmp_path: Path) -> None:
    done = deploy("validate", str(tmp_path / "nope.yaml"))
    assert done.returncode == 3
    assert "cannot read the lab file" in done.stderr
    assert "Traceback" not in done.stderr


def test_plan_exits_2_with_changes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["plan", str(QUICKSTART), "--state-dir", str(tmp_path), "--no-refresh"])
    assert code == 2
    out = capsys.readouterr().out
    assert "+ machine:vm-1" in out
    assert "Plan: 3 to create" in out


def test_plan_exits_0_without_changes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _loaded, resolved = open_lab(QUICKSTART)
    plan = make_plan(resolved, LabState("quickstart"))
    state = LabState("quickstart", {rid: ResourceRecord(rid, r.kind, r.input_hash, "ok", r.provider)
                                    for rid, r in plan.resources.items()})
    StateStore(tmp_path, "quickstart").save(state)
    assert main(["plan", str(QUICKSTART), "--state-dir", str(tmp_path), "--no-refresh"]) == 0
    assert "No changes." in capsys.readouterr().out
    assert main(["plan", str(QUICKSTART), "--state-dir", str(tmp_path), "--no-refresh", "--output", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"]["keep"] == 3
    assert data["counts"]["create"] == 0


def test_plan_of_a_broken_lab_exits_3(broken: Path, tmp_path: Path) -> None:
    assert main(["plan", str(broken), "--state-dir", str(tmp_path)]) == 3


def test_bare_lab_argument_means_up() -> None:
    assert _argv(["lab.yaml"]) == ["up", "lab.yaml"]
    assert _argv(["lab.yaml", "--parallel", "2"]) == ["up", "lab.yaml", "--parallel", "2"]
    assert _argv(["validate", "lab.yaml"]) == ["validate", "lab.yaml"]


def test_bare_lab_runs_up_for_real(tmp_path: Path, sshd: SshServer) -> None:
    lab = tmp_path / "lab.yaml"
    lab.write_text("name: cli1\nproviders:\n  local: {kind: libvirt}\nimages:\n  deb: {build: {}}\n"
                   "defaults: {image: deb}\ngroups:\n  g: {count: 1}\n")
    work = tmp_path / "recorder"
    write_config(work, ssh={"host": sshd.host, "port": sshd.port, "key": str(sshd.key_path)})
    done = subprocess.run([sys.executable, "-m", "tests.recorder_provider", str(work), "--", str(lab),
                           "--state-dir", str(tmp_path / "state"), "--artifacts", str(tmp_path / "art"),
                           "--output", "json", "--no-verify"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{\"")]
    assert events[0]["event"] == "run"
    assert events[0]["status"] == "started"
    assert any(e.get("id") == "reachable:g-1" and e.get("status") == "ok" for e in events)
    summary = json.loads(done.stdout[done.stdout.rindex("\n{") + 1:])
    assert summary["outcome"] == "ok"
    assert summary["changed"] == 3


@pytest.mark.parametrize(("fmt", "marker"), [("mermaid", "flowchart LR"), ("dot", "digraph"),
                                             ("html", "<!doctype html>")])
def test_graph_formats(fmt: str, marker: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lab = ROOT / "labs" / "k8s-sandbox" / "lab.yaml"
    assert main(["graph", str(lab), "--format", fmt, "--state-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert marker in text
    assert "machine:workers-2" in text
    assert "cluster:kubernetes" in text
    if fmt == "mermaid":
        assert "n_machine_control_1 --> n_reachable_control_1" in text
    if fmt == "dot":
        assert '"machine:control-1" -> "reachable:control-1";' in text
    if fmt == "html":
        data = text[text.index('id="plan">') + 10:text.index("</script>")]
        assert "addon:cni" in data


def test_schema_command_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "labdeploy lab file"


def test_unknown_command_shape_is_an_argparse_error() -> None:
    done = deploy("plan")
    assert done.returncode == 2
    assert "usage:" in done.stderr


def test_destroy_parallel_below_one_is_refused_before_anything_is_touched(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["destroy", "--parallel", "0", str(QUICKSTART)]) == 3
    err = capsys.readouterr().err
    assert "--parallel must be at least 1" in err
    assert "deploy destroy --parallel 1" in err
