"""What the configure deploys need from the lab, and the driver's own guard before any side effect.

A lab is checked earlier, at ``deploy validate``, by :mod:`deploy.model.checks` (each problem with
its line); :func:`validate_settings` repeats the same rules, from the same catalog tables, for
settings built without a lab file (tests, library callers), so configure never starts halfway.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from deploy.configure.catalog import RUNTIMES, runtime, steps_for_roles, uses_files

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_K8S_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?$")


@dataclass(frozen=True)
class ConfigureSettings:
    """Lab-wide inputs of the configure stage (already resolved; secrets never belong here)."""

    hosts: dict[str, str] = field(default_factory=dict)  # node name -> lab network address
    mirrors_apt: str | None = None
    mirrors_registry: str | None = None
    mirrors_files: str | None = None
    runtimes: tuple[str, ...] = ("runc",)
    kubernetes_version: str | None = None
    kubernetes_apt_repo: str | None = None  # lab: kubernetes.apt.repo, e.g. "https://m/core:/stable:/v{version}/deb/ /"
    kubernetes_apt_key: str | None = None  # lab: kubernetes.apt.key, URL of the signing key (ASCII armoured)
    file_checksums: dict[str, str] = field(default_factory=dict)  # lab: mirrors.checksums, file name -> sha256
    timezone: str | None = None  # lab: system.timezone (step base)
    ntp_servers: tuple[str, ...] = ()  # lab: system.ntp; empty: time sync is left as the image has it
    extra_packages: tuple[str, ...] = ()  # lab: system.packages; installed by the runtimes step
    domain: str | None = None  # lab: system.domain (default the lab name); appended in /etc/hosts
    bundle_provides: frozenset[str] = frozenset()  # lab: bundle.source build|offline: files the bundle supplies
    bundle_files: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (host path, sha256), at run
    bundle_images: dict[str, tuple[str, str]] = field(default_factory=dict)  # image name -> (host path, digest)
    containerd_release: str = "1.7"  # the containerd the nodes run: Debian's 1.7, or the bundle's 2.x

    def sandbox_image(self) -> str | None:
        """The bundle's pause image: containerd 2 starts pod sandboxes with it (kubelet no longer says)."""
        return next((name for name in sorted(self.bundle_images) if name.split("/")[-1].startswith("pause:")), None)

    def checksums(self) -> dict[str, str]:
        """sha256 of every runtime file that has a source: mirrors.checksums, then the bundle's own."""
        return {**self.file_checksums, **{name: sha for name, (_, sha) in self.bundle_files.items()}}


def validate_settings(settings: ConfigureSettings, roles_by_node: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Every problem that would make the configure stage fail halfway, found before it starts."""
    steps = {step for roles in roles_by_node.values() for step in steps_for_roles(roles)}
    problems = _check_mirrors(settings)
    if "runtimes" in steps or "containerd" in steps:
        problems += _check_runtimes(settings)
    if "k8s_node" in steps:
        problems += _check_kubernetes(settings)
    return problems


def _check_mirrors(settings: ConfigureSettings) -> list[str]:
    problems = []
    for name in ("mirrors_apt", "mirrors_files"):
        value = getattr(settings, name)
        if value is not None and not re.match(r"^https?://", value):
            problems.append(f"{name} must be an http(s) URL, got {value!r}")
    registry = settings.mirrors_registry
    if registry is not None and ("/" in registry.split("://", 1)[-1] or not registry):
        problems.append(f"mirrors_registry must be host[:port] (optionally with a scheme), got {registry!r}")
    return problems


def _check_runtimes(settings: ConfigureSettings) -> list[str]:
    problems = []
    for name in settings.runtimes:
        if name not in RUNTIMES:
            problems.append(f"unknown runtime {name!r}; supported runtimes: {', '.join(sorted(RUNTIMES))}")
            continue
        problems += _check_runtime_files(settings, name)
    return problems


def _check_runtime_files(settings: ConfigureSettings, name: str) -> list[str]:
    spec = runtime(name)
    if not uses_files(spec, settings.checksums()) or all(f.name in settings.bundle_provides for f in spec.files):
        return []
    files = ", ".join(f.name for f in spec.files)
    if settings.mirrors_files is None:
        return [
            f"runtime {name!r} needs {files} from a files mirror (no Debian package exists), "
            "but mirrors.files is not set; set mirrors.files or drop the runtime"
        ]
    problems = []
    for item in spec.files:
        checksum = settings.file_checksums.get(item.name, "")
        if not _SHA256.match(checksum):
            problems.append(
                f"runtime {name!r} needs the sha256 of {item.name!r} (64 lowercase hex digits), "
                f"got {checksum or 'none'}; add it to mirrors.checksums"
            )
    return problems


def _check_kubernetes(settings: ConfigureSettings) -> list[str]:
    problems = []
    version = settings.kubernetes_version
    if version is None or not _K8S_VERSION.match(version):
        problems.append(f"role k8s-node needs kubernetes.version like '1.31' or '1.31.2', got {version!r}")
    if not settings.kubernetes_apt_repo and "kubelet" not in settings.bundle_provides:
        problems.append(
            "role k8s-node needs an apt repository with kubeadm/kubelet/kubectl "
            "(kubernetes.apt.repo); set it to pkgs.k8s.io or your mirror of it"
        )
    return problems
