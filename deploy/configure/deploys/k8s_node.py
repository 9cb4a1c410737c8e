"""k8s-node: kubeadm, kubelet and kubectl, held, from a configurable (mirror-aware) apt repository; or, when
the bundle supplies them (bundle.source build|offline), its binaries with the units pkgs.k8s.io installs,
crictl and the CNI plugins."""

from __future__ import annotations

from io import StringIO

from pyinfra.operations import apt, files, systemd

from deploy.configure.catalog import KUBE_BUNDLE
from deploy.configure.deploys import OpSink
from deploy.configure.deploys.runtimes import bundle_put
from deploy.configure.operations import system
from deploy.configure.settings import ConfigureSettings

PACKAGES = ["kubeadm", "kubectl", "kubelet"]
NODE_PACKAGES = ["iptables", "iproute2", "conntrack"]  # the bridge CNI's routes and NAT rule, portmap, kubelet
KUBELET_UNIT = "/etc/systemd/system/kubelet.service"
KUBEADM_DROPIN = "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf"
KUBELET_UNIT_TEXT = """[Unit]
Description=kubelet: The Kubernetes Node Agent (labdeploy bundle)
Documentation=https://kubernetes.io/docs/
Wants=network-online.target
After=network-online.target containerd.service

[Service]
ExecStart=/usr/bin/kubelet
Restart=always
StartLimitInterval=0
RestartSec=10

[Install]
WantedBy=multi-user.target
"""
# What kubeadm expects of the kubelet's unit: its flags file, the kubeconfigs and config it writes.
KUBEADM_DROPIN_TEXT = """[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf \
--kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
"""
CRICTL_TEXT = "runtime-endpoint: unix:///run/containerd/containerd.sock\nimage-endpoint: unix:///run/containerd/containerd.sock\n"
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


def from_bundle(settings: ConfigureSettings) -> bool:
    return all(item.name in settings.bundle_files for item in KUBE_BUNDLE)


def deploy(ops: OpSink, settings: ConfigureSettings) -> None:
    ops.apt_lists()
    ops.add("kubernetes node packages", apt.packages, packages=NODE_PACKAGES, no_recommends=True)
    if from_bundle(settings):
        _from_bundle(ops, settings)
        return
    if settings.kubernetes_apt_key:
        ops.add("kubernetes apt key", files.download, src=settings.kubernetes_apt_key, dest=KEYRING)
    listed = ops.add("kubernetes apt repository", files.put, src=StringIO(repo_line(settings)), dest=LIST)
    ops.add("apt update after repository change", apt.update, _if=listed.did_change)
    ops.add("kubernetes packages", apt.packages, packages=PACKAGES, no_recommends=True)
    ops.add("hold kubernetes packages", system.apt_hold, packages=PACKAGES)
    ops.add("kubelet enabled", systemd.service, service="kubelet", enabled=True, running=None)  # kubeadm starts it


def _from_bundle(ops: OpSink, settings: ConfigureSettings) -> None:
    for item in KUBE_BUNDLE:
        bundle_put(ops, settings, item, "kubernetes")
    units = [ops.add("kubelet unit", files.put, src=StringIO(KUBELET_UNIT_TEXT), dest=KUBELET_UNIT, mode="644"),
             ops.add("kubelet kubeadm drop-in", files.put, src=StringIO(KUBEADM_DROPIN_TEXT), dest=KUBEADM_DROPIN,
                     mode="644", create_remote_dir=True)]
    ops.add("crictl config", files.put, src=StringIO(CRICTL_TEXT), dest="/etc/crictl.yaml", mode="644")
    ops.add("systemd reload for kubelet", systemd.daemon_reload, _if=lambda: any(u.did_change() for u in units))
    ops.add("kubelet enabled", systemd.service, service="kubelet", enabled=True, running=None)  # kubeadm starts it
