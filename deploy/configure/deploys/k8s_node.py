"""k8s-node: kubeadm, kubelet and kubectl from a configurable (mirror-aware) apt repository, held."""

from __future__ import annotations

from io import StringIO

from pyinfra.operations import apt, files, systemd

from deploy.configure.deploys import OpSink
from deploy.configure.operations import system
from deploy.configure.settings import ConfigureSettings

PACKAGES = ["kubeadm", "kubectl", "kubelet"]
KEYRING = "/etc/apt/keyrings/labdeploy-kubernetes.asc"
LIST = "/etc/apt/sources.list.d/labdeploy-kubernetes.list"


def minor(version: str) -> str:
    """'1.31.2' -> '1.31' (the repository of pkgs.k8s.io is per minor version)."""
    return ".".join(version.split(".")[:2])


def repo_line(settings: ConfigureSettings) -> str:
    """The deb line; ``{version}`` in the configured repository becomes the minor version."""
    repo = (settings.kubernetes_apt_repo or "").replace("{version}", minor(settings.kubernetes_version or ""))
    signed = f"[signed-by={KEYRING}] " if settings.kubernetes_apt_key else ""
    return f"deb {signed}{repo}\n"


def deploy(ops: OpSink, settings: ConfigureSettings) -> None:
    ops.apt_lists()
    if settings.kubernetes_apt_key:
        ops.add("kubernetes apt key", files.download, src=settings.kubernetes_apt_key, dest=KEYRING)
    listed = ops.add("kubernetes apt repository", files.put, src=StringIO(repo_line(settings)), dest=LIST)
    ops.add("apt update after repository change", apt.update, _if=listed.did_change)
    ops.add("kubernetes packages", apt.packages, packages=PACKAGES, no_recommends=True)
    ops.add("hold kubernetes packages", system.apt_hold, packages=PACKAGES)
    ops.add("kubelet enabled", systemd.service, service="kubelet", enabled=True)
