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
INIT_DONE = "/etc/kubernetes/labdeploy-init.done"  # written once kubeadm init exited 0
INIT_PROBE_SECONDS = 300
# done | fresh | partial (admin.conf, and the API server says kubeadm's upload-config never ran, or that the
# admin's ClusterRoleBinding, made in kubeadm's wait for the control plane, is missing) | unreachable.
# A node initialised before INIT_DONE existed has the kubeadm-config ConfigMap: it is marked done, not reset.


def init_state_command(admin: str = ADMIN_CONF, done: str = INIT_DONE, seconds: int = INIT_PROBE_SECONDS) -> str:
    """Prints done, fresh, partial or unreachable (see above) for the first control plane."""
    return f"""[ -e {done} ] && {{ echo done; exit 0; }}
[ -s {admin} ] || {{ echo fresh; exit 0; }}
end=$(( $(date +%s) + {seconds} ))
while [ "$(date +%s)" -lt "$end" ]; do
  out=$(kubectl --kubeconfig {admin} --request-timeout=30s -n kube-system \\
        get configmap kubeadm-config -o name 2>&1)
  case $out in
    configmap/kubeadm-config) date -u +%FT%TZ > {done}; echo done; exit 0;;
    *NotFound*|*"not found"*|*Forbidden*|*forbidden*) echo partial; exit 0;;
  esac
  sleep 5
done
echo unreachable"""


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
    initialised = _initialised(cp, first.node.name, log)
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


def _initialised(cp: NodeShell, name: str, log: Callable[[str], None]) -> bool:
    """Whether kubeadm init finished on the first control plane. admin.conf alone does not say so: kubeadm
    writes it before its wait for the control plane, and an init that failed after it (an API server too slow
    under TCG) leaves a node kubeadm will neither init again nor finish. Such a node is reset here."""
    found = cp.run(init_state_command(), timeout=INIT_PROBE_SECONDS + 60,
                   what=f"checking kubeadm init on {name}").stdout
    state = (found.strip().splitlines() or ["fresh"])[-1]
    if state == "done":
        return True
    if state == "unreachable":
        raise StageError("cluster", f"{name} has {ADMIN_CONF} but no record that kubeadm init finished, and its "
                         f"API server did not answer for {INIT_PROBE_SECONDS} s", host=name,
                         hint="if the cluster is not worth keeping, `kubeadm reset -f` on the node and `deploy up` "
                         "again; else bring its API server back (`crictl ps -a`) and `deploy up` again")
    if state == "partial":
        log(f"cluster: kubeadm init on {name} did not finish on an earlier run: kubeadm reset, then init again")
        cp.run("kubeadm reset -f", timeout=600, what=f"kubeadm reset on {name}", hint=HINT)
    return False


def _init(cp: NodeShell, cluster: kubeadm.Cluster, first: Member, log: Callable[[str], None]) -> None:
    token = kubeadm.new_token()  # joins make their own short-lived tokens; this one expires with kubeadm's default
    if cluster.tcg:
        write_patches(cp)
        log(f"cluster: {first.node.name} runs under TCG: kubeadm's waits and the static pods' probes are widened "
            f"(kubeadm patches in {kubeadm.PATCHES_DIR})")
    log(f"cluster: kubeadm init {cluster.version} on {first.node.name} (minutes under TCG)")
    cp.run(f"kubeadm init --config /dev/stdin && date -u +%FT%TZ > {INIT_DONE}",
           stdin=kubeadm.render_init(cluster, first.kubeadm, token),
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
