"""Images for lab machines: local builds (mmdebstrap), local files, downloads; NoCloud seeds.

Public API::

    ensure_image(image, cache_dir=None, on_progress=None) -> Path   # a qcow2/raw ready to boot
    default_cache_dir() -> Path                                   # $LABDEPLOY_CACHE_DIR | $LABDEPLOY_CACHE/images
    build_seed_iso(path, hostname=..., ssh_public_key=..., instance_id=..., user="root") -> Path

Built images boot with BIOS from an MBR disk, get DHCP on every ``en*`` NIC through
systemd-networkd, run sshd (root login with a key only) and take their hostname and SSH key
from a NoCloud seed (the ISO from ``build_seed_iso`` attached as a CD-ROM); the kernel logs
to ``ttyS0``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from deploy.errors import ConfigError
from deploy.images.builder import ImageBuildError, build_image, default_mirror
from deploy.images.cache import default_cache_dir, ensure_dir
from deploy.images.fetch import download, local_file
from deploy.images.seed import build_seed_iso
from deploy.model.resolved import ResolvedImage

__all__ = [
    "ImageBuildError",
    "build_seed_iso",
    "default_cache_dir",
    "default_mirror",
    "ensure_image",
]

# Image sources that another component makes available, and which one.
_HANDLED_ELSEWHERE = {
    "template": "the vsphere provider (a template already on the vCenter)",
    "ova": "the vsphere provider (it imports the OVA itself)",
}


def ensure_image(
    image: ResolvedImage,
    cache_dir: Path | None = None,
    on_progress: Callable[[str], None] | None = None,
    *,
    mirror: str | None = None,
) -> Path:
    """A local path to ``image``, built, checked or downloaded into the cache as needed.

    ``mirror`` overrides the Debian mirror for ``build:`` images (default: the one this
    machine's apt uses). Raises ConfigError for a bad image definition and ProviderError
    (ImageBuildError for builds) when making the image fails.
    """
    progress = on_progress or _quiet
    if image.source in _HANDLED_ELSEWHERE:
        raise ConfigError(
            f"image {image.name!r}: {image.source} images are not local files; "
            f"{_HANDLED_ELSEWHERE[image.source]} handles them",
            hint="use this image only on nodes of that provider",
        )
    directory = ensure_dir(cache_dir or default_cache_dir())
    if image.source == "build":
        return build_image(image, directory, progress, mirror)
    if image.source == "file":
        return local_file(image, directory, progress)
    if image.source == "url":
        return download(image, directory, progress)
    raise ConfigError(
        f"image {image.name!r}: unknown image source {image.source!r}; expected one of build, file, url, template, ova",
    )


def _quiet(_message: str) -> None:
    """Progress sink when the caller passes none."""
