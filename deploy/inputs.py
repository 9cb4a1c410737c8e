"""What the lower layers receive from a resolved lab: configure settings, host targets, verify targets.

The configure and verify packages never see the lab model; these functions translate it once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from deploy.bundle.provides import supplied_files
from deploy.configure.inventory import HostTarget
from deploy.configure.settings import ConfigureSettings
from deploy.errors import StageError
from deploy.model.resolve import ResolvedLab
from deploy.model.resolved import ResolvedNode
from deploy.providers.base import SshEndpoint
from deploy.verify import ClusterExpect, VerifyEntry, VerifyTarget

CONTAINER_ROLES = {"containerd", "k8s-node", "k8s-control-plane", "k8s-worker"}
Outputs = Callable[[str], dict[str, Any]]


def lab_address(node: ResolvedNode) -> str | None:
    """The node's address on its first lab (nat/isolated) network, if it has one."""
    return next((nic.ip for nic in node.nics if nic.ip and nic.mode in ("nat", "isolated")), None)


def configure_settings(resolved: ResolvedLab) -> ConfigureSettings:
    """Every lab field the configure stage reads: mirrors (and checksums), kubernetes, system."""
    lab = resolved.lab
    hosts = {n.name: addr for n in resolved.nodes.values() if (addr := lab_address(n))}
    k8s, system = lab.kubernetes, lab.system
    return ConfigureSettings(
        hosts=hosts,
        mirrors_apt=lab.mirrors.apt,
        mirrors_registry=lab.mirrors.registry,
        mirrors_files=lab.mirrors.files,
        runtimes=resolved.runtimes,
        kubernetes_version=k8s.version if k8s else None,
        kubernetes_apt_repo=k8s.apt.repo if k8s else None,
        kubernetes_apt_key=_with_minor(k8s.apt.key, k8s.version) if k8s else None,
        file_checksums={name: sha.lower() for name, sha in lab.mirrors.checksums.items()},
        timezone=system.timezone,
        ntp_servers=tuple(system.ntp),
        extra_packages=tuple(system.packages),
        domain=system.domain or resolved.name,
        bundle_provides=supplied_files(resolved),
    )


def bundle_files(resolved: ResolvedLab, settings: ConfigureSettings) -> ConfigureSettings:
    """``settings`` with the host path and sha256 of each file the bundle supplies (run time: after the
    bundle stage, so a missing one is a StageError naming the command that builds it)."""
    if resolved.lab.bundle.source not in ("build", "offline"):
        return settings
    from deploy.bundle.catalog import everything
    from deploy.bundle.store import BundleStore

    k8s = resolved.lab.kubernetes
    keys = {key.name: key for key in everything(k8s.version if k8s else None, list(settings.runtimes))}
    store, found = BundleStore(), {}
    for name in sorted(settings.bundle_provides):
        artifact = store.get(keys[name])
        if artifact is None:
            raise StageError("configure", f"the bundle has no {keys[name]}, which the nodes need",
                             hint="run `deploy bundle build LAB` (or bundle: {source: build} builds it during up)")
        found[name] = (str(artifact.path), artifact.sha256)
    release = keys["containerd"].version.lstrip("v") if "containerd" in found else settings.containerd_release
    return replace(settings, bundle_files=found, bundle_images=bundle_images(resolved), containerd_release=release)


def bundle_images(resolved: ResolvedLab) -> dict[str, tuple[str, str]]:
    """Image name -> (archive path, manifest digest) of every image the bundle has made for the lab."""
    from deploy.bundle import oci
    from deploy.bundle.build import lab_wanted
    from deploy.bundle.images import ImageRecipe
    from deploy.bundle.store import BundleStore

    store, found = BundleStore(), {}
    for recipe in lab_wanted(resolved).recipes:
        artifact = store.get(recipe.key) if isinstance(recipe, ImageRecipe) else None
        if artifact is not None:
            found.update({name: (str(artifact.path), digest) for name, digest in oci.manifests(artifact.path).items()})
    return found


def _with_minor(template: str | None, version: str) -> str | None:
    """``{version}`` in a URL becomes the Kubernetes minor (1.31 of 1.31.2), as in the repo line."""
    minor = ".".join(version.split(".")[:2])
    return template.replace("{version}", minor) if template else None


def endpoint(outputs: dict[str, Any]) -> SshEndpoint:
    return SshEndpoint.from_outputs(outputs["ssh"])


def host_target(node: ResolvedNode, outputs: Outputs) -> HostTarget:
    groups = (node.group,) if node.group else ()
    return HostTarget(node.name, endpoint(outputs(f"machine:{node.name}")), node.roles, groups)


def export_known_hosts(state_dir: Path, nodes: list[ResolvedNode], outputs: Outputs) -> Path:
    """An OpenSSH known_hosts file (``[host]:port key``) of the nodes' recorded host keys.

    Keys are recorded per node name (forwarded ports move between labs); pyinfra, testinfra and
    ssh look keys up by address and port, so each run writes this view of the current endpoints.
    """
    from deploy.ssh.hostkeys import HostKeyStore, known_hosts_path

    path = state_dir / "ssh_known_hosts"
    endpoints = {}
    for node in nodes:
        machine = outputs(f"machine:{node.name}")
        if "ssh" in machine and node.ssh:  # a node with ssh: false was never logged in to: no key
            ssh = endpoint(machine)
            endpoints[node.name] = (ssh.host, ssh.port)
    HostKeyStore(known_hosts_path(state_dir)).export_known_hosts(path, endpoints)
    return path


def verify_targets(resolved: ResolvedLab, outputs: Outputs) -> list[VerifyTarget]:
    """Nodes with what the lab promises about them: hostname and /etc/hosts where managed."""
    settings = configure_settings(resolved)
    managed_hosts = tuple((addr, name) for name, addr in sorted(settings.hosts.items()))
    targets = []
    for node in (n for n in resolved.nodes.values() if n.ssh):  # nothing logs in to a node with ssh: false
        kind = resolved.providers[node.provider].kind
        configured = "base" in node.roles or bool(CONTAINER_ROLES & set(node.roles))
        targets.append(VerifyTarget(
            name=node.name, group=node.group, roles=node.roles,
            ssh=endpoint(outputs(f"machine:{node.name}")),
            hostname=node.name if kind != "existing" or configured else "",
            hosts_entries=managed_hosts if configured else (),
            labels=node.labels, gpus=len(node.gpus)))
    return targets


def verify_entries(resolved: ResolvedLab) -> list[VerifyEntry]:
    entries = []
    for index, spec in enumerate(resolved.lab.verify):
        name = spec.name or (f"pytest {spec.pytest}" if spec.pytest else f"verify[{index}]")
        entries.append(VerifyEntry(name=name, hosts=spec.hosts, run=spec.run, expect=spec.expect,
                                   expect_regex=spec.expect_regex, expect_rc=spec.expect_rc,
                                   retries=spec.retries, timeout=spec.timeout, pytest=spec.pytest))
    return entries


def verify_layers(resolved: ResolvedLab, kubeconfig: Path | None) -> set[str]:
    layers = {"nodes"}
    if any(CONTAINER_ROLES & set(n.roles) for n in resolved.nodes.values()):
        layers.add("runtimes")
    k8s = resolved.lab.kubernetes
    if kubeconfig and k8s:
        layers |= {"kubernetes", "runtimeclass"}
        layers |= {"cilium"} if k8s.cni and k8s.cni.cilium else set()
        layers |= {"istio"} if k8s.mesh and k8s.mesh.istio else set()
        layers |= {"gpu"} if k8s.gpu_operator else set()
    return layers


def cluster_expect(resolved: ResolvedLab) -> ClusterExpect:
    k8s = resolved.lab.kubernetes
    if k8s is None:
        return ClusterExpect()
    istio = k8s.mesh.istio if k8s.mesh else None
    return ClusterExpect(
        kube_proxy_replacement=bool(k8s.cni and k8s.cni.cilium and k8s.cni.cilium.kube_proxy_replacement),
        istio_mode=istio.mode if istio else "sidecar",
        mtls_strict=istio.mtls == "STRICT" if istio else True,
        mig_strategy=k8s.gpu_operator.mig_strategy if k8s.gpu_operator else None,
        network_policy=bool(k8s.cni and (k8s.cni.cilium or (k8s.cni.bridge and k8s.cni.bridge.network_policy))),
        **_bundle_checks(resolved))


def _bundle_checks(resolved: ResolvedLab) -> dict[str, Any]:
    """A lab whose nodes get the bundle's images runs its checks with them (never a registry), and gives
    pods the time TCG needs (gVisor's first sandbox takes minutes there)."""
    if resolved.lab.bundle.source not in ("build", "offline"):
        return {}
    from deploy.bundle import images
    from deploy.verify.model import bundle_images

    shell, wasm = images.verification_refs()
    return {"images": bundle_images(shell, wasm, images.WASM_LINE, images.WASM_VARIANT),
            "pod_timeout": 480.0}
