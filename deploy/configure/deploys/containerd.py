"""containerd: package, config.toml with one handler per runtime, registry mirror; restart on change.

Last, a tiny local image (``containerd.SMOKE_IMAGE`` in namespace k8s.io, made on the node from
its own /bin/sh and /bin/echo) that the post-deploy smoke checks run under each handler; then the
bundle's images (kubeadm's control plane, pause, CoreDNS, the verification images), imported from
OCI archives and pinned, so a node needs no registry.
"""

from __future__ import annotations

from dataclasses import asdict
from io import StringIO

from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt, files, systemd

from deploy.configure.catalog import CONTAINERD_BUNDLE, handlers_for
from deploy.configure.deploys import OpSink
from deploy.configure.deploys.runtimes import bundle_put
from deploy.configure.operations import containerd
from deploy.configure.settings import ConfigureSettings

CONTROL_PLANE_IMAGES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")
UNIT = "/etc/systemd/system/containerd.service"  # shadows Debian's unit of containerd 1.7, if installed
# The unit of containerd's own releases, pointed at the bundle's binary.
UNIT_TEXT = """[Unit]
Description=containerd container runtime (labdeploy bundle)
Documentation=https://containerd.io
After=network.target local-fs.target

[Service]
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/local/bin/containerd
Type=notify
Delegate=yes
KillMode=process
Restart=always
RestartSec=5
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
OOMScoreAdjust=-999

[Install]
WantedBy=multi-user.target
"""


def handler_dicts(settings: ConfigureSettings) -> list[dict[str, str | None]]:
    return [asdict(h) for h in handlers_for(settings.runtimes, settings.checksums())]


def from_bundle(settings: ConfigureSettings) -> bool:
    return all(item.name in settings.bundle_files for item in CONTAINERD_BUNDLE)


def _install(ops: OpSink, settings: ConfigureSettings) -> list[OperationMeta]:
    """containerd from the bundle (binaries and our unit) or Debian's package; the changes that need a restart."""
    if not from_bundle(settings):
        ops.apt_lists()
        ops.add("containerd package", apt.packages, packages=["containerd"], no_recommends=True)
        return []
    changes = [bundle_put(ops, settings, item, "containerd") for item in CONTAINERD_BUNDLE]
    unit = ops.add("containerd unit", files.put, src=StringIO(UNIT_TEXT), dest=UNIT, mode="644")
    ops.add("systemd reload for containerd", systemd.daemon_reload, _if=unit.did_change)
    return [*changes, unit]


def deploy(ops: OpSink, settings: ConfigureSettings) -> None:
    changes = _install(ops, settings)
    handlers = handler_dicts(settings)
    for handler in handlers:
        ops.add(
            f"handler {handler['name']} binary",
            containerd.handler_binary,
            handler=handler["name"],
            binary=handler["binary"],
        )
    changes.append(ops.add("containerd config", containerd.config, handlers=handlers,
                           containerd=settings.containerd_release, sandbox_image=settings.sandbox_image()))
    if settings.mirrors_registry:
        changes.append(ops.add("registry mirror", containerd.registry_mirror, mirror=settings.mirrors_registry))
    ops.add("containerd running", systemd.service, service="containerd", running=True, enabled=True)
    ops.add(
        "containerd restart on config change",
        systemd.service,
        service="containerd",
        restarted=True,
        _if=lambda: any(meta.did_change() for meta in changes),
    )
    ops.add("smoke test image", containerd.smoke_image)
    roles = set(ops.target.roles)
    worker = bool(roles & {"k8s-node", "k8s-worker"}) and "k8s-control-plane" not in roles
    for name, (src, digest) in sorted(settings.bundle_images.items()):
        if not (worker and is_control_plane_image(name)):
            ops.add(f"image {name}", containerd.bundle_image, image=name, src=src, digest=digest)


def is_control_plane_image(name: str) -> bool:
    """kubeadm's static pods' images: Kubernetes workers never run them (an import costs ~30 s under TCG), so
    only they skip them; a plain containerd node gets every image of the bundle."""
    return name.rsplit("/", 1)[-1].split(":", 1)[0] in CONTROL_PLANE_IMAGES
