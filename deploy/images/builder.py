"""``build:`` images: a bootable Debian qcow2 made with mmdebstrap, cached by its recipe.

The recipe (distro, release, packages, mirror, builder version) names the cache entry, so
an unchanged recipe is a cache hit and returns at once; a changed one builds a new entry.
Steps: mmdebstrap into a directory (its customize hook trims units and makes GRUB's
core.img) → guest files written → ``mke2fs -d`` into a raw disk with an MBR → qcow2.

Build children die with deploy (``deploy.images.children``): a build killed half-way leaves
no mmdebstrap behind, and the next build of the entry, under the entry's lock, kills what its
children left running and removes the old work directory before it starts.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from deploy.errors import ConfigError, ProviderError
from deploy.images import children, disk, guestconfig
from deploy.images.cache import Progress, atomic_output, entry_lock, recipe_key
from deploy.model.resolved import ResolvedImage

BUILDER_VERSION = "4"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
RELEASES = {"debian": ("bookworm", "trixie")}
_LOG_TAIL = 25
_NAMESPACE = uuid.UUID("6c0d0e52-3b7e-4a55-9d0e-2f1f4c1b7a10")
_PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+(:[a-z0-9]+)?$")


class ImageBuildError(ProviderError):
    """Building an image failed; ``log_path`` holds the full build log."""

    def __init__(self, message: str, *, log_path: Path, hint: str = "") -> None:
        self.log_path = log_path
        super().__init__(message, hint=hint or f"the full build log is {log_path}")


def _noop(_message: str) -> None:
    """Default progress sink."""


def default_mirror(sources: Iterable[Path] | None = None) -> str:
    """The Debian mirror this machine's apt uses (``/etc/apt/sources.list*``), else deb.debian.org."""
    if sources is None:
        apt = Path("/etc/apt")
        sources = [apt / "sources.list", *sorted(apt.glob("sources.list.d/*"))]
    for path in sources:
        mirror = _mirror_in(path)
        if mirror:
            return mirror
    return FALLBACK_MIRROR


def _mirror_in(path: Path) -> str | None:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    for match in re.finditer(r"(?:^deb\s+(?:\[[^\]]*\]\s+)?|^URIs:\s*)(\S+)", text, re.MULTILINE):
        uri = match.group(1).rstrip("/")
        if uri.endswith("/debian") and uri.startswith(("http://", "https://")):
            return uri
    return None


def recipe(image: ResolvedImage, mirror: str) -> dict[str, Any]:
    """What defines a built image's content; its hash is the cache key."""
    return {
        "distro": image.distro,
        "release": image.release,
        "packages": sorted(set(image.packages)),
        "mirror": mirror.rstrip("/"),
        "builder": BUILDER_VERSION,
    }


def validate(image: ResolvedImage) -> None:
    """Raise ConfigError for a recipe the builder cannot make."""
    releases = RELEASES.get(image.distro or "")
    if releases is None:
        raise ConfigError(
            f"image {image.name!r}: cannot build distro {image.distro!r}; supported: " + ", ".join(sorted(RELEASES)),
        )
    if image.release not in releases:
        raise ConfigError(
            f"image {image.name!r}: cannot build {image.distro} release {image.release!r}; "
            f"supported: {', '.join(releases)}",
        )
    bad = [p for p in image.packages if not _PACKAGE_NAME.match(p)]
    if bad:
        raise ConfigError(f"image {image.name!r}: not Debian package names: {', '.join(bad)}")


def entry_name(image: ResolvedImage, mirror: str) -> str:
    """The cache file name of a built image."""
    return f"{image.distro}-{image.release}-{recipe_key(recipe(image, mirror))[:20]}.qcow2"


def build_image(
    image: ResolvedImage, cache_dir: Path, on_progress: Progress = _noop, mirror: str | None = None
) -> Path:
    """The cached qcow2 for ``image``'s recipe, built first when it is not cached yet."""
    validate(image)
    mirror = (mirror or default_mirror()).rstrip("/")
    name = entry_name(image, mirror)
    final = cache_dir / name
    if final.exists():
        return final
    with entry_lock(cache_dir, name):
        if not final.exists():  # another process may have built it while we waited
            _build(image, mirror, final, on_progress)
    return final


def _build(image: ResolvedImage, mirror: str, final: Path, on_progress: Progress) -> None:
    logs = final.parent / "logs"
    logs.mkdir(exist_ok=True)
    log_path = logs / f"{final.stem}.log"
    work = work_dir(final)
    clean_work_dir(work)
    work.mkdir()
    try:
        with log_path.open("w") as log:
            _Steps(image, mirror, work=work, log=log, log_path=log_path, on_progress=on_progress).run(final)
    except (OSError, ValueError) as exc:
        raise ImageBuildError(
            f"building image {image.name!r} ({image.distro} {image.release}) failed: {exc}", log_path=log_path
        ) from exc
    finally:
        clean_work_dir(work)
    on_progress(f"built {final.name} ({final.stat().st_size >> 20} MiB on disk)")


class _Steps:
    """One build: each method is one step, sharing the work directory and the log."""

    def __init__(
        self,
        image: ResolvedImage,
        mirror: str,
        *,
        work: Path,
        log: IO[str],
        log_path: Path,
        on_progress: Progress,
    ) -> None:
        self.image = image
        self.mirror = mirror
        self.work = work
        self.log = log
        self.log_path = log_path
        self.on_progress = on_progress
        self.root = work / "root"
        self.fs_uuid = str(uuid.uuid5(_NAMESPACE, recipe_key(recipe(image, mirror))))

    def run(self, final: Path) -> None:
        self.on_progress(f"building {self.image.distro} {self.image.release} with mmdebstrap ({self.mirror})")
        self.bootstrap()
        raw = self.work / "disk.raw"
        self.on_progress("writing the disk (ext4, MBR, GRUB)")
        disk.write_disk(
            raw,
            self.root,
            fs_uuid=self.fs_uuid,
            boot_img=(self.root / "usr/lib/grub/i386-pc/boot.img").read_bytes(),
            core_img=(self.work / "core.img").read_bytes(),
            run=self.command,
        )
        self.on_progress("converting to qcow2")
        with atomic_output(final) as tmp:
            self.command(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(tmp)])

    def bootstrap(self) -> None:
        overlay = self.work / "overlay"
        self.write_guest_files(overlay)
        script = self.work / "customize.sh"
        masked = guestconfig.masked_units(str(self.image.release))
        script.write_text(guestconfig.customize_script(self.fs_uuid, str(self.work / "core.img"), str(overlay), masked))
        self.command(self.mmdebstrap_command(script), progress_prefix="I: ")

    def mmdebstrap_command(self, script: Path) -> list[str]:
        packages = sorted({*guestconfig.BASE_PACKAGES, *self.image.packages})
        command = [
            "mmdebstrap",
            "--mode=root",
            "--variant=apt",
            "--components=main",
            '--aptopt=Acquire::Retries "3"',
            f"--include={','.join(packages)}",
            *(f"--dpkgopt={opt}" for opt in guestconfig.DPKG_OPTIONS),
            f'--customize-hook=sh {shlex.quote(str(script))} "$1"',
            str(self.image.release),
            str(self.root),
        ]
        return command + self.sources()

    def sources(self) -> list[str]:
        release = self.image.release
        lines = [f"deb {self.mirror} {release} main", f"deb {self.mirror} {release}-updates main"]
        if self.mirror == FALLBACK_MIRROR:
            lines.append(f"deb {self.mirror}-security {release}-security main")
        return lines

    def write_guest_files(self, overlay: Path) -> None:
        for guest_path, content in guestconfig.files(self.fs_uuid).items():
            target = overlay / guest_path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            target.chmod(0o644)

    def command(self, argv: list[str], progress_prefix: str | None = None) -> None:
        """Run ``argv``, its output into the log (and matching lines to progress)."""
        self.log.write(f"$ {' '.join(argv)}\n")
        self.log.flush()

        def progress(line: str) -> None:
            if progress_prefix and line.startswith(progress_prefix):
                self.on_progress(line[len(progress_prefix) :].strip())

        try:
            code = children.run_logged(argv, self.log, self.work / children.RECORD, progress)
        except FileNotFoundError as exc:
            raise ProviderError(
                f"image build needs {argv[0]!r}, which is not installed",
                hint="install the Debian packages mmdebstrap, e2fsprogs and qemu-utils",
            ) from exc
        if code != 0:
            raise self.failure(argv[0], code)

    def failure(self, program: str, code: int) -> ImageBuildError:
        self.log.flush()
        lines = self.log_path.read_text(errors="replace").splitlines()[-_LOG_TAIL:]
        tail = "\n".join(f"    {line}" for line in lines)
        return ImageBuildError(
            f"building image {self.image.name!r} ({self.image.distro} {self.image.release}) failed: "
            f"{program} exited with {code}; last lines of its log:\n{tail}\nfull log: {self.log_path}",
            log_path=self.log_path,
        )


def work_dir(final: Path) -> Path:
    """Where the build of cache entry ``final`` works (beside it, so the result is renamed into place)."""
    return final.parent / f".work-{final.stem}"


def clean_work_dir(work: Path) -> None:
    """Remove a build's work directory, first killing what a killed build's children left running.

    Call it holding the entry's lock: then no live build of this entry uses the directory.
    """
    if work.exists():
        children.kill_recorded(work / children.RECORD)
    safe_rmtree(work)


def safe_rmtree(path: Path) -> None:
    """Remove a build directory, first unmounting anything a killed build left mounted in it."""
    if not path.exists():
        return
    for mountpoint in _mounts_under(path):
        subprocess.run(["umount", "--lazy", mountpoint], check=False, capture_output=True)
    if _mounts_under(path):
        raise ProviderError(
            f"{path} still has mounted filesystems; refusing to delete it",
            hint=f"unmount them (findmnt -R {path}) and run again",
        )
    shutil.rmtree(path)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + os.sep
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1].replace("\\040", " ") for line in mounts]
    return sorted((p for p in points if p.startswith(prefix)), reverse=True)
