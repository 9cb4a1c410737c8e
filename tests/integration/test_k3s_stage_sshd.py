"""The k3s executor's shell sequence over a real sshd on loopback (OpenSSH, our SSH transport, sh).

Test doubles, and why: k3s cannot be built here (github.com/k3s-io/k3s is refused by this machine's Go
module proxy), so ``k3s`` on the "nodes" is a shell script that records its arguments and writes the
files k3s would (node-token, k3s.yaml, the kubelet's kubeconfig), refusing a config that is not 0600 or
an agent token the server did not issue. ``systemctl`` runs the unit's ExecStart from the unit file the
executor wrote, as systemd would for a Type=notify unit (it returns once the service is up). Everything
lives under the test's temporary folder: the host's /etc and systemd are never touched.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import json
import textwrap
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from deploy.cluster import k3s
from deploy.cluster.k3s_stage import bootstrap
from deploy.cluster.nodes import Member, NodeShell, members
from deploy.cluster.stage import write_kubeconfig
from deploy.errors import StageError
from deploy.model import open_lab
from deploy.secrets import REDACTOR
from deploy.ssh.hostkeys import HostKeyStore
from deploy.ssh.transport import CommandResult, wait_for_ssh
from tests.integration.sshd_fixtures import SshServer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "k3s"

K3S_DOUBLE = """\
#!/bin/sh
# stands in for k3s (see the test module's docstring)
set -e
echo "$*" >> {root}/k3s-calls
role=$1; shift
config=/etc/rancher/k3s/config.yaml; data=/var/lib/rancher/k3s
while [ $# -gt 0 ]; do
  case $1 in --config) config=$2; shift 2;; --data-dir) data=$2; shift 2;; *) shift;; esac
done
case $config in {root}/*) ;; *) echo "refusing a config outside the test: $config" >&2; exit 2;; esac
[ "$(stat -c %a "$config")" = 600 ] || {{ echo "$config is not 0600" >&2; exit 3; }}
token=$(sed -n 's/^token: //p' "$config")
[ -n "$token" ] || {{ echo "no token in $config" >&2; exit 4; }}
umask 077
mkdir -p "$data/agent"
if [ "$role" = server ]; then
  mkdir -p "$data/server"
  printf 'K10%s::server:%s\\n' 5e1f0a2b "$token" > "$data/server/node-token"
  cat > "$(dirname "$config")/k3s.yaml" <<EOF
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0EtREFUQQ==
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {{}}
users:
- name: default
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZLW9mLSR0b2tlbg==
EOF
else
  issued=$(cat {server_token})
  [ "$token" = "$issued" ] || [ "$token" = "${{issued##*::server:}}" ] || {{ echo "token not issued" >&2; exit 5; }}
  sed -n 's/^server: //p' "$config" > "$data/agent/server-url"
fi
echo "kind: Config" > "$data/agent/kubelet.kubeconfig"
"""

SYSTEMCTL_DOUBLE = """\
#!/bin/sh
# stands in for systemctl: `restart UNIT` runs the unit file's ExecStart (continuation lines joined)
set -e
echo "$*" >> {root}/systemctl-calls
[ "$1" = restart ] || exit 0
command=$(sed -n '/^ExecStart=/,/[^\\\\]$/p' {systemd}/"$2".service \\
  | sed 's/^ExecStart=//; s/\\\\$//' | tr '\\n\\t' '  ')
eval "$command"
"""


@dataclass
class RecordingShell(NodeShell):
    """A real NodeShell that also keeps every command and what went on its stdin."""

    calls: list[tuple[str, str | None]] = field(default_factory=list)

    def run(self, command: str, *, timeout: float = 120, stdin: str | None = None, what: str | None = None,
            hint: str | None = None) -> CommandResult:
        self.calls.append((command, stdin))
        return super().run(command, timeout=timeout, stdin=stdin, what=what, hint=hint)

    def check(self, command: str) -> bool:
        self.calls.append((command, None))
        return super().check(command)


@dataclass
class Nodes:
    root: Path
    members: list[Member]
    layouts: dict[str, k3s.Layout]
    known_hosts: Path
    sshd: SshServer

    def shells(self) -> dict[str, RecordingShell]:
        return {m.node.name: RecordingShell(m.node.name, self.sshd.endpoint(), self.known_hosts)
                for m in self.members}

    def calls(self, what: str) -> list[str]:
        path = self.root / f"{what}-calls"
        return path.read_text().splitlines() if path.exists() else []


def _layout(root: Path, name: str, bin_dir: Path) -> k3s.Layout:
    base = root / name
    return k3s.Layout(bin_dir=str(bin_dir), config_dir=str(base / "etc"), data_dir=str(base / "data"),
                      systemd_dir=str(base / "systemd"), systemctl=str(base / "bin" / "systemctl"))


def _script(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def nodes(sshd: SshServer, tmp_path: Path) -> Nodes:
    found = members(open_lab(FIXTURES / "lab.yaml")[1], ("runc", "gvisor"))
    root = tmp_path / "nodes"
    bin_dir = root / "bin"
    layouts = {m.node.name: _layout(root, m.node.name, bin_dir) for m in found}
    server = layouts[found[0].node.name]
    _script(bin_dir / "k3s", K3S_DOUBLE.format(root=root, server_token=server.node_token))
    for layout in layouts.values():
        _script(Path(layout.systemctl), SYSTEMCTL_DOUBLE.format(root=root, systemd=layout.systemd_dir))
    known = HostKeyStore(tmp_path / "known_hosts")
    for member in found:
        wait_for_ssh(sshd.endpoint(), known_hosts=known, alias=member.node.name, timeout=10)
    return Nodes(root, found, layouts, known.path, sshd)


def _run(nodes: Nodes, shells: dict[str, RecordingShell]) -> tuple[str, list[str]]:
    cluster = k3s.k3s_cluster(open_lab(FIXTURES / "lab.yaml")[1], nodes.members)
    return bootstrap(nodes.members, shells, cluster, online=False, log=lambda _m: None, layouts=nodes.layouts)


def test_server_then_agent_come_up_with_the_token_only_on_stdin(nodes: Nodes, tmp_path: Path) -> None:
    shells = nodes.shells()
    admin, joined = _run(nodes, shells)
    assert joined == ["workers-1"]
    server, agent = (nodes.layouts[m.node.name] for m in nodes.members)
    assert nodes.calls("k3s") == [f"server --config {server.config} --data-dir {server.data_dir}",
                                  f"agent --config {agent.config} --data-dir {agent.data_dir}"]
    assert nodes.calls("systemctl") == ["daemon-reload", "enable k3s", "restart k3s",
                                        "daemon-reload", "enable k3s-agent", "restart k3s-agent"]
    assert yaml.safe_load(admin)["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    written = {name: yaml.safe_load(Path(layout.config).read_text()) for name, layout in nodes.layouts.items()}
    token = written["control-1"]["token"]
    assert written["workers-1"]["token"] == token
    assert Path(agent.data_dir, "agent", "server-url").read_text().strip() == "https://10.33.0.10:6443"
    assert written["control-1"] == {**yaml.safe_load((FIXTURES / "server.yaml").read_text()), "token": token}
    for layout in nodes.layouts.values():
        assert Path(layout.config).stat().st_mode & 0o777 == 0o600
        assert Path(layout.systemd_dir, "k3s.service" if layout is server else "k3s-agent.service").is_file()
    commands = [command for shell in shells.values() for command, _ in shell.calls]
    assert not [c for c in commands if token in c]
    assert sum(1 for shell in shells.values() for _, stdin in shell.calls if stdin and token in stdin) == 2
    assert token not in REDACTOR.redact_text(json.dumps(written))
    _assert_localized(nodes, admin, tmp_path)


def test_a_converged_cluster_runs_nothing_and_a_lost_agent_rejoins_with_the_node_token(nodes: Nodes) -> None:
    _run(nodes, nodes.shells())
    before = nodes.calls("k3s")
    assert _run(nodes, nodes.shells())[1] == []
    assert nodes.calls("k3s") == before
    agent = nodes.layouts["workers-1"]
    Path(agent.agent_kubeconfig).unlink()
    shells = nodes.shells()
    assert _run(nodes, shells)[1] == ["workers-1"]
    assert nodes.calls("k3s") == [*before, before[-1]]
    node_token = Path(nodes.layouts["control-1"].node_token).read_text().strip()
    assert yaml.safe_load(Path(agent.config).read_text())["token"] == node_token
    assert not [c for shell in shells.values() for c, _ in shell.calls if node_token in c]
    assert node_token not in REDACTOR.redact_text(f"join with {node_token}")


def test_a_node_without_a_binary_on_an_offline_lab_stops_before_starting_anything(nodes: Nodes) -> None:
    (nodes.root / "bin" / "k3s").unlink()
    with pytest.raises(StageError, match="no k3s binary at") as info:
        _run(nodes, nodes.shells())
    assert "mirrors.files" in (info.value.hint or "")
    assert nodes.calls("systemctl") == []


def test_an_offline_node_takes_k3s_from_the_mirror_checked_by_sha256_then_starts(nodes: Nodes,
                                                                                 tmp_path: Path) -> None:
    """mirrors.files + mirrors.checksums.k3s: the binary moves to a loopback HTTP mirror, the nodes have
    none; the stage fetches it (checked) and starts server and agent (a fetch over a kept binary: test_k3s_render)."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (nodes.root / "bin" / "k3s").rename(mirror / "k3s")
    digest = hashlib.sha256((mirror / "k3s").read_bytes()).hexdigest()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        cluster = dataclasses.replace(k3s.k3s_cluster(open_lab(FIXTURES / "lab.yaml")[1], nodes.members),
                                      binary_url=f"http://127.0.0.1:{server.server_address[1]}/k3s",
                                      binary_sha256=digest)
        _, joined = bootstrap(nodes.members, nodes.shells(), cluster, online=False, log=lambda _m: None,
                              layouts=nodes.layouts)
        assert joined == ["workers-1"]
        assert (nodes.root / "bin" / "k3s").read_bytes() == (mirror / "k3s").read_bytes()
        assert [c.split()[0] for c in nodes.calls("k3s")] == ["server", "agent"]
        server.shutdown()


def test_a_failing_k3s_is_a_stage_error_naming_the_unit_and_its_log(nodes: Nodes) -> None:
    _script(nodes.root / "bin" / "k3s", textwrap.dedent("""\
        #!/bin/sh
        echo "level=fatal msg=\\"starting kubernetes: preparing server: bad\\"" >&2
        exit 1
        """))
    with pytest.raises(StageError, match=r"(?s)starting k3s on control-1 failed.*preparing server") as info:
        _run(nodes, nodes.shells())
    assert "journalctl -u k3s" in (info.value.hint or "")


def _assert_localized(nodes: Nodes, admin: str, tmp_path: Path) -> None:
    """k3s.yaml made the lab's kubeconfig: loopback forward, names of the lab, 0600."""
    lab = open_lab(FIXTURES / "lab.yaml")[1]
    outputs = {"machine:control-1": {"ports": {"6443": 46443}}}
    ctx = SimpleNamespace(state_dir=tmp_path / "state", resolved=lab, outputs_of=outputs.__getitem__)
    (tmp_path / "state").mkdir()
    path = write_kubeconfig(ctx, admin, nodes.members[0])
    doc = yaml.safe_load(path.read_text())
    assert path.stat().st_mode & 0o777 == 0o600
    assert doc["clusters"] == [{"name": "k3s", "cluster": {"certificate-authority-data": "Q0EtREFUQQ==",
                                                           "server": "https://127.0.0.1:46443"}}]
    assert doc["current-context"] == "k3s"
    assert "S0VZLW9mLSR0b2tlbg==" not in REDACTOR.redact_text(path.read_text())
    no_forward = SimpleNamespace(**{**ctx.__dict__, "outputs_of": lambda _r: {}})
    with pytest.raises(StageError, match="no loopback forward of port 6443"):
        write_kubeconfig(no_forward, admin, nodes.members[0])
