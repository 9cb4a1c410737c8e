"""Wasm for the bundle: crun built with WasmEdge from Debian's crun source, in a trixie chroot.

The path: containerd's runc shim (``io.containerd.runc.v2``) with ``BinaryName`` pointing at this
crun; a container whose entrypoint is a ``.wasm`` file and that carries the annotation
``module.wasm.image/variant=compat`` runs through WasmEdge inside crun (crun dlopens
``libwasmedge.so.0``, Debian's ``libwasmedge0``). Debian trixie's own ``crun`` (1.21-1) is built
the same way (``crun --version`` shows ``+WASM:wasmedge``); the bundle builds it from the pinned
source so an air-gapped node gets exactly this binary. Bookworm has neither crun with Wasm nor
WasmEdge: Wasm pods need trixie nodes with ``apt-get install libwasmedge0`` (``NODE_PACKAGES``).

- ``BuildRoot``: ``mmdebstrap --variant=buildd`` of trixie with the build packages pinned to exact
  Debian versions, cached under ``$LABDEPLOY_CACHE/wasm/`` (default ``~/.cache/labdeploy/wasm``)
  and reused; commands run in it under ``unshare --mount`` (proc, sysfs, cgroup2, /dev) as root.
- ``CrunWasmedge`` (``crun_wasmedge()``): the ``crun-wasmedge@1.21-1`` binary; the build refuses
  a crun whose ``--version`` lacks ``+WASM:wasmedge``. It links trixie's glibc, so ``check`` runs
  it inside the chroot.
- ``hello_wasm()``: the verification pods' module (deploy.bundle.images: ``hello.wat`` through the
  host's wat2wasm); it prints ``HELLO_LINE``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from deploy.bundle import ArtifactKey, images
from deploy.bundle.image_inputs import WatBuild
from deploy.bundle.recipes import BuildError, Recipe, _compile, _digest, _need_tool, _tail, cache_root

SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
CRUN_VERSION = "1.21"
CRUN_DEBIAN = "1.21-1"  # trixie's crun source package; its orig tarball is crun's release tarball
CRUN_ORIG = f"crun_{CRUN_VERSION}.orig.tar.gz"
CRUN_ORIG_SHA256 = "4bfb700e764a4804a4de3ecf07753f4c391005356d60356df65d80ae0914c486"  # Sources index
WASMEDGE_DEBIAN = "0.14.1+dfsg-3.1"
WABT_DEBIAN = "1.0.36+dfsg+~cs1.0.36-2"
BUILD_PACKAGES = (
    f"libwasmedge-dev={WASMEDGE_DEBIAN}",
    f"libwasmedge0={WASMEDGE_DEBIAN}",
    f"wabt={WABT_DEBIAN}",
    "pkgconf",
    "libseccomp-dev",
    "libcap-dev",
    "libsystemd-dev",
    "python3",
)
# embedded yajl: no libyajl2 on the node; no CRIU (checkpointing is not part of the Wasm path)
CONFIGURE_FLAGS = ("--prefix=/usr", "--with-wasmedge", "--enable-embedded-yajl", "--disable-criu")
NODE_SUITES = ("trixie",)
NODE_PACKAGES = ("libwasmedge0",)  # plus libsystemd0, libseccomp2, libcap2: in every trixie base system
WASM_FEATURE = "+WASM:wasmedge"
WASM_ANNOTATION = ("module.wasm.image/variant", "compat")
HELLO_WAT = images.WASM_DIR / "hello.wat"
HELLO_LINE = images.WASM_LINE
MMDEBSTRAP_HINT = "apt-get install mmdebstrap (the chroot is made from Debian's mirror)"

# Runs "$@" as /bin/sh -euc inside the chroot $1, in a private mount namespace (nothing leaks out).
ENTER = """root=$1; shift
mount --make-rprivate /
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount -t cgroup2 cgroup2 "$root/sys/fs/cgroup" 2>/dev/null || true
mount --rbind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/run"
exec chroot "$root" /bin/sh -euc "$@"
"""
CRUN_SCRIPT = f"""rm -rf /build/crun && mkdir -p /build/crun && cd /build/crun
tar -xzf /build/src/{CRUN_ORIG} --strip-components=1
./configure "$@"
make -j2
strip -o /build/crun.out crun
"""


def wasm_cache() -> Path:
    return cache_root() / "wasm"


@dataclass(frozen=True)
class BuildRoot:
    """A trixie buildd chroot with the pinned packages, made once and reused."""

    packages: tuple[str, ...] = BUILD_PACKAGES
    suite: str = SUITE
    mirror: str = MIRROR
    cache: Path = field(default_factory=wasm_cache, compare=False)

    def digest(self) -> str:
        return _digest([("suite", self.suite.encode()), ("packages", "\0".join(self.packages).encode())])

    @property
    def path(self) -> Path:
        return self.cache / f"{self.suite}-buildd-{self.digest()[:12]}"

    @property
    def ready(self) -> bool:
        return (self.path / ".labdeploy-complete").is_file()

    def ensure(self) -> Path:
        """The chroot's directory; made with mmdebstrap under a lock if it is not there yet."""
        if self.ready:
            return self.path
        with _locked(self.cache / ".chroot.lock"):
            if not self.ready:
                self._make()
        return self.path

    def _make(self) -> None:
        _need_tool("mmdebstrap", MMDEBSTRAP_HINT)
        _need_tool("unshare", "apt-get install util-linux")
        work = self.path.with_name(self.path.name + ".tmp")
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(self.path, ignore_errors=True)
        argv = ["mmdebstrap", "--variant=buildd", f"--include={','.join(self.packages)}",
                self.suite, str(work), self.mirror]
        _compile(argv, self.cache, dict(os.environ), f"the {self.suite} build chroot")
        (work / "build" / "src").mkdir(parents=True, exist_ok=True)
        (work / ".labdeploy-complete").write_text(f"{self.suite} {' '.join(self.packages)}\n")
        work.rename(self.path)

    def argv(self, script: str, *args: str) -> list[str]:
        return ["unshare", "--mount", "--fork", "sh", "-euc", ENTER, "enter", str(self.path), script, "sh", *args]

    def run(self, script: str, *args: str, what: str) -> None:
        """Run ``script`` (sh -eu) in the chroot under nice, in its own process group."""
        _compile(self.argv(script, *args), self.cache, dict(os.environ), what)

    def output(self, script: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run a short command in the chroot and capture it (checks, not compiles)."""
        try:
            return subprocess.run(self.argv(script, *args), capture_output=True, text=True, timeout=timeout,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BuildError(f"cannot run `{script}` in {self.path}: {exc}") from exc

    def place(self, source: Path, name: str) -> str:
        """Copy a file into the chroot's /build (mode 0755, so a store's read-only object runs); its path there."""
        target = self.path / "build" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        target.chmod(0o755)
        return f"/build/{name}"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch_crun_source(cache: Path, mirror: str = MIRROR) -> Path:
    """Debian's crun orig tarball from the mirror's pool, checked against the pinned sha256; cached."""
    target = cache / "sources" / CRUN_ORIG
    if target.is_file() and _sha256(target) == CRUN_ORIG_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + f".part-{os.getpid()}")
    url = f"{mirror}/pool/main/c/crun/{CRUN_ORIG}"
    try:
        with urllib.request.urlopen(url, timeout=120) as response, part.open("wb") as handle:
            shutil.copyfileobj(response, handle)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise BuildError(f"cannot fetch crun's Debian source {url}: {exc}") from exc
    got = _sha256(part)
    if got != CRUN_ORIG_SHA256:
        part.unlink(missing_ok=True)
        raise BuildError(f"{url} has sha256 {got}, not the pinned {CRUN_ORIG_SHA256} of crun {CRUN_DEBIAN}")
    part.rename(target)
    return target


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def _chroot_inputs(root: BuildRoot) -> list[tuple[str, bytes]]:
    return [("suite", root.suite.encode()), ("packages", "\0".join(root.packages).encode()),
            ("enter", ENTER.encode())]


def require_wasm(version: str) -> None:
    """Refuse a crun whose ``--version`` features lack ``+WASM:wasmedge``."""
    if WASM_FEATURE not in version.split():
        raise BuildError(f"crun {CRUN_DEBIAN} was built without WasmEdge: `crun --version` says\n{version}")


@dataclass(frozen=True, kw_only=True)
class CrunWasmedge(Recipe):
    """crun from Debian's source, ``--with-wasmedge``, built in the trixie chroot."""

    root: BuildRoot = field(default_factory=BuildRoot)
    configure: tuple[str, ...] = CONFIGURE_FLAGS

    def inputs(self) -> list[tuple[str, bytes]]:
        return [("crun source", f"{CRUN_DEBIAN} {CRUN_ORIG} {CRUN_ORIG_SHA256}".encode()),
                ("libwasmedge-dev", WASMEDGE_DEBIAN.encode()), ("configure", "\0".join(self.configure).encode()),
                ("script", CRUN_SCRIPT.encode()), *_chroot_inputs(self.root)]

    def ref(self) -> str:
        return (f"crun {CRUN_DEBIAN} (Debian source) {' '.join(self.configure)}, "
                f"libwasmedge-dev {WASMEDGE_DEBIAN}, {self.root.suite} chroot")

    def build(self, out: Path) -> None:
        source = fetch_crun_source(self.root.cache, self.root.mirror)
        self.root.ensure()
        self.root.place(source, f"src/{CRUN_ORIG}")
        self.root.run(CRUN_SCRIPT, *self.configure, what=f"crun {CRUN_DEBIAN} with WasmEdge")
        built = self.root.path / "build" / "crun.out"
        require_wasm(self.check(built))
        shutil.copyfile(built, out)
        out.chmod(0o755)

    def check(self, path: Path) -> str:
        """``crun --version`` inside the chroot (the binary links trixie's libraries)."""
        self.root.ensure()
        inside = self.root.place(path, "check/crun")
        done = self.root.output('exec "$@"', inside, *self.version_args)
        output = (done.stdout or done.stderr).strip()
        if done.returncode != 0:
            raise BuildError(f"{self.key.name}: `crun {' '.join(self.version_args)}` exited "
                             f"{done.returncode}: {_tail(output)}")
        return output


def crun_wasmedge(root: BuildRoot | None = None) -> CrunWasmedge:
    """The bundle's Wasm runtime: ``crun-wasmedge@1.21-1`` (containerd handler: runc shim + BinaryName)."""
    return CrunWasmedge(key=ArtifactKey("crun-wasmedge", CRUN_DEBIAN), root=root or BuildRoot())


def hello_wasm() -> WatBuild:
    """The module the Wasm verification pod runs (prints ``HELLO_LINE``): the Wasm image's own input."""
    return images.hello_wasm()


def oci_config(args: list[str], annotations: dict[str, str]) -> dict[str, object]:
    """A minimal OCI runtime config: read-only ``rootfs``, own pid/mount/ipc/uts/network namespaces."""
    namespaces = [{"type": kind} for kind in ("pid", "mount", "ipc", "uts", "network")]
    return {
        "ociVersion": "1.0.2",
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": args, "cwd": "/",
                    "env": ["PATH=/usr/bin:/bin"], "noNewPrivileges": True},
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "wasm",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]}],
        "annotations": annotations,
        "linux": {"namespaces": namespaces},
    }


def run_wasm(root: BuildRoot, crun: Path, module: Path, *, annotations: dict[str, str] | None = None,
             name: str = "labdeploy-wasm") -> subprocess.CompletedProcess[str]:
    """Run ``module`` as a container's entrypoint with ``crun`` inside the chroot (as root, no cgroups).

    ``annotations`` default to ``WASM_ANNOTATION``, which is what makes crun hand the file to WasmEdge.
    """
    bundle = root.path / "build" / "oci" / name
    shutil.rmtree(bundle, ignore_errors=True)
    (bundle / "rootfs").mkdir(parents=True)
    shutil.copyfile(module, bundle / "rootfs" / module.name)
    config = oci_config([f"/{module.name}"], dict([WASM_ANNOTATION]) if annotations is None else annotations)
    (bundle / "config.json").write_text(json.dumps(config, indent=1))
    inside = root.place(crun, "check/crun")
    script = 'crun=$1; shift; "$crun" --cgroup-manager=disabled delete -f "$2" 2>/dev/null || true; exec "$crun" "$@"'
    return root.output(script, inside, "--cgroup-manager=disabled", "run", "--bundle", f"/build/oci/{name}", name)


def containerd_runtime(binary: str = "/usr/local/bin/crun-wasmedge") -> dict[str, object]:
    """The CRI runtime entry for the Wasm handler (same keys in containerd config versions 2 and 3).

    ``pod_annotations`` lets the pod's ``module.wasm.image/variant`` through to the OCI spec: CRI
    drops pod annotations a runtime does not list, and without it crun would exec the .wasm file.
    """
    return {"runtime_type": "io.containerd.runc.v2", "pod_annotations": [WASM_ANNOTATION[0]],
            "options": {"BinaryName": binary, "SystemdCgroup": True}}
