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
from typing import Any

from deploy.cluster import ha, k3s
from deploy.cluster.k3s import LAYOUT, Layout, Role
from deploy.cluster.nodes import Member, NodeShell, handled_runtimes, members, shell_for
from deploy.cluster.stage import progress, tcg_of, write_kubeconfig
from deploy.errors import PlanError, StageError
from deploy.resources import Outputs, Resource

INSTALL_TIMEOUT = 2400.0  # a server's first start under TCG on a loaded 2-core host
READY_WAIT = 900  # seconds a started unit has to write its kubeconfig
ONLINE_SOURCES = ("auto", "upstream", "build")  # may fetch the upstream install script (nothing builds k3s)
_HINT = "on the node: `journalctl -u {unit} -n 50` shows why k3s did not come up"


def run_k3s(_resource: Resource, ctx: Any) -> Outputs:
    """``cluster:kubernetes`` when the lab's distribution is k3s (``ctx``: the StepContext): the first server
    and the lab's kubeconfig; every other node joins in its own member step (:func:`run_k3s_member`)."""
    first, cluster, online, log = _context(ctx)
    shell = shell_for(first, ctx.outputs_of, ctx.known_hosts, log)
    _keepalived(ctx, first, shell, log, first_server=True)
    admin, started = bootstrap([first], {first.node.name: shell}, cluster, online=online, log=log)
    path = write_kubeconfig(ctx, admin, first)
    return {"distribution": "k3s", "version": cluster.version, "endpoint": cluster.server_url,
            "kubeconfig": str(path), "first": first.node.name, "initialised": bool(started), "tcg": cluster.tcg}


def run_k3s_member(member: Member, ctx: Any) -> Outputs:
    """``member:<node>`` of a k3s lab: a further server or an agent joins unless it already has."""
    first, cluster, online, log = _context(ctx)
    shells = {m.node.name: shell_for(m, ctx.outputs_of, ctx.known_hosts, log) for m in (first, member)}
    _keepalived(ctx, member, shells[member.node.name], log, first_server=False)
    _, joined = bootstrap([first, member], shells, cluster, online=online, log=log)
    return {"joined": bool(joined), "control_plane": member.control_plane}


def _keepalived(ctx: Any, member: Member, shell: NodeShell, log: Callable[[str], None], *, first_server: bool) -> None:
    """With ``kubernetes.vip``, keepalived on every server first, as for kubeadm (:mod:`deploy.cluster.ha`); the
    first server holds the VIP before it starts, so joins through the VIP find it."""
    plan = ha.plan_of(ctx.resolved) if member.control_plane else None
    if plan is None:
        return
    started = first_server and shell.check(f"test -s {shlex.quote(LAYOUT.kubeconfig)}")
    ha.ensure_keepalived(shell, plan, member.node.name, log, hold_vip=first_server and not started)


def _context(ctx: Any) -> tuple[Member, k3s.K3sCluster, bool, Callable[[str], None]]:
    nodes = members(ctx.resolved, handled_runtimes(ctx.resolved))
    cluster = k3s.k3s_cluster(ctx.resolved, nodes, tcg=tcg_of(ctx, nodes[0]))
    return nodes[0], cluster, ctx.resolved.lab.bundle.source in ONLINE_SOURCES, progress(ctx)


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
        _start(cp, "server", k3s.server_config(cluster, first.kubeadm, token), cluster, online=online,
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
        _start(shell, role, config, cluster, online=online, layout=where, ready=where.agent_kubeconfig)
        joined.append(member.node.name)
    return admin, joined


def _start(shell: NodeShell, role: Role, config: dict[str, Any], cluster: k3s.K3sCluster, *, online: bool,
           layout: Layout, ready: str) -> None:
    """config.yaml (token inside) from stdin, the mirror's binary if the lab names one, then the unit, then
    wait until k3s wrote ``ready``."""
    unit, version = k3s.unit_name(role), cluster.version
    shell.run(k3s.write_config_command(layout), stdin=k3s.render(config), what=f"writing {layout.config}")
    if cluster.binary_url and cluster.binary_sha256:
        shell.run(k3s.fetch_binary_command(cluster.binary_url, cluster.binary_sha256, layout), timeout=600,
                  what=f"fetching k3s from {cluster.binary_url} on {shell.name}", hint="check mirrors.files and "
                  "mirrors.checksums.k3s (`sha256sum k3s` of the mirror's copy)")
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
