"""The ``cluster`` stage, second half: one ``member:<node>`` step per node beyond the first control plane.

    run_member       join the node unless it already belongs to the cluster
    teardown_member  a node leaving the lab: drained and deleted from the cluster before its machine goes

A member counts as joined when the node has /etc/kubernetes/kubelet.conf *and* the API server
knows its Node; a node with kubelet.conf that the cluster no longer knows (deleted by hand, or its
member step replaced) is reset with ``kubeadm reset -f`` and joins again. Each join makes its own
bootstrap token on the first control plane (one hour, handed over on stdin, redacted), so members
join in parallel and a join on a later day needs nothing from the run that initialised the cluster.
Further control planes (a lab with ``kubernetes.vip``) run keepalived first, then join one at a time
with the certificates a fresh upload encrypted with a fresh certificate key (:mod:`deploy.cluster.ha`).
A removal drains through the Eviction API (PodDisruptionBudgets hold) with a deadline; ``deploy
destroy`` skips it, since the whole cluster goes.
"""

from __future__ import annotations

import dataclasses
import shlex
import threading
from pathlib import Path
from typing import Any

from deploy.cluster import ha, kubeadm
from deploy.cluster.nodes import Member, NodeShell, cluster_of, handled_runtimes, members, shell_for
from deploy.cluster.stage import ADMIN_CONF, HINT, ca_cert_hash, cluster_api, progress, tcg_of, write_patches
from deploy.errors import StageError
from deploy.resources import Outputs, Resource

KUBELET_CONF = "/etc/kubernetes/kubelet.conf"
JOIN_TIMEOUT = 1800.0
JOIN_ATTEMPTS = 3  # a join whose preflight timed out on the API server runs again (:func:`preflight_timed_out`)
DRAIN_TIMEOUT = 600.0
_CONTROL_PLANE_JOINS = threading.Lock()


def run_member(resource: Resource, ctx: Any) -> Outputs:
    """Executor of ``member:<node>`` (``ctx`` is the run's StepContext)."""
    nodes = members(ctx.resolved, handled_runtimes(ctx.resolved))
    member = next((m for m in nodes if m.node.name == resource.name), None)
    if member is None:
        raise StageError("cluster", f"{resource.name} is not a node of the lab's cluster", host=resource.name)
    if ctx.resolved.lab.kubernetes.distribution == "k3s":
        from deploy.cluster.k3s_stage import run_k3s_member

        return run_k3s_member(member, ctx)
    log = progress(ctx)
    shell = shell_for(member, ctx.outputs_of, ctx.known_hosts, log)
    plan = ha.plan_of(ctx.resolved) if member.control_plane else None
    if plan is not None:  # a BACKUP that takes the VIP only once its own API server answers
        ha.ensure_keepalived(shell, plan, member.node.name, log)
    if shell.check(f"test -s {KUBELET_CONF}"):
        if _registered(ctx, member.node.name):
            return {"joined": False, "control_plane": member.control_plane}
        log(f"cluster: {member.node.name} has a kubelet.conf the cluster does not know: kubeadm reset, then join")
        shell.run("kubeadm reset -f", timeout=600, what=f"kubeadm reset on {member.node.name}", hint=HINT)
    first = nodes[0]
    cluster = cluster_of(ctx.resolved, tcg=tcg_of(ctx, first))
    cp = shell_for(first, ctx.outputs_of, ctx.known_hosts, log)
    if plan is None:
        _join(shell, cluster, member, _secrets(cp, member), log)
    else:
        with _CONTROL_PLANE_JOINS:  # one upload's key per join, and etcd grows one member at a time
            upload = ha.upload_certs(cp, cluster, first.kubeadm, None)
            secrets = dataclasses.replace(_secrets(cp, member), certificate_key=upload.key.value)
            _join(shell, cluster, member, secrets, log)
    return {"joined": True, "control_plane": member.control_plane}


def _registered(ctx: Any, name: str) -> bool:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from deploy.cluster.kube_api import server_message

    try:
        client.CoreV1Api(cluster_api(ctx)).read_node(name)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise StageError("cluster", f"reading node {name}: {server_message(exc)}", host=name) from None
    return True


def _secrets(cp: NodeShell, member: Member) -> kubeadm.JoinSecrets:
    """A fresh one-hour bootstrap token made on the first control plane, and the CA's hash."""
    token = kubeadm.new_token()
    cp.run(f"kubeadm token create --ttl 1h --description {shlex.quote('labdeploy join ' + member.node.name)} "
           "\"$(cat)\" >/dev/null", stdin=token.value, what="creating a bootstrap token")
    admin = cp.run(f"cat {ADMIN_CONF}", what="reading the admin kubeconfig").stdout
    return kubeadm.JoinSecrets(token, (ca_cert_hash(admin),))


def _join(shell: NodeShell, cluster: kubeadm.Cluster, member: Member, secrets: kubeadm.JoinSecrets,
          log: Any) -> None:
    if member.control_plane and secrets.certificate_key is None:
        raise StageError("cluster", f"{member.node.name}: joining further control planes needs a VIP, "
                         "which this lab does not define", host=member.node.name, hint="set kubernetes.vip")
    if cluster.tcg:
        write_patches(shell)
    config = kubeadm.render_join(cluster, member.kubeadm, secrets)
    for attempt in range(1, JOIN_ATTEMPTS + 1):
        log(f"cluster: kubeadm join of {member.node.name}")
        try:
            shell.run("kubeadm join --config /dev/stdin", stdin=config, timeout=JOIN_TIMEOUT,
                      what=f"kubeadm join of {member.node.name}", hint=HINT)
            return
        except StageError as exc:
            if attempt == JOIN_ATTEMPTS or not preflight_timed_out(exc.message):
                raise
            log(f"cluster: kubeadm join of {member.node.name}: the API server did not answer kubeadm's preflight "
                f"in time (attempt {attempt} of {JOIN_ATTEMPTS}; preflight writes nothing), joining again")


def preflight_timed_out(output: str) -> bool:
    """Whether a failed ``kubeadm join`` stopped in its preflight phase on an API call that timed out: its
    client gives each read of kubeadm-config and kube-proxy's ConfigMap 10 s, which an API server under TCG
    just after init can miss. Preflight writes nothing on the node, so the same join can run again; any
    other failure (a check that failed, a bad token) is final."""
    return "error execution phase preflight" in output and any(sign in output for sign in _TIMEOUT_SIGNS)


_TIMEOUT_SIGNS = ("Client.Timeout exceeded", "context deadline exceeded", "TLS handshake timeout", "i/o timeout")


def teardown_member(_provider: Any, name: str, ctx: Any) -> None:
    """Drain ``name`` and delete its Node (before its machine is destroyed); nothing on ``deploy destroy``
    or when the cluster's kubeconfig is gone with it."""
    from deploy.cluster import kube

    kubeconfig = ctx.outputs_of("cluster:kubernetes").get("kubeconfig")
    if ctx.destroying or not kubeconfig or not Path(kubeconfig).exists():
        return
    log = progress(ctx)
    api = kube.client_for(Path(kubeconfig))
    log(f"cluster: draining {name} before it leaves the cluster")
    evicted = kube.drain(api, name, DRAIN_TIMEOUT, stage="cluster")
    kube.delete_node(api, name, stage="cluster")
    log(f"cluster: {name} drained ({len(evicted)} pods evicted) and deleted from the cluster")


def _executor() -> Any:
    from deploy.steps import per_resource

    return per_resource(run_member)


run_member_step = _executor()
