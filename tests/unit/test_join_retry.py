"""``kubeadm join`` whose preflight timed out on the API server runs again; any other failure is final.

The node is this host: NodeShell's commands run under ``sh`` here (its SSH transport swapped for a
local one), with ``kubeadm`` on PATH a script that fails the way kubeadm 1.36 failed in a dev run on
this machine (its output verbatim) a given number of times, then succeeds.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from deploy.cluster import join, kubeadm, nodes
from deploy.cluster.nodes import NodeShell, cluster_of, members
from deploy.errors import StageError
from deploy.model.load import load_lab
from deploy.model.resolve import resolve
from deploy.providers.base import SshEndpoint
from deploy.ssh.transport import CommandResult

ROOT = Path(__file__).resolve().parents[2]

TIMED_OUT = """[preflight] Running pre-flight checks
[preflight] Reading configuration from the "kubeadm-config" ConfigMap in namespace "kube-system"...
[preflight] Use 'kubeadm init phase upload-config kubeadm --config your-config-file' to re-upload it.
error: error execution phase preflight: unable to fetch the kubeadm-config ConfigMap: failed to get component \
configs: could not download the kube-proxy configuration from ConfigMap "kube-proxy": Get \
"https://10.31.0.10:6443/api/v1/namespaces/kube-system/configmaps/kube-proxy?timeout=10s": net/http: request \
canceled (Client.Timeout exceeded while awaiting headers)
To see the stack trace of this error execute with --v=5 or higher"""
CHECK_FAILED = """[preflight] Running pre-flight checks
error: error execution phase preflight: [preflight] Some fatal errors occurred:
\t[ERROR Port-10250]: Port 10250 is in use"""
KUBEADM = """#!/bin/sh
cat > "{dir}/config.$(cat {dir}/calls 2>/dev/null | wc -l)"
echo call >> {dir}/calls
if [ "$(wc -l < {dir}/calls)" -le {failures} ]; then cat >&2 <<'EOF'
{output}
EOF
exit 1; fi
echo "This node has joined the cluster"
"""


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[NodeShell, Path, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}

    def local(_endpoint: object, command: str, *, stdin: bytes | None = None, timeout: float = 60,
              **_: object) -> CommandResult:
        done = subprocess.run(["sh", "-c", command], input=stdin, env=env, capture_output=True, timeout=timeout,
                              check=False)
        return CommandResult(done.returncode, done.stdout.decode(), done.stderr.decode())

    monkeypatch.setattr(nodes, "run_command", local)
    said: list[str] = []
    endpoint = SshEndpoint("127.0.0.1", 22, "root", tmp_path / "id")
    shell = NodeShell("workers-1", endpoint, tmp_path / "known_hosts", said.append)
    return shell, bin_dir, said


def _kubeadm(bin_dir: Path, failures: int, output: str) -> Path:
    calls = bin_dir.parent / "kubeadm-calls"
    calls.mkdir()
    script = bin_dir / "kubeadm"
    script.write_text(KUBEADM.format(dir=calls, failures=failures, output=output))
    script.chmod(0o755)
    return calls


def _join(shell: NodeShell, said: list[str]) -> None:
    resolved = resolve(load_lab(ROOT / "labs/k8s/lab.yaml").lab)
    worker = members(resolved)[1]
    secrets = kubeadm.JoinSecrets(kubeadm.new_token(), ("sha256:" + "0" * 64,))
    join._join(shell, cluster_of(resolved, tcg=False), worker, secrets, said.append)


def test_a_join_whose_preflight_timed_out_on_the_api_server_runs_again(node: tuple[NodeShell, Path, list[str]]) -> None:
    shell, bin_dir, said = node
    calls = _kubeadm(bin_dir, 2, TIMED_OUT)
    _join(shell, said)
    configs = sorted(calls.glob("config.*"))
    assert len(configs) == 3  # two timed out, the third joined
    assert len({c.read_text() for c in configs}) == 1
    assert "JoinConfiguration" in configs[0].read_text()
    assert sum("joining again" in line for line in said) == 2
    assert "attempt 2 of 3" in said[-2]


def test_a_join_that_times_out_every_time_fails_after_the_last_attempt(
        node: tuple[NodeShell, Path, list[str]]) -> None:
    shell, bin_dir, said = node
    calls = _kubeadm(bin_dir, 99, TIMED_OUT)
    with pytest.raises(StageError, match=r"Client\.Timeout exceeded"):
        _join(shell, said)
    assert len(list(calls.glob("config.*"))) == join.JOIN_ATTEMPTS


def test_a_failed_preflight_check_is_final(node: tuple[NodeShell, Path, list[str]]) -> None:
    shell, bin_dir, said = node
    calls = _kubeadm(bin_dir, 99, CHECK_FAILED)
    with pytest.raises(StageError, match="Port 10250 is in use"):
        _join(shell, said)
    assert len(list(calls.glob("config.*"))) == 1
    assert not any("joining again" in line for line in said)
