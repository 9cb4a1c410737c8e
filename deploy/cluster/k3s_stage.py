"""The ``cluster`` stage for ``distribution: k3s``: the first server, then further servers and agents, the
admin kubeconfig in the lab's state dir.

Each part checks the node first, so a re-run does only what is missing: a first server with
/etc/rancher/k3s/k3s.yaml is up; a node with /var/lib/rancher/k3s/agent/kubelet.kubeconfig has joined.
The token is made here (or, on a later run, read from the server's node-token), kept in memory,
registered for redaction and sent on SSH standard input into the 0600 config file: never a command
line, the state or an artifact. Later work on the cluster goes through the ``kubernetes`` client.

Tested against a real sshd on loopback whose ``k3s`` is a script standing in for k3s itself (it records
its arguments and writes the files k3s would): k3s cannot be built here (its module is not on this
machine's Go module proxy), so no real k3s has run this stage on this machine.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from deploy.cluster import k3s
from deploy.cluster.k3s import LAYOUT, Layout, Role
from deploy.cluster.nodes import API_PORT, Member, NodeShell, handled_runtimes, members, shell_for
from deploy.errors import PlanError, StageError
from deploy.resources import Outputs, Resource

INSTALL_TIMEOUT = 2400.0  # a server's first start under TCG on a loaded 2-core host
READY_WAIT = 900  # seconds a started unit has to write its kubeconfig
ONLINE_SOURCES = ("auto", "upstream")  # bundle sources that may fetch the upstream install script
_HINT = "on the node: `journalctl -u {unit} -n 50` shows why k3s did not come up"


def run_k3s(_resource: Resource, ctx: Any) -> Outputs:
    """Executor of ``cluster:kubernetes`` when the lab's distribution is k3s (``ctx``: the StepContext)."""
    resolved = ctx.resolved

    def log(message: str) -> None:
        ctx.emit({"event": "progress", "message": message})
    nodes = members(resolved, handled_runtimes(resolved))
    shells = {m.node.name: shell_for(m, ctx.outputs_of, ctx.known_hosts, log) for m in nodes}
    cluster = k3s.k3s_cluster(resolved, nodes, tcg=_tcg(ctx, nodes[0]))
    online = resolved.lab.bundle.source in ONLINE_SOURCES
    admin, joined = bootstrap(nodes, shells, cluster, online=online, log=log)
    path = _write_kubeconfig(ctx, admin, nodes[0])
    return {"distribution": "k3s", "version": cluster.version, "endpoint": cluster.server_url,
            "kubeconfig": str(path), "nodes": [m.node.name for m in nodes], "joined": joined,
            "tcg": cluster.tcg}


def bootstrap(nodes: list[Member], shells: Mapping[str, NodeShell], cluster: k3s.K3sCluster, *, online: bool,
              log: Callable[[str], None], layouts: Mapping[str, Layout] | None = None) -> tuple[str, list[str]]:
    """Bring up what is missing; returns the first server's k3s.yaml and the nodes that joined now."""
    def layout(member: Member) -> Layout:
        return (layouts or {}).get(member.node.name, LAYOUT)
    first, cp = nodes[0], shells[nodes[0].node.name]
    first_layout = layout(first)
    token: k3s.Token | None = None
    if not cp.check(f"test -s {shlex.quote(first_layout.kubeconfig)}"):
        token = k3s.new_token()
        log(f"cluster: k3s server {cluster.version} on {first.node.name} (minutes under TCG)")
        _start(cp, "server", k3s.server_config(cluster, first.kubeadm, token), cluster.version, online=online,
               layout=first_layout, ready=first_layout.kubeconfig)
    admin = cp.run(f"cat {shlex.quote(first_layout.kubeconfig)}", what="reading k3s.yaml").stdout
    joined = []
    for member in nodes[1:]:
        shell, where = shells[member.node.name], layout(member)
        if shell.check(f"test -s {shlex.quote(where.agent_kubeconfig)}"):
            continue
        token = token or _node_token(cp, first_layout)
        role: Role = "server" if member.control_plane else "agent"
        config = (k3s.server_config(cluster, member.kubeadm, token, join=True) if member.control_plane
                  else k3s.agent_config(cluster, member.kubeadm, token))
        log(f"cluster: k3s {role} on {member.node.name} joins {cluster.server_url}")
        _start(shell, role, config, cluster.version, online=online, layout=where, ready=where.agent_kubeconfig)
        joined.append(member.node.name)
    return admin, joined


def _start(shell: NodeShell, role: Role, config: dict[str, Any], version: str, *, online: bool, layout: Layout,
           ready: str) -> None:
    """config.yaml (token inside) from stdin, then the unit, then wait until k3s wrote ``ready``."""
    unit = k3s.unit_name(role)
    shell.run(k3s.write_config_command(layout), stdin=k3s.render(config), what=f"writing {layout.config}")
    present = shell.check(f"test -x {shlex.quote(layout.binary)}")
    for command in k3s.install_commands(role, version, binary_present=present, online=online, layout=layout):
        shell.run(command, timeout=INSTALL_TIMEOUT, what=f"starting {unit} on {shell.name}",
                  hint=_HINT.format(unit=unit))
    shell.run(k3s.wait_file_command(ready, READY_WAIT), timeout=READY_WAIT + 60,
              what=f"waiting for {unit} on {shell.name} to write {ready}", hint=_HINT.format(unit=unit))


def _node_token(cp: NodeShell, layout: Layout) -> k3s.Token:
    """The server's node-token (an earlier run made the cluster; its token is not in memory any more)."""
    text = cp.run(f"cat {shlex.quote(layout.node_token)}", what="reading the server's node-token").stdout.strip()
    try:
        return k3s.Token(text)
    except PlanError:  # never quote the file: it is the cluster secret
        raise StageError("cluster", f"{layout.node_token} on {cp.name} holds no k3s token", host=cp.name) from None


def _tcg(ctx: Any, first: Member) -> bool:
    accel = getattr(ctx.providers.get(first.node.provider), "accel", None)
    return bool(callable(accel) and accel() == "tcg")


def _write_kubeconfig(ctx: Any, admin: str, first: Member) -> Path:
    from deploy.cluster import kubeconfig

    forwarded = ctx.outputs_of(f"machine:{first.node.name}").get("ports", {}).get(str(API_PORT))
    if forwarded is None:
        raise StageError("cluster", f"{first.node.name} has no loopback forward of port {API_PORT}",
                         host=first.node.name, hint=f"add `ports: [{API_PORT}]` to the control-plane group")
    server = f"https://127.0.0.1:{forwarded}"
    return kubeconfig.write(ctx.state_dir, kubeconfig.localize(admin, ctx.resolved.name, server))


def _executor() -> Any:
    from deploy.steps import per_resource

    return per_resource(run_k3s)


run_k3s_step = _executor()
