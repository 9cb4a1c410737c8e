"""Where each artifact comes from online: official release URLs and their published checksums.

Nothing here touches the network (``deploy.bundle.fetch`` downloads). ``release(key)`` names the
download, its checksum file and the digest algorithm; ``parse_checksums`` reads the formats
upstreams publish:

- a lone ``<hex>`` (dl.k8s.io's ``<binary>.sha256``), and
- ``<hex>  <file>`` lines (``sha256sum``/``sha512sum`` output: GitHub release ``.sha256``,
  ``.sha256sum`` files, ``SHA256SUMS``, gVisor's ``.sha512``), where ``*<file>`` marks binary mode.

``expected_digest(release, checksum_text)`` picks the artifact's digest out of such a file.
``kubeadm_images(pins)`` names the registry.k8s.io images ``kubeadm config images list`` prints.

URL shapes, as checked against upstream's own docs and release code (stored copies, 2026-12):

- Kubernetes binaries: ``https://dl.k8s.io/release/<v>/bin/<os>/<arch>/<name>`` + ``.sha256`` holding
  the lone digest (kubernetes/website install-kubeadm.md "Without a package manager" and the
  install-kubectl page: ``echo "$(cat kubectl.sha256)  kubectl" | sha256sum --check``).
- crictl: cri-tools' GitHub release ``crictl-<v>-linux-<arch>.tar.gz`` (install-kubeadm.md).
- containerd: ``containerd-<v without v>-linux-<arch>.tar.gz`` + ``.sha256sum`` (containerd's
  Makefile ``release``: ``sha256sum $(RELEASE).tar.gz >$(RELEASE).tar.gz.sha256sum``; tarball made
  with ``tar -czf ... -C releases/$(RELEASE) bin`` so members are ``bin/containerd`` ...; its
  docs/getting-started.md lists ``bin/containerd-shim-runc-v2``).
- CNI plugins: ``cni-plugins-linux-<arch>-<v>.tgz`` + ``.sha256`` (containernetworking/plugins
  scripts/release.sh: ``sha256sum $f > $f.sha256``; also ``.sha512``, ``.sha1``).
- CoreDNS: ``coredns_<v without v>_linux_<arch>.tgz`` holding ``coredns`` (coredns Makefile.release
  ``tar -zcf release/$(NAME)_$(VERSION)_linux_$$arch.tgz -C build/linux/$$arch $(NAME)``) + ``.sha256``
  (``sha256sum $$asset > $$asset.sha256``).
- gVisor: ``https://storage.googleapis.com/gvisor/releases/release/<yyyymmdd>[.<rc>]/<uname -m>/``
  ``runsc`` and ``containerd-shim-runsc-v1``, each with a ``.sha512`` checked by ``sha512sum -c``
  (google/gvisor g3doc/user_guide/install.md, "Specific release" and "Point release").
- Helm: ``https://get.helm.sh/helm-<v>-<os>-<arch>.tar.gz`` + ``.sha256sum`` (helm's Makefile
  ``checksum``: ``shasum -a 256 ... > $f.sha256sum``; the lone-digest ``.sha256`` also exists).
- etcd: GitHub release ``etcd-<v>-<os>-<arch>.tar.gz`` holding ``etcd-<v>-<os>-<arch>/etcd``, and
  ``SHA256SUMS`` for the release.
- Images: kubeadm's cmd/kubeadm/app/images/images.go (GetControlPlaneImages): apiserver,
  controller-manager, scheduler, proxy, ``<repo>/coredns/coredns`` (the default repository's rename),
  pause, etcd; the Kubernetes tag is the version with ``+`` replaced by ``_``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from deploy.bundle import ArtifactKey, BundleError

if TYPE_CHECKING:
    from deploy.bundle.catalog import Minor

Algorithm = Literal["sha256", "sha512"]
_HEX = {"sha256": re.compile(r"[0-9a-fA-F]{64}"), "sha512": re.compile(r"[0-9a-fA-F]{128}")}
REGISTRY = "registry.k8s.io"


class ChecksumError(BundleError):
    """A published checksum file is malformed or does not name the artifact."""


@dataclass(frozen=True)
class Release:
    """One upstream download: the URL, its checksum file, and the member to take if it is an archive."""

    key: ArtifactKey
    url: str
    checksum_url: str
    filename: str
    member: str | None = None  # the file inside a .tar.gz that is the artifact
    algorithm: Algorithm = "sha256"  # what the checksum file holds
    executable: bool = True  # False for an artifact that is itself an archive (the CNI plugins .tgz)


def _arch(key: ArtifactKey) -> tuple[str, str]:
    goos, _, arch = key.platform.partition("/")
    return goos, arch


def _bare(version: str) -> str:
    return version.removeprefix("v")


def _github(repo: str, tag: str) -> str:
    return f"https://github.com/{repo}/releases/download/{tag}"


def _kubernetes(key: ArtifactKey) -> Release:
    goos, arch = _arch(key)
    url = f"https://dl.k8s.io/release/{key.version}/bin/{goos}/{arch}/{key.name}"
    return Release(key, url, url + ".sha256", key.name)


def _crictl(key: ArtifactKey) -> Release:
    goos, arch = _arch(key)
    name = f"crictl-{key.version}-{goos}-{arch}.tar.gz"
    url = f"{_github('kubernetes-sigs/cri-tools', key.version)}/{name}"
    return Release(key, url, url + ".sha256", name, member="crictl")


def _helm(key: ArtifactKey) -> Release:
    goos, arch = _arch(key)
    name = f"helm-{key.version}-{goos}-{arch}.tar.gz"
    url = f"https://get.helm.sh/{name}"
    return Release(key, url, url + ".sha256sum", name, member=f"{goos}-{arch}/helm")


def _runc(key: ArtifactKey) -> Release:
    _, arch = _arch(key)
    base = _github("opencontainers/runc", key.version)
    return Release(key, f"{base}/runc.{arch}", f"{base}/runc.sha256sum", f"runc.{arch}")


def _etcd(key: ArtifactKey) -> Release:
    goos, arch = _arch(key)
    name = f"etcd-{key.version}-{goos}-{arch}.tar.gz"
    base = _github("etcd-io/etcd", key.version)
    return Release(key, f"{base}/{name}", f"{base}/SHA256SUMS", name, member=f"etcd-{key.version}-{goos}-{arch}/etcd")


def _containerd(key: ArtifactKey) -> Release:
    """containerd and its runc shim: two members of one release tarball."""
    goos, arch = _arch(key)
    name = f"containerd-{_bare(key.version)}-{goos}-{arch}.tar.gz"
    url = f"{_github('containerd/containerd', key.version)}/{name}"
    return Release(key, url, url + ".sha256sum", name, member=f"bin/{key.name}")


def _cni_plugins(key: ArtifactKey) -> Release:
    goos, arch = _arch(key)
    name = f"cni-plugins-{goos}-{arch}-{key.version}.tgz"
    url = f"{_github('containernetworking/plugins', key.version)}/{name}"
    return Release(key, url, url + ".sha256", name, executable=False)


def _coredns(key: ArtifactKey) -> Release:
    goos, arch = _arch(key)
    name = f"coredns_{_bare(key.version)}_{goos}_{arch}.tgz"
    url = f"{_github('coredns/coredns', key.version)}/{name}"
    return Release(key, url, url + ".sha256", name, member="coredns")


GVISOR_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}  # the docs' ${ARCH} is `uname -m`
_GVISOR_RELEASE = re.compile(r"(?:release-)?(\d{8}(?:\.\d+)?)")


def _gvisor(key: ArtifactKey) -> Release | None:
    """runsc or containerd-shim-runsc-v1 of a gVisor release named ``yyyymmdd[.rc]`` (or ``release-...``).

    A Go pseudo-version of the ``go`` branch names a commit, not a release, so it has no release
    URL (None: build it, or pin a release date for online labs).
    """
    match = _GVISOR_RELEASE.fullmatch(key.version)
    _, arch = _arch(key)
    if match is None or arch not in GVISOR_ARCH:
        return None
    url = f"https://storage.googleapis.com/gvisor/releases/release/{match.group(1)}/{GVISOR_ARCH[arch]}/{key.name}"
    return Release(key, url, url + ".sha512", key.name, algorithm="sha512")


KUBERNETES = ("kubeadm", "kubelet", "kubectl", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
SOURCES = dict.fromkeys((*KUBERNETES, "kube-proxy"), _kubernetes) | {
    "crictl": _crictl,
    "helm": _helm,
    "runc": _runc,
    "etcd": _etcd,
    "containerd": _containerd,
    "containerd-shim-runc-v2": _containerd,
    "cni-plugins": _cni_plugins,
    "coredns": _coredns,
}
GVISOR = ("runsc", "containerd-shim-runsc-v1")
HOSTS = ("dl.k8s.io", "github.com", "get.helm.sh", "storage.googleapis.com")  # every host release() names


def release(key: ArtifactKey) -> Release | None:
    """The upstream download of ``key``, or None when none is known (build it instead)."""
    if key.name in GVISOR:
        return _gvisor(key)
    make = SOURCES.get(key.name)
    return make(key) if make is not None else None


def kubeadm_images(pins: Minor) -> list[str]:
    """The images ``kubeadm config images list`` prints for ``pins`` (default repository), in its order.

    Online labs let containerd pull these; only the names are needed here.
    """
    tag = pins.kubernetes.replace("+", "_")
    kube = [f"{REGISTRY}/{name}:{tag}" for name in ("kube-apiserver", "kube-controller-manager",
                                                    "kube-scheduler", "kube-proxy")]
    return [*kube, f"{REGISTRY}/coredns/coredns:{pins.kubeadm_coredns}", f"{REGISTRY}/pause:{pins.pause_image}",
            f"{REGISTRY}/etcd:{pins.kubeadm_etcd}"]


def parse_checksums(text: str, algorithm: Algorithm = "sha256") -> dict[str | None, str]:
    """Digests by file name (``None`` for a lone-digest file), lower-cased.

    Blank lines and ``#`` comments are skipped; any other line that is not a digest of
    ``algorithm`` (optionally followed by whitespace and a file name) is a ChecksumError.
    """
    digests: dict[str | None, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        digest, _, name = line.partition(" ")
        if not _HEX[algorithm].fullmatch(digest):
            raise ChecksumError(f"checksum line {number} is not a {algorithm} digest: {raw[:80]!r}")
        file = name.strip().removeprefix("*").removeprefix("./") or None
        if file in digests and digests[file] != digest.lower():
            raise ChecksumError(f"checksum file names {file or 'the artifact'} twice with different digests")
        digests[file] = digest.lower()
    if not digests:
        raise ChecksumError("checksum file is empty")
    return digests


def expected_digest(rel: Release, checksum_text: str) -> str:
    """The published digest (of ``rel.algorithm``) of ``rel``'s download from its checksum file's text."""
    try:
        digests = parse_checksums(checksum_text, rel.algorithm)
    except ChecksumError as exc:
        raise ChecksumError(f"{rel.checksum_url}: {exc.message}", hint="the file is not a checksum list; "
                            "a mirror may serve an error page under that name") from exc
    if rel.filename in digests:
        return digests[rel.filename]
    if None in digests and len(digests) == 1:
        return digests[None]
    raise ChecksumError(
        f"{rel.checksum_url} has no digest for {rel.filename}",
        hint="the release may have renamed its files; compare the checksum file by hand",
    )


def expected_sha256(rel: Release, checksum_text: str) -> str:
    """The published sha256 of ``rel``'s download (a ChecksumError for a release that publishes sha512)."""
    if rel.algorithm != "sha256":
        raise ChecksumError(f"{rel.checksum_url} publishes {rel.algorithm}, not sha256; use expected_digest")
    return expected_digest(rel, checksum_text)
