"""Recipes for the container runtime stack: containerd 2.x and its runc shim, runc, the CNI plugins.

Each is built from a module of the project's own under ``go/`` that pins the upstream module
exactly (go.mod + go.sum, the binaries named by ``tool`` lines), the way upstream's release builds
them:

- containerd and ``containerd-shim-runc-v2``: ``make STATIC=1`` of containerd's Makefile, i.e.
  ``CGO_ENABLED=0``, tags ``urfave_cli_no_docs osusergo netgo static_build`` (+ ``no_btrfs``,
  which needs cgo anyway; the shim adds ``no_grpc``), stamped on ``.../v2/version``.
- runc: ``make static`` of runc's Makefile on amd64: cgo (nsenter) against Debian's static
  libseccomp, ``-buildmode=pie -linkmode external -extldflags -static-pie``, tags
  ``seccomp urfave_cli_no_docs netgo osusergo``. runc embeds its version from the module's
  ``VERSION`` file; only ``main.gitCommit`` is stamped.
- CNI plugins: every Linux plugin of upstream's ``build_linux.sh`` with ``CGO_ENABLED=0`` and the
  release's ``buildversion.BuildVersion`` stamp, packed into one ``.tgz`` shaped like upstream's
  ``cni-plugins-linux-amd64-<version>.tgz`` (``./bridge`` ... at the root), written
  deterministically so a rebuild hashes the same. Upstream's archive also carries LICENSE and
  README.md; this one holds only the plugins.

The proxy's ``.info`` carries no VCS origin, so the release commit is not known offline: the
``Revision``/``gitCommit`` stamps are a deterministic stand-in, sha1 of ``"<module>@<version>"``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from deploy.bundle import ArtifactKey
from deploy.bundle.recipes import CHECK_TIMEOUT, BuildError, GoBuild, Recipe, _gcc_version, _need_tool

CONTAINERD_MODULE = "github.com/containerd/containerd/v2"
RUNC_MODULE = "github.com/opencontainers/runc"
CNI_MODULE = "github.com/containernetworking/plugins"
CONTAINERD_TAGS = ("urfave_cli_no_docs", "osusergo", "netgo", "static_build", "no_btrfs")
SHIM_TAGS = ("urfave_cli_no_docs", "osusergo", "netgo", "static_build", "no_grpc")
RUNC_TAGS = ("seccomp", "urfave_cli_no_docs", "netgo", "osusergo")
# upstream's build_linux.sh: plugins/{meta,main,ipam}/* except main/windows
CNI_PLUGINS = (
    "ipam/dhcp",
    "ipam/host-local",
    "ipam/static",
    "main/bridge",
    "main/dummy",
    "main/host-device",
    "main/ipvlan",
    "main/loopback",
    "main/macvlan",
    "main/ptp",
    "main/tap",
    "main/vlan",
    "meta/bandwidth",
    "meta/firewall",
    "meta/portmap",
    "meta/sbr",
    "meta/tuning",
    "meta/vrf",
)
ARCHIVE_MTIME = 0  # members and the gzip header carry this time, so rebuilds are byte-identical


def stand_in_commit(module: str, version: str) -> str:
    """A deterministic 40-hex stand-in for the release commit (not known offline)."""
    return hashlib.sha1(f"{module}@{version}".encode()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class LinkedGoBuild(GoBuild):
    """A GoBuild with upstream's build mode and external-linker flags (runc's static-pie)."""

    buildmode: str = ""
    linkmode: str = ""
    extldflags: str = ""

    def link_flags(self) -> str:
        flags = ["-s", "-w", *self.ldflags]
        if self.linkmode:
            flags += ["-linkmode", self.linkmode]
        if self.extldflags:
            flags += ["-extldflags", self.extldflags]
        return " ".join(flags)

    def argv(self, out: Path) -> list[str]:
        argv = ["go", "build", "-trimpath"]
        if self.buildmode:
            argv.append(f"-buildmode={self.buildmode}")
        argv += ["-ldflags", self.link_flags()]
        if self.tags:
            argv += ["-tags", ",".join(self.tags)]
        return [*argv, "-o", str(out), self.package]


@lru_cache(maxsize=1)
def _libseccomp_version() -> bytes:
    """Debian's libseccomp that a static runc links in (so it decides the output)."""
    pkg_config = shutil.which("pkg-config")
    if pkg_config is None:
        return b"pkg-config-missing"
    done = subprocess.run([pkg_config, "--modversion", "libseccomp"], capture_output=True, check=False)
    return done.stdout.strip() or b"libseccomp-missing"


@dataclass(frozen=True, kw_only=True)
class CgoSeccompBuild(LinkedGoBuild):
    """runc: cgo against the system's libseccomp, whose version and the C compiler are hashed."""

    def inputs(self) -> list[tuple[str, bytes]]:
        return [*super().inputs(), ("cc", _gcc_version()), ("libseccomp", _libseccomp_version())]

    def build(self, out: Path) -> None:
        hint = "apt-get install gcc libc6-dev libseccomp-dev pkg-config"
        _need_tool("gcc", hint)
        _need_tool("pkg-config", hint)
        if _libseccomp_version().endswith(b"missing"):
            raise BuildError("libseccomp-dev is not installed (runc links libseccomp statically)", hint=hint)
        super().build(out)


def _member(name: str, size: int, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mode, info.mtime = size, kind, mode, ARCHIVE_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def pack_tgz(folder: Path, out: Path) -> None:
    """``folder``'s files as ``./name`` members of a gzip'd tar: sorted, fixed times and owners."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(_member("./", 0, tarfile.DIRTYPE, 0o755))
        for path in sorted(folder.iterdir()):
            with path.open("rb") as data:
                tar.addfile(_member(f"./{path.name}", path.stat().st_size, tarfile.REGTYPE, 0o755), data)
    with out.open("wb") as handle, gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=ARCHIVE_MTIME) as gz:
        gz.write(raw.getvalue())


@dataclass(frozen=True, kw_only=True)
class GoArchive(GoBuild):
    """Several main packages of one module built into a folder, packed as one deterministic .tgz."""

    packages: tuple[str, ...]
    probe: str = "bridge"  # the member whose CNI VERSION answer check() reports

    def argv(self, out: Path) -> list[str]:
        argv = ["go", "build", "-trimpath", "-ldflags", " ".join(("-s", "-w", *self.ldflags))]
        if self.tags:
            argv += ["-tags", ",".join(self.tags)]
        return [*argv, "-o", f"{out}{os.sep}", *self.packages]

    def inputs(self) -> list[tuple[str, bytes]]:
        pack = f"tgz gnu ./ sorted mode=755 uid=gid=0 mtime={ARCHIVE_MTIME} gzip-mtime={ARCHIVE_MTIME}"
        return [*super().inputs(), ("pack", pack.encode())]

    def ref(self) -> str:
        return f"go build {len(self.packages)} packages of {self.package} (go/{self.module}) -> tgz"

    def build(self, out: Path) -> None:
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as scratch:
            folder = Path(scratch) / "bin"
            folder.mkdir()
            super().build(folder)
            built = sorted(p.name for p in folder.iterdir())
            wanted = sorted(p.rpartition("/")[2] for p in self.packages)
            if built != wanted:
                raise BuildError(f"{self.key.name}: built {built}, expected {wanted}")
            pack_tgz(folder, out)

    def check(self, path: Path) -> str:
        """The probe plugin's about line (stderr, no CNI_COMMAND) and its CNI_COMMAND=VERSION JSON."""
        with tempfile.TemporaryDirectory(prefix="cni-check-") as scratch:
            plugin = _extract(path, f"./{self.probe}", Path(scratch))
            about = _run_plugin(self.key.name, plugin, {}).stderr.strip()
            versions = _run_plugin(self.key.name, plugin, {"CNI_COMMAND": "VERSION"}).stdout.strip()
        return f"{about}\n{versions}"


def _extract(archive: Path, member: str, folder: Path) -> Path:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            data = tar.extractfile(member)
            if data is None:
                raise BuildError(f"{archive}: {member} is not a regular file")
            target = folder / member.rpartition("/")[2]
            target.write_bytes(data.read())
    except (OSError, tarfile.TarError, KeyError) as exc:
        raise BuildError(f"cannot extract {member} from {archive}: {exc}") from exc
    target.chmod(0o755)
    return target


def _run_plugin(name: str, plugin: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    try:
        done = subprocess.run(
            [str(plugin)], capture_output=True, text=True, env={**base, **env}, timeout=CHECK_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"{name}: running {plugin.name} failed: {exc}") from exc
    if done.returncode != 0:
        raise BuildError(f"{name}: {plugin.name} {env} exited {done.returncode}: {(done.stdout + done.stderr).strip()}")
    return done


def _containerd_binary(name: str, version: str, tags: tuple[str, ...], version_args: tuple[str, ...]) -> GoBuild:
    stamps = (
        f"-X {CONTAINERD_MODULE}/version.Version={version}",
        f"-X {CONTAINERD_MODULE}/version.Revision={stand_in_commit(CONTAINERD_MODULE, version)}",
        f"-X {CONTAINERD_MODULE}/version.Package={CONTAINERD_MODULE}",
    )
    return GoBuild(
        key=ArtifactKey(name, version),
        module=f"containerd-{version}",
        package=f"{CONTAINERD_MODULE}/cmd/{name}",
        ldflags=stamps,
        tags=tags,
        version_args=version_args,
    )


def containerd(version: str) -> list[Recipe]:
    """``containerd`` and ``containerd-shim-runc-v2`` from go/containerd-<version>/, static as upstream's."""
    return [
        _containerd_binary("containerd", version, CONTAINERD_TAGS, ("--version",)),
        _containerd_binary("containerd-shim-runc-v2", version, SHIM_TAGS, ("-v",)),
    ]


def runc(version: str) -> list[Recipe]:
    """runc from go/runc-<version>/: cgo + static libseccomp, static-pie as upstream's ``make static``."""
    return [
        CgoSeccompBuild(
            key=ArtifactKey("runc", version),
            module=f"runc-{version}",
            package=RUNC_MODULE,
            ldflags=(f"-X main.gitCommit={stand_in_commit(RUNC_MODULE, version)}",),
            cgo=True,
            tags=RUNC_TAGS,
            buildmode="pie",
            linkmode="external",
            extldflags="-static-pie",
        )
    ]


def cni_plugins(version: str) -> list[Recipe]:
    """The CNI plugins of go/cni-plugins-<version>/ as one upstream-shaped ``cni-plugins`` .tgz."""
    return [
        GoArchive(
            key=ArtifactKey("cni-plugins", version),
            module=f"cni-plugins-{version}",
            package=CNI_MODULE,
            packages=tuple(f"{CNI_MODULE}/plugins/{p}" for p in CNI_PLUGINS),
            ldflags=(
                "-extldflags -static",
                f"-X {CNI_MODULE}/pkg/utils/buildversion.BuildVersion={version}",
            ),
        )
    ]
