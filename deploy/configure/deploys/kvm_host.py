"""kvm-host: libvirt and QEMU inside a VM, for nested KVM labs."""

from __future__ import annotations

from pyinfra.operations import apt, systemd

from deploy.configure.deploys import OpSink
from deploy.configure.settings import ConfigureSettings

PACKAGES = ["libvirt-daemon-system", "qemu-system-x86", "qemu-utils", "libvirt-clients"]


def deploy(ops: OpSink, settings: ConfigureSettings) -> None:  # noqa: ARG001 - uniform step signature
    ops.apt_lists()
    ops.add("kvm host packages", apt.packages, packages=PACKAGES, no_recommends=True)
    ops.add("libvirtd running", systemd.service, service="libvirtd", running=True, enabled=True)
