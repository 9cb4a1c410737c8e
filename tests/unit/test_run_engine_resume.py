"""A real `deploy up` process killed (SIGKILL) at each stage resumes; SIGINT stops it cleanly.

The subprocess runs the real CLI with the recorder provider (``python -m tests.recorder_provider``);
the recorder keeps its "hypervisor" in files, so duplicate creations would be visible.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.sshd_fixtures import SshServer, free_port, ssh_keygen
from tests.recorder_provider import calls, write_config
from tests.unit.test_run_engine import LAB, STEPS

ROOT = Path(__file__).resolve().parents[2]


class Runner:
    def __init__(self, tmp_path: Path, sshd: SshServer) -> None:
        self.tmp = tmp_path
        self.lab = tmp_path / "lab.yaml"
        self.lab.write_text(LAB)
        self.work = tmp_path / "recorder"
        self.state_file = tmp_path / "state" / "state.json"
        self.ssh = {"host": sshd.host, "port": sshd.port, "user": sshd.user, "key": str(sshd.key_path)}
        write_config(self.work, ssh=self.ssh)

    def configure(self, **config: object) -> None:
        write_config(self.work, **{"ssh": self.ssh, **config})

    def start(self, parallel: int = 4) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.recorder_provider", str(self.work), "--", "up", str(self.lab),
             "--state-dir", str(self.tmp / "state"), "--artifacts", str(self.tmp / "artifacts"),
             "--parallel", str(parallel), "--quiet", "--no-verify"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def statuses(self) -> dict[str, str]:
        if not self.state_file.exists():
            return {}
        data = json.loads(self.state_file.read_text())
        return {rid: rec["status"] for rid, rec in data["resources"].items()}

    def wait_for(self, rid: str, status: str, proc: subprocess.Popen[str], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.statuses().get(rid) == status:
                return
            if proc.poll() is not None:
                raise AssertionError(f"deploy exited ({proc.returncode}) before {rid} was {status}: "
                                     f"{proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.02)
        proc.kill()
        raise AssertionError(f"{rid} never became {status}: {self.statuses()}")

    def latest_run(self) -> Path:
        return Path(json.loads(self.state_file.read_text())["runs"][-1]["artifacts"])


@pytest.fixture
def runner(tmp_path: Path, sshd: SshServer) -> Runner:
    return Runner(tmp_path, sshd)


@pytest.fixture
def late_sshd(tmp_path: Path) -> Iterator[SshServer]:
    """An sshd whose port and client key are known now but which starts only when told."""
    server = SshServer(tmp_path / "late-sshd", authorized_keys=[], port=free_port())
    server.directory.mkdir()
    ssh_keygen(server.key_path)
    yield server
    server.stop()


KILL_AT = {
    "images": ("image:local/deb", {"sleep": {"image:deb": 120}}),
    "networks": ("network:labnet", {"sleep": {"network:labnet": 120}}),
    "machines": ("machine:web-1", {"sleep": {"machine:web-1": 120}}),
    "reachable": ("reachable:web-1", {}),
}


@pytest.mark.parametrize("stage", list(KILL_AT))
def test_sigkill_at_each_stage_then_resume(runner: Runner, late_sshd: SshServer, stage: str) -> None:
    rid, config = KILL_AT[stage]
    if stage == "reachable":  # web-1's sshd is not up yet: reachable waits for it
        config = {"ssh_nodes": {"web-1": {"host": "127.0.0.1", "port": late_sshd.port,
                                          "key": str(late_sshd.key_path)}}}
    runner.configure(**config)
    proc = runner.start()
    runner.wait_for(rid, "running", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    at_kill = runner.statuses()  # the state parses after the kill
    assert at_kill[rid] == "running"
    in_flight = sorted(r for r, status in at_kill.items() if status == "running")
    converged = sorted(r for r, status in at_kill.items() if status == "ok")
    assert (runner.tmp / "state" / "lock").exists()  # left behind by the killed run: stale now

    if stage == "reachable":
        late_sshd.start()
        runner.configure(**config)
    else:
        runner.configure()
    proc = runner.start()
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err

    assert runner.statuses() == dict.fromkeys(STEPS, "ok")
    plan = json.loads((runner.latest_run() / "plan.json").read_text())
    by_action = {a: sorted(c["resource_id"] for c in plan["changes"] if c["action"] == a)
                 for a in ("retry", "keep")}
    assert by_action["retry"] == in_flight  # steps in flight at the kill are retried ...
    assert by_action["keep"] == converged  # ... and converged ones kept
    machines = json.loads((runner.work / "machines.json").read_text())
    assert sorted(machines) == ["db-1", "web-1", "web-2"]
    created = [c["key"] for c in calls(runner.work, "create")]
    # no machine created twice; a kill between the recorder's record and its log line may leave a
    # machine that exists (above) with its "create" unlogged: the resumed run then reuses it
    assert len(created) == len(set(created)), created
    assert set(created) <= {"machine:db-1", "machine:web-1", "machine:web-2"}
    applied = [c["key"] for c in calls(runner.work, "create_machine", "start")]
    for machine in (r for r in converged if r.startswith("machine:")):
        assert applied.count(machine) == 1, machine  # a checkpointed step is never applied again


def test_sigint_finishes_in_flight_step_and_starts_nothing_new(runner: Runner) -> None:
    runner.configure(sleep={"machine:db-1": 1.5})
    proc = runner.start(parallel=1)
    runner.wait_for("machine:db-1", "running", proc)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)

    assert proc.returncode == 6, err
    assert "interrupted" in err
    assert "Traceback" not in err
    assert runner.statuses() == {"image:local/deb": "ok", "network:labnet": "ok", "machine:db-1": "ok"}
    assert [c["key"] for c in calls(runner.work, "create_machine", "start")] == ["machine:db-1"]
    state = json.loads(runner.state_file.read_text())
    assert state["runs"][-1]["outcome"] == "interrupted"
    summary = json.loads((runner.latest_run() / "summary.json").read_text())
    assert summary["outcome"] == "interrupted"
    assert summary["steps"]["machine:web-1"]["status"] == "interrupted"
    assert (runner.tmp / "state" / "lock").read_text() == ""  # released: truncated, never unlinked

    runner.configure()
    proc = runner.start()
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert [c["key"] for c in calls(runner.work, "create_machine", "start")].count("machine:db-1") == 1
