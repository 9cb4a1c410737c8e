"""Where each artifact comes from online: official release URLs and their published checksums.

Nothing here touches the network. ``release(key)`` names the download and its checksum file;
``parse_checksums`` reads the two formats upstreams publish:

- a lone ``<hex>`` (dl.k8s.io's ``<binary>.sha256``), and
- ``<hex>  <file>`` lines (``sha256sum`` output: GitHub release ``.sha256`` files, ``SHA256SUMS``),
  where ``*<file>`` marks binary mode.

``expected_sha256(release, checksum_text)`` picks the artifact's digest out of such a file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from deploy.bundle import ArtifactKey
from deploy.errors import LabError

_HEX = re.compile(r"[0-9a-fA-F]{64}")


class ChecksumError(LabError):
    """A published checksum file is malformed or does not name the artifact."""


@dataclass(frozen=True)
class Release:
    """One upstream download: the URL, its checksum file, and the member to take if it is an archive."""

    key: ArtifactKey
    url: str
    checksum_url: str
    filename: str
    member: str | None = None  # the file inside a .tar.gz that is the artifact


def _arch(key: ArtifactKey) -> tuple[str, str]:
    goos, _, arch = key.platform.partition("/")
    return goos, arch


def _kubernetes(key: ArtifactKey) -> Release:
    goos, arch = _arch(key)
    url = f"https://dl.k8s.io/release/{key.version}/bin/{goos}/{arch}/{key.name}"
    return Release(key, url, url + ".sha256", key.name)


def _crictl(key: ArtifactKey) -> Release:
    goos, arch = _arch(key)
    name = f"crictl-{key.version}-{goos}-{arch}.tar.gz"
    url = f"https://github.com/kubernetes-sigs/cri-tools/releases/download/{key.version}/{name}"
    return Release(key, url, url + ".sha256", name, member="crictl")


def _helm(key: ArtifactKey) -> Release:
    goos, arch = _arch(key)
    name = f"helm-{key.version}-{goos}-{arch}.tar.gz"
    url = f"https://get.helm.sh/{name}"
    return Release(key, url, url + ".sha256sum", name, member=f"{goos}-{arch}/helm")


def _runc(key: ArtifactKey) -> Release:
    _, arch = _arch(key)
    base = f"https://github.com/opencontainers/runc/releases/download/{key.version}"
    return Release(key, f"{base}/runc.{arch}", f"{base}/runc.sha256sum", f"runc.{arch}")


def _etcd(key: ArtifactKey) -> Release:
    goos, arch = _arch(key)
    name = f"etcd-{key.version}-{goos}-{arch}.tar.gz"
    base = f"https://github.com/etcd-io/etcd/releases/download/{key.version}"
    return Release(key, f"{base}/{name}", f"{base}/SHA256SUMS", name, member=f"etcd-{key.version}-{goos}-{arch}/etcd")


KUBERNETES = ("kubeadm", "kubelet", "kubectl", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
SOURCES = dict.fromkeys((*KUBERNETES, "kube-proxy"), _kubernetes) | {
    "crictl": _crictl,
    "helm": _helm,
    "runc": _runc,
    "etcd": _etcd,
}


def release(key: ArtifactKey) -> Release | None:
    """The upstream download of ``key``, or None when the catalog knows none (build it instead)."""
    make = SOURCES.get(key.name)
    return make(key) if make is not None else None


def parse_checksums(text: str) -> dict[str | None, str]:
    """Digests by file name (``None`` for a lone-digest file), lower-cased.

    Blank lines and ``#`` comments are skipped; any other line that is not a 64-hex digest
    (optionally followed by whitespace and a file name) is a ChecksumError.
    """
    digests: dict[str | None, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        digest, _, name = line.partition(" ")
        if not _HEX.fullmatch(digest):
            raise ChecksumError(f"checksum line {number} is not a sha256 digest: {raw[:80]!r}")
        file = name.strip().removeprefix("*").removeprefix("./") or None
        if file in digests and digests[file] != digest.lower():
            raise ChecksumError(f"checksum file names {file or 'the artifact'} twice with different digests")
        digests[file] = digest.lower()
    if not digests:
        raise ChecksumError("checksum file is empty")
    return digests


def expected_sha256(rel: Release, checksum_text: str) -> str:
    """The published digest of ``rel``'s download from its checksum file's text."""
    digests = parse_checksums(checksum_text)
    if rel.filename in digests:
        return digests[rel.filename]
    if None in digests and len(digests) == 1:
        return digests[None]
    raise ChecksumError(
        f"{rel.checksum_url} has no digest for {rel.filename}",
        hint="the release may have renamed its files; compare the checksum file by hand",
    )
