"""The ``cluster`` stage: kubeadm init on the first control plane, join of every other node, the admin
kubeconfig in the lab's state dir.

Each part checks the node first, so a re-run does only what is missing: a node with
/etc/kubernetes/kubelet.conf has joined; a control plane with admin.conf has been initialised. The
bootstrap token and the CA hash are made here, kept in memory, registered for redaction and handed
to kubeadm on its standard input over SSH (``--config /dev/stdin``): never a command line, a file on
disk, the state or an artifact. Later work on the cluster goes through the ``kubernetes`` client.
"""

from __future__ import annotations

import base64
import hashlib
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from deploy.cluster import kubeadm
from deploy.cluster.nodes import API_PORT, Member, NodeShell, cluster_of, handled_runtimes, members, shell_for
from deploy.errors import StageError
from deploy.resources import Outputs, Resource

ADMIN_CONF = "/etc/kubernetes/admin.conf"
KUBELET_CONF = "/etc/kubernetes/kubelet.conf"
INIT_TIMEOUT = 2400.0  # kubeadm init under TCG on a loaded 2-core host (its own waits are widened too)
JOIN_TIMEOUT = 1800.0
_HINT = "on the node: `journalctl -u kubelet -n 50` and `crictl ps -a` show what kubeadm waited for"


def run_cluster(_resource: Resource, ctx: Any) -> Outputs:
    """Executor of ``cluster:kubernetes`` (``ctx`` is the run's StepContext)."""
    resolved = ctx.resolved

    def log(message: str) -> None:
        ctx.emit({"event": "progress", "message": message})
    nodes = members(resolved, handled_runtimes(resolved))
    shells = {m.node.name: shell_for(m, ctx.outputs_of, ctx.known_hosts, log) for m in nodes}
    first = nodes[0]
    tcg = _tcg(ctx, first)
    cluster = cluster_of(resolved, tcg=tcg)
    cp = shells[first.node.name]
    token = _init(cp, cluster, first, log) if not cp.check(f"test -s {ADMIN_CONF}") else None
    admin = cp.run(f"cat {ADMIN_CONF}", what="reading the admin kubeconfig").stdout
    secrets = None
    joined = []
    for member in nodes[1:]:
        shell = shells[member.node.name]
        if shell.check(f"test -s {KUBELET_CONF}"):
            continue
        secrets = secrets or _join_secrets(cp, admin, token, member)
        _join(shell, cluster, member, secrets, log)
        joined.append(member.node.name)
    path = _write_kubeconfig(ctx, admin, first)
    return {"version": cluster.version, "endpoint": cluster.endpoint, "kubeconfig": str(path),
            "nodes": [m.node.name for m in nodes], "joined": joined, "tcg": tcg}


def _tcg(ctx: Any, first: Member) -> bool:
    provider = ctx.providers.get(first.node.provider)
    accel = getattr(provider, "accel", None)
    return bool(callable(accel) and accel() == "tcg")


def _init(cp: NodeShell, cluster: kubeadm.Cluster, first: Member, log: Callable[[str], None]
          ) -> kubeadm.BootstrapToken:
    token = kubeadm.new_token()
    if cluster.tcg:
        _write_patches(cp)
        log(f"cluster: {first.node.name} runs under TCG: kubeadm's waits and the static pods' probes are widened "
            f"(kubeadm patches in {kubeadm.PATCHES_DIR})")
    log(f"cluster: kubeadm init {cluster.version} on {first.node.name} (minutes under TCG)")
    cp.run("kubeadm init --config /dev/stdin", stdin=kubeadm.render_init(cluster, first.kubeadm, token),
           timeout=INIT_TIMEOUT, what=f"kubeadm init on {first.node.name}", hint=_HINT)
    return token


def _write_patches(shell: NodeShell) -> None:
    script = [f"mkdir -p {kubeadm.PATCHES_DIR}"]
    for name, text in sorted(kubeadm.tcg_patches().items()):
        script.append(f"printf %s {shlex.quote(text)} > {kubeadm.PATCHES_DIR}/{name}")
    shell.run(" && ".join(script), what="writing kubeadm's TCG patches")


def ca_cert_hash(admin_conf: str) -> str:
    """kubeadm's ``sha256:<hex>`` of the cluster CA's SubjectPublicKeyInfo, from the admin kubeconfig."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    try:
        data = yaml.safe_load(admin_conf)["clusters"][0]["cluster"]["certificate-authority-data"]
        cert = x509.load_pem_x509_certificate(base64.b64decode(data))
    except (KeyError, IndexError, TypeError, ValueError, yaml.YAMLError) as exc:
        raise StageError("cluster", f"the admin kubeconfig has no readable cluster CA ({exc})") from None
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def _join_secrets(cp: NodeShell, admin: str, token: kubeadm.BootstrapToken | None, member: Member
                  ) -> kubeadm.JoinSecrets:
    if token is None:  # the cluster was initialised by an earlier run: a fresh, short-lived token
        token = kubeadm.new_token()
        cp.run(f"kubeadm token create --ttl 1h --description {shlex.quote('labdeploy join ' + member.node.name)} "
               "\"$(cat)\" >/dev/null", stdin=token.value, what="creating a bootstrap token")
    return kubeadm.JoinSecrets(token, (ca_cert_hash(admin),))


def _join(shell: NodeShell, cluster: kubeadm.Cluster, member: Member, secrets: kubeadm.JoinSecrets,
          log: Callable[[str], None]) -> None:
    if member.control_plane:
        raise StageError("cluster", f"{member.node.name}: joining further control planes needs a VIP, "
                         "which this lab does not define", host=member.node.name,
                         hint="use one control plane (HA control planes are not built yet)")
    if cluster.tcg:
        _write_patches(shell)
    log(f"cluster: kubeadm join of {member.node.name}")
    shell.run("kubeadm join --config /dev/stdin", stdin=kubeadm.render_join(cluster, member.kubeadm, secrets),
              timeout=JOIN_TIMEOUT, what=f"kubeadm join of {member.node.name}", hint=_HINT)


def _write_kubeconfig(ctx: Any, admin: str, first: Member) -> Path:
    from deploy.cluster import kubeconfig

    ports = ctx.outputs_of(f"machine:{first.node.name}").get("ports", {})
    forwarded = ports.get(str(API_PORT))
    if forwarded is None:
        raise StageError("cluster", f"{first.node.name} has no loopback forward of port {API_PORT}",
                         host=first.node.name, hint=f"add `ports: [{API_PORT}]` to the control-plane group")
    server = f"https://127.0.0.1:{forwarded}"
    return kubeconfig.write(ctx.state_dir, kubeconfig.localize(admin, ctx.resolved.name, server))


def _executor() -> Any:
    from deploy.steps import per_resource

    return per_resource(run_cluster)


run_cluster_step = _executor()
