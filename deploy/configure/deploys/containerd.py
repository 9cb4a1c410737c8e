"""containerd: package, config.toml with one handler per runtime, registry mirror; restart on change.

Last, a tiny local image (``containerd.SMOKE_IMAGE`` in namespace k8s.io, made on the node from
its own /bin/sh and /bin/echo) that the post-deploy smoke checks run under each handler; then the
bundle's images (kubeadm's control plane, pause, CoreDNS, the verification images), imported from
OCI archives and pinned, so a node needs no registry.
"""

from __future__ import annotations

from dataclasses import asdict

from pyinfra.operations import apt, systemd

from deploy.configure.catalog import handlers_for
from deploy.configure.deploys import OpSink
from deploy.configure.operations import containerd
from deploy.configure.settings import ConfigureSettings


def handler_dicts(settings: ConfigureSettings) -> list[dict[str, str | None]]:
    return [asdict(h) for h in handlers_for(settings.runtimes, settings.checksums())]


def deploy(ops: OpSink, settings: ConfigureSettings) -> None:
    ops.apt_lists()
    ops.add("containerd package", apt.packages, packages=["containerd"], no_recommends=True)
    handlers = handler_dicts(settings)
    for handler in handlers:
        ops.add(
            f"handler {handler['name']} binary",
            containerd.handler_binary,
            handler=handler["name"],
            binary=handler["binary"],
        )
    changes = [ops.add("containerd config", containerd.config, handlers=handlers)]
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
    for name, (src, digest) in sorted(settings.bundle_images.items()):
        ops.add(f"image {name}", containerd.bundle_image, image=name, src=src, digest=digest)
