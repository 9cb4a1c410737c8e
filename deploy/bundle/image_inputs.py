"""What the bundle's images are made of besides Go and C builds: Debian packages and our own Wasm.

    DebDownload      one Debian package file, ``apt-get download <package>=<version>`` (key ``deb:<package>``)
    WatBuild         the project's own Wasm module: ``wat2wasm`` (Debian ``wabt``) of deploy/bundle/wasm/<name>.wat
    Entry            a file of an image: an artifact's file, literal bytes, or a symlink
    DebTree          every file a .deb artifact installs (``dpkg-deb -x``), docs and man pages left out
    Busybox          /bin/busybox of a busybox-static .deb and a symlink for each of its applets

Each layer item describes itself (``spec``, hashed into the image recipe) and gives its files
(``files(fetch, work)``); the artifacts it reads are named by ``artifact``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deploy.bundle import Artifact, ArtifactKey, oci
from deploy.bundle.recipes import BuildError, Recipe, _need_tool

Fetch = Callable[[ArtifactKey], Artifact]
TIMEOUT = 300.0
SKIPPED = ("usr/share/doc/", "usr/share/man/", "usr/share/lintian/", "usr/share/info/", "usr/share/bug/")


def _run(argv: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"{what}: `{' '.join(argv)}` failed: {exc}") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise BuildError(f"{what}: `{' '.join(argv)}` exited {done.returncode}:\n{tail}")
    return done.stdout


@dataclass(frozen=True)
class Entry:
    """A file of the image: an artifact's file, literal bytes, or a symlink."""

    path: str
    mode: int = 0o755
    artifact: ArtifactKey | None = None
    data: bytes | None = None
    link: str | None = None

    def spec(self) -> dict[str, object]:
        return {"path": self.path, "mode": self.mode, "artifact": str(self.artifact) if self.artifact else None,
                "data": self.data.hex() if self.data is not None else None, "link": self.link}

    def files(self, fetch: Fetch, work: Path) -> list[oci.File]:  # noqa: ARG002 (the Item interface)
        if self.artifact is not None:
            return [oci.File(self.path, self.mode, source=fetch(self.artifact).path)]
        return [oci.File(self.path, self.mode, data=self.data, link=self.link)]


@dataclass(frozen=True)
class Busybox:
    """/bin/busybox out of a busybox-static .deb artifact, and a symlink for each of its applets."""

    artifact: ArtifactKey

    def spec(self) -> dict[str, object]:
        return {"busybox-from-deb": str(self.artifact)}

    def files(self, fetch: Fetch, work: Path) -> list[oci.File]:
        _need_tool("dpkg-deb", "apt-get install dpkg")
        tree = _extract(fetch(self.artifact), work)
        binary = tree / "bin" / "busybox"
        applets = _run([str(binary), "--list-full"], "busybox --list-full").split()
        links = [oci.File(f"/{name}", link="/bin/busybox") for name in sorted(set(applets)) if name != "bin/busybox"]
        return [oci.File("/bin/busybox", 0o755, source=binary), *links]

@dataclass(frozen=True)
class DebTree:
    """The files a .deb installs (regular files with their modes, symlinks), docs and man pages left out."""

    artifact: ArtifactKey

    def spec(self) -> dict[str, object]:
        return {"deb-tree": str(self.artifact), "skipped": list(SKIPPED)}

    def files(self, fetch: Fetch, work: Path) -> list[oci.File]:
        tree = _extract(fetch(self.artifact), work)
        out = []
        for folder, dirs, names in os.walk(tree):
            dirs.sort()
            for name in sorted(names):
                path = Path(folder, name)
                inside = str(path.relative_to(tree))
                if inside.startswith(SKIPPED):
                    continue
                if path.is_symlink():
                    out.append(oci.File(f"/{inside}", link=os.readlink(path)))
                elif path.is_file():
                    out.append(oci.File(f"/{inside}", path.stat().st_mode & 0o7777, source=path))
        return out


Item = Entry | Busybox | DebTree


def _extract(deb: Artifact, work: Path) -> Path:
    _need_tool("dpkg-deb", "apt-get install dpkg")
    tree = work / f"deb-{deb.sha256[:16]}"
    if not tree.exists():
        _run(["dpkg-deb", "-x", str(deb.path), str(tree)], f"dpkg-deb -x {deb.key}")
    return tree


@dataclass(frozen=True, kw_only=True)
class DebDownload(Recipe):
    """One Debian package file as the mirror serves it: ``apt-get download <package>=<version>``."""

    package: str

    def inputs(self) -> list[tuple[str, bytes]]:
        return [("apt", f"{self.package}={self.key.version}".encode())]

    def ref(self) -> str:
        return f"apt-get download {self.package}={self.key.version}"

    def build(self, out: Path) -> None:
        _need_tool("apt-get", "a Debian or Ubuntu machine with apt, and `apt-get update` run")
        folder = out.parent / "deb"
        folder.mkdir()
        _run(["apt-get", "download", f"{self.package}={self.key.version}"], self.ref(), cwd=folder)
        found = sorted(folder.glob("*.deb"))
        if len(found) != 1:
            raise BuildError(f"{self.ref()} left {len(found)} .deb files, not one")
        shutil.move(found[0], out)

    def check(self, path: Path) -> str:
        return _run(["dpkg-deb", "-f", str(path), "Package", "Version"], "dpkg-deb -f").strip()


@dataclass(frozen=True, kw_only=True)
class WatBuild(Recipe):
    """A Wasm module of the project's own: ``wat2wasm`` (Debian ``wabt``) of a .wat file."""

    source: Path

    def inputs(self) -> list[tuple[str, bytes]]:
        try:
            text = self.source.read_bytes()
        except OSError as exc:
            raise BuildError(f"{self.key.name}: cannot read {self.source}: {exc}") from exc
        return [("wat", text), ("wat2wasm", _wat2wasm_version().encode())]

    def ref(self) -> str:
        return f"wat2wasm deploy/bundle/wasm/{self.source.name}"

    def build(self, out: Path) -> None:
        _need_tool("wat2wasm", "apt-get install wabt")
        _run(["wat2wasm", str(self.source), "-o", str(out)], self.ref())

    def check(self, path: Path) -> str:
        _need_tool("wasm-validate", "apt-get install wabt")
        _run(["wasm-validate", str(path)], "wasm-validate")
        return f"valid wasm, {path.stat().st_size} bytes"


def _wat2wasm_version() -> str:
    tool = shutil.which("wat2wasm")
    return _run([tool, "--version"], "wat2wasm --version").strip() if tool else "wat2wasm-missing"


def deb(package: str, version: str) -> DebDownload:
    return DebDownload(key=ArtifactKey(f"deb:{package}", version), package=package)

