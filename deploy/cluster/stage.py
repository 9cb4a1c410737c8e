"""The ``cluster`` stage, first half: kubeadm init on the first control plane and the admin kubeconfig
in the lab's state dir (every other node joins in its own ``member`` step, :mod:`deploy.cluster.join`).

The node is checked first, so a re-run does only what is missing: a control plane with admin.conf
has been initialised. Bootstrap tokens and the CA hash are made in memory, registered for
redaction and handed to kubeadm on its standard input over SSH (``--config /dev/stdin``): never a
command line, a file on disk, the state or an artifact. Later work on the cluster goes through the
``kubernetes`` client.
"""

from __future__ import annotations

import base64
import hashlib
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from deploy.cluster import ha, kubeadm
from deploy.cluster.nodes import API_PORT, Member, NodeShell, cluster_of, handled_runtimes, members, shell_for
from deploy.errors import StageError
from deploy.resources import Outputs, Resource

ADMIN_CONF = "/etc/kubernetes/admin.conf"
INIT_TIMEOUT = 2400.0  # kubeadm init under TCG on a loaded 2-core host (its own waits are widened too)
HINT = "on the node: `journalctl -u kubelet -n 50` and `crictl ps -a` show what kubeadm waited for"


def run_cluster(_resource: Resource, ctx: Any) -> Outputs:
    """Executor of ``cluster:kubernetes`` (``ctx`` is the run's StepContext): kubeadm init on the first
    control plane unless it has been initialised, then the admin kubeconfig (the other nodes join as
    ``member:<node>`` steps, :mod:`deploy.cluster.join`)."""
    if ctx.resolved.lab.kubernetes.distribution == "k3s":
        from deploy.cluster.k3s_stage import run_k3s

        return run_k3s(_resource, ctx)
    first = members(ctx.resolved)[0]
    tcg = tcg_of(ctx, first)
    cluster = cluster_of(ctx.resolved, tcg=tcg)
    log = progress(ctx)
    cp = shell_for(first, ctx.outputs_of, ctx.known_hosts, log)
    initialised = cp.check(f"test -s {ADMIN_CONF}")
    plan = ha.plan_of(ctx.resolved)
    if plan is not None:  # keepalived answers for the VIP that kubeadm's controlPlaneEndpoint names
        ha.ensure_keepalived(cp, plan, first.node.name, log, hold_vip=not initialised)
    if not initialised:
        labelled = members(ctx.resolved, handled_runtimes(ctx.resolved))[0]
        _init(cp, cluster, labelled, log)
    admin = cp.run(f"cat {ADMIN_CONF}", what="reading the admin kubeconfig").stdout
    path = write_kubeconfig(ctx, admin, first)
    return {"version": cluster.version, "endpoint": cluster.endpoint, "kubeconfig": str(path),
            "first": first.node.name, "initialised": not initialised, "tcg": tcg}


def cluster_api(ctx: Any) -> Any:
    """A ``kubernetes`` ApiClient for the lab's cluster, through the kubeconfig this stage wrote."""
    from deploy.cluster import kube

    return kube.client_for(Path(ctx.outputs_of("cluster:kubernetes")["kubeconfig"]))


def progress(ctx: Any) -> Callable[[str], None]:
    """A progress line in the run's events (``deploy up`` shows steps; the log keeps the detail)."""
    def log(message: str) -> None:
        ctx.emit({"event": "progress", "message": message})

    return log


def tcg_of(ctx: Any, first: Member) -> bool:
    provider = ctx.providers.get(first.node.provider)
    accel = getattr(provider, "accel", None)
    return bool(callable(accel) and accel() == "tcg")


def _init(cp: NodeShell, cluster: kubeadm.Cluster, first: Member, log: Callable[[str], None]) -> None:
    token = kubeadm.new_token()  # joins make their own short-lived tokens; this one expires with kubeadm's default
    if cluster.tcg:
        write_patches(cp)
        log(f"cluster: {first.node.name} runs under TCG: kubeadm's waits and the static pods' probes are widened "
            f"(kubeadm patches in {kubeadm.PATCHES_DIR})")
    log(f"cluster: kubeadm init {cluster.version} on {first.node.name} (minutes under TCG)")
    cp.run("kubeadm init --config /dev/stdin", stdin=kubeadm.render_init(cluster, first.kubeadm, token),
           timeout=INIT_TIMEOUT, what=f"kubeadm init on {first.node.name}", hint=HINT)


def write_patches(shell: NodeShell) -> None:
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


def write_kubeconfig(ctx: Any, admin: str, first: Member) -> Path:
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
