"""What deploy.cluster.k3s renders: config.yaml of servers and agents against data fixtures (keys as k3s
spells its flags), the token's handling, the install commands and the systemd unit of k3s's install.sh.

No k3s binary checks these files here (k3s is not buildable from this machine's Go module proxy); the
executor's shell sequence runs against a real sshd in tests/integration/test_k3s_stage_sshd.py."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from deploy.cluster import k3s
from deploy.cluster.kubeadm import Node, Taint
from deploy.cluster.nodes import members
from deploy.errors import PlanError, StageError
from deploy.model import open_lab
from deploy.model.resolve import ResolvedLab
from deploy.secrets import REDACTOR
from tests.unit.labfiles import valid

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "k3s"
TOKEN = k3s.Token("0123456789abcdef" * 4)


def _lab(text: str | None = None, tmp_path: Path | None = None) -> ResolvedLab:
    if text is None:
        return open_lab(FIXTURES / "lab.yaml")[1]
    assert tmp_path is not None
    return valid(tmp_path, text)


def _fixture(name: str) -> dict[str, object]:
    data = yaml.safe_load((FIXTURES / name).read_text())
    return {k: (TOKEN.value if k == "token" else v) for k, v in data.items()}


def _rendered(lab: ResolvedLab, index: int, **cluster: object) -> dict[str, object]:
    nodes = members(lab, ("runc", "gvisor"))
    spec = k3s.k3s_cluster(lab, nodes)
    spec = k3s.K3sCluster(**{**spec.__dict__, **cluster})  # type: ignore[arg-type]
    node = nodes[index]
    if not node.control_plane:
        config = k3s.agent_config(spec, node.kubeadm, TOKEN)
    else:
        config = k3s.server_config(spec, node.kubeadm, TOKEN, join=index > 0)
    parsed = yaml.safe_load(k3s.render(config))
    assert parsed == config  # the YAML k3s reads holds exactly what was rendered
    return dict(parsed)


def test_server_and_agent_configs_are_the_fixtures_key_for_key() -> None:
    lab = _lab()
    assert _rendered(lab, 0) == _fixture("server.yaml")
    assert _rendered(lab, 1) == _fixture("agent.yaml")
    assert list(_rendered(lab, 1)) == list(_fixture("agent.yaml"))  # server: first, as k3s's docs write it


def test_cluster_takes_the_lab_fields_and_k3s_release_of_the_pinned_kubernetes() -> None:
    cluster = k3s.k3s_cluster(_lab(), members(_lab()))
    assert cluster.version == "v1.36.3+k3s1"
    assert cluster.server_url == "https://10.33.0.10:6443"
    assert (cluster.pod_cidr, cluster.service_cidr, cluster.servers) == ("10.42.0.0/16", "10.43.0.0/16", 1)
    assert k3s.k3s_version("v1.36.4+k3s2") == "v1.36.4+k3s2"


def test_three_servers_start_embedded_etcd_on_the_first_and_join_the_others(tmp_path: Path) -> None:
    lab = _lab("name: ha\nnetworks:\n  mgmt: {mode: user}\n  n: {mode: isolated, cidr: 10.34.0.0/24}\n"
               "groups:\n  cp: {count: 3, roles: [k8s-node, k8s-control-plane], ports: [6443], networks: [mgmt, n]}\n"
               "kubernetes: {distribution: k3s, version: '1.36', control_plane: cp, vip: 10.34.0.5}\n"
               "bundle: {source: build}\n",
               tmp_path)
    first, second = _rendered(lab, 0), _rendered(lab, 1)
    assert first["cluster-init"] is True
    assert "server" not in first
    assert second["server"] == "https://10.34.0.5:6443"  # joins go through keepalived's VIP, as with kubeadm
    assert "10.34.0.5" in first["tls-san"]
    assert first["node-ip"] in first["tls-san"]
    assert "cluster-init" not in second
    assert "node-taint" not in first  # no workers: the servers take the pods
    assert "flannel-backend" not in first  # no cni in this lab: k3s's own flannel stays


def test_cilium_without_kube_proxy_and_tcg_leases() -> None:
    lab = _lab()
    config = _rendered(lab, 0, kube_proxy=False, tcg=True)
    assert config["disable-kube-proxy"] is True
    assert config["kube-controller-manager-arg"] == config["kube-scheduler-arg"] == list(k3s.TCG_LEADER_ELECTION)
    assert "disable-kube-proxy" not in _rendered(lab, 0)


def test_explicit_taints_use_kubelets_key_value_effect_spelling() -> None:
    cluster = k3s.k3s_cluster(_lab(), members(_lab()))
    node = Node("w", "10.33.0.30", taints=(Taint("gpu", "NoExecute", "true"), Taint("spot")))
    assert k3s.agent_config(cluster, node, TOKEN)["node-taint"] == ["gpu=true:NoExecute", "spot:NoSchedule"]
    assert "node-taint" not in k3s.agent_config(cluster, Node("w", "10.33.0.30"), TOKEN)


def test_a_token_is_random_long_masked_and_redacted() -> None:
    one, two = k3s.new_token(), k3s.new_token()
    assert one.value != two.value
    assert len(one.value) == 64
    assert one.value not in repr(one)
    assert one.value not in REDACTOR.redact_text(f"token: {one.value}")
    with pytest.raises(PlanError, match="at least 32"):
        k3s.Token("short")


def test_the_config_is_written_from_stdin_0600_even_over_an_older_readable_file(tmp_path: Path) -> None:
    layout = k3s.Layout(config_dir=str(tmp_path / "etc"))
    (tmp_path / "etc").mkdir()
    Path(layout.config).write_text("old: 1\n")
    os.chmod(layout.config, 0o644)
    command = k3s.write_config_command(layout)
    assert TOKEN.value not in command
    subprocess.run(["sh", "-c", command], input=f"token: {TOKEN.value}\n", text=True, check=True)
    assert Path(layout.config).read_text() == f"token: {TOKEN.value}\n"
    assert Path(layout.config).stat().st_mode & 0o777 == 0o600
    assert list((tmp_path / "etc").iterdir()) == [Path(layout.config)]


def test_the_unit_is_the_one_install_sh_writes() -> None:
    assert k3s.systemd_unit("server") == (FIXTURES / "k3s.service").read_text()
    agent = k3s.systemd_unit("agent")
    assert "EnvironmentFile=-/etc/systemd/system/k3s-agent.service.env" in agent
    assert agent.rstrip().endswith("ExecStart=/usr/local/bin/k3s \\\n    agent")
    moved = k3s.systemd_unit("server", k3s.Layout(config_dir="/t/etc", data_dir="/t/data"))
    assert moved.rstrip().endswith("server \\\n\t--config \\\n\t/t/etc/config.yaml \\\n\t--data-dir \\\n\t/t/data")


def test_online_labs_run_the_install_script_keeping_a_binary_already_there(tmp_path: Path) -> None:
    (kept,) = k3s.install_commands("server", "v1.36.3+k3s1", binary_present=True, online=True)
    assert 'curl -sfL https://get.k3s.io -o "$script" && INSTALL_K3S_SKIP_DOWNLOAD=true INSTALL_K3S_EXEC=server ' \
           'sh "$script"' in kept
    (fetched,) = k3s.install_commands("agent", "v1.36.3+k3s1", binary_present=False, online=True)
    assert "INSTALL_K3S_VERSION=v1.36.3+k3s1 INSTALL_K3S_EXEC=agent sh" in fetched
    # a failed download fails the command (a `curl | sh` pipe would run nothing and succeed)
    failing = tmp_path / "bin"
    failing.mkdir()
    (failing / "curl").write_text("#!/bin/sh\nexit 22\n")
    (failing / "curl").chmod(0o755)
    env = {**os.environ, "PATH": f"{failing}:{os.environ['PATH']}"}
    assert subprocess.run(["sh", "-c", fetched], check=False, env=env).returncode == 22


def test_offline_labs_start_the_nodes_binary_with_its_own_unit_or_say_where_to_get_one() -> None:
    unit, env, start = k3s.install_commands("agent", "v1.36.3+k3s1", binary_present=True, online=False)
    assert unit.endswith("> /etc/systemd/system/k3s-agent.service")
    assert "Type=notify" in unit
    assert env == "umask 077 && touch /etc/systemd/system/k3s-agent.service.env"
    assert start == "systemctl daemon-reload && systemctl enable k3s-agent && systemctl restart k3s-agent"
    with pytest.raises(StageError, match="no k3s binary at /usr/local/bin/k3s") as info:
        k3s.install_commands("server", "v1.36.3+k3s1", binary_present=False, online=False)
    assert "mirrors.files" in (info.value.hint or "")


def test_wait_file_succeeds_on_a_written_file_and_fails_after_its_deadline(tmp_path: Path) -> None:
    path = tmp_path / "k3s.yaml"
    assert subprocess.run(["sh", "-c", k3s.wait_file_command(str(path), 1)], check=False).returncode == 1
    path.write_text("kind: Config\n")
    assert subprocess.run(["sh", "-c", k3s.wait_file_command(str(path), 1)], check=False).returncode == 0


def test_the_mirrors_binary_is_fetched_once_checked_against_its_sha256(tmp_path: Path) -> None:
    """The fetch command over a real loopback HTTP server: a wrong sha256 installs nothing and fails naming
    the file; the right one installs an executable; a second run keeps it without a download."""
    served = tmp_path / "mirror"
    served.mkdir()
    (served / "k3s").write_bytes(b"#!/bin/sh\necho k3s stand-in\n")
    digest = hashlib.sha256((served / "k3s").read_bytes()).hexdigest()
    layout = k3s.Layout(bin_dir=str(tmp_path / "bin"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/k3s"
        def fetch(sha: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["sh", "-c", k3s.fetch_binary_command(url, sha, layout)], capture_output=True,
                                  text=True, check=False, timeout=60)
        wrong = fetch("0" * 64)
        assert wrong.returncode == 1
        assert f"k3s from {url} does not have sha256 {'0' * 64}" in wrong.stderr
        assert list((tmp_path / "bin").iterdir()) == []  # the partial download is gone
        assert fetch(digest).stdout.strip() == "fetched"
        assert os.access(layout.binary, os.X_OK)
        (served / "k3s").unlink()  # a second run must not download
        assert fetch(digest).stdout.strip() == "kept"
        server.shutdown()
