"""`deploy up` end to end against an `existing` machine: a real sshd on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.cli import main
from deploy.ssh import run_command
from tests.integration.sshd_fixtures import SshServer

pytestmark = pytest.mark.integration

ARTIFACTS = {"resolved.json", "plan.json", "events.jsonl", "timings.json", "run.log", "summary.json"}


@pytest.fixture
def lab(tmp_path: Path, sshd: SshServer) -> Path:
    path = tmp_path / "lab.yaml"
    path.write_text(f"""# yaml-language-server: $schema=../../lab.schema.json
name: here
providers:
  hosts: {{kind: existing, connect_timeout: 10}}
nodes:
  box: {{address: 127.0.0.1, ssh_port: {sshd.port}, ssh_user: root, ssh_key: {sshd.key_path}}}
""")
    return path


def _args(lab: Path, command: str, *more: str) -> list[str]:
    args = [command, str(lab), "--state-dir", str(lab.parent / "state")]
    if command == "up":
        args += ["--artifacts", str(lab.parent / "artifacts"), "--quiet"]
    return [*args, *more]


def test_up_existing_host_end_to_end(lab: Path, sshd: SshServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_args(lab, "up")) == 0
    out = capsys.readouterr().out
    assert "Lab here is up: 2 steps applied." in out
    assert f"-p {sshd.port}" in out
    assert "root@127.0.0.1" in out
    state = json.loads((lab.parent / "state" / "state.json").read_text())
    run_dir = Path(state["runs"][-1]["artifacts"])
    assert {p.name for p in run_dir.iterdir()} >= ARTIFACTS
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["outcome"] == "ok"
    assert summary["steps"]["reachable:box"]["status"] == "ok"
    assert {r["status"] for r in state["resources"].values()} == {"ok"}

    assert main(_args(lab, "up")) == 0
    assert "No changes" in capsys.readouterr().out
    assert main(_args(lab, "plan")) == 0
    assert "No changes." in capsys.readouterr().out

    assert main(_args(lab, "status", "--output", "json")) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["node"] == "box"
    assert row["recorded"] == "ok"
    assert row["ssh"] == {"host": "127.0.0.1", "port": sshd.port, "user": "root", "key": str(sshd.key_path)}
    assert main(_args(lab, "status")) == 0
    assert f"127.0.0.1:{sshd.port}" in capsys.readouterr().out

    assert main(_args(lab, "destroy", "--quiet")) == 0
    state = json.loads((lab.parent / "state" / "state.json").read_text())
    assert state["resources"] == {}
    assert state["runs"][-1]["command"] == "destroy"
    # nothing was removed on the host: it still answers over SSH
    assert run_command(sshd.endpoint(), "echo still-here", known_hosts=lab.parent / "kh", alias="box",
                       timeout=10).stdout.strip() == "still-here"
    assert main(_args(lab, "plan")) == 2  # everything would be created again


def test_up_fails_cleanly_when_the_host_is_unreachable(tmp_path: Path, sshd: SshServer,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from tests.integration.sshd_fixtures import free_port

    lab = tmp_path / "lab.yaml"
    lab.write_text(f"""name: gone
providers:
  hosts: {{kind: existing, connect_timeout: 1}}
nodes:
  box: {{address: 127.0.0.1, ssh_port: {free_port()}, ssh_key: {sshd.key_path}}}
""")
    assert main(_args(lab, "up")) == 6
    err = capsys.readouterr().err
    assert "machines on box" in err
    assert "TCP connect" in err
    assert "Traceback" not in err
