"""Recipes: how the bundle builds an artifact offline, from pinned sources only.

A recipe knows its artifact's key, a hash over everything that decides its output
(``recipe_hash``), how to write the artifact to one path the store gives it (``produce``, the
store's Producer) and how to ask the built program for its version (``check``).

- ``GoBuild``: a module of the project's own under ``go/<dir>/`` (go.mod + go.sum requiring the
  upstream module at an exact version), built with ``go build -trimpath`` from the Go module proxy
  into caches outside the clone: ``$LABDEPLOY_CACHE/go/{mod,build}`` (default
  ``~/.cache/labdeploy/go``), so every clone and CI run on a machine shares them.
- ``CBuild``: the project's own C (``deploy/bundle/c/``), ``gcc -O2 -static``.

Every compile runs ``nice -n 19`` in its own process group, killed if the build is interrupted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from deploy.bundle import ArtifactKey, Source
from deploy.errors import LabError
from deploy.images.children import running

REPO = Path(__file__).resolve().parents[2]
GO_MODULES = REPO / "go"
C_SOURCES = Path(__file__).resolve().parent / "c"
TAIL_LINES = 25
CHECK_TIMEOUT = 30.0


class BuildError(LabError):
    """A recipe could not build its artifact (toolchain missing, compile failed)."""


def cache_root() -> Path:
    """``$LABDEPLOY_CACHE`` or ``~/.cache/labdeploy``."""
    return Path(os.environ.get("LABDEPLOY_CACHE") or Path.home() / ".cache" / "labdeploy")


def go_caches() -> tuple[Path, Path]:
    """(GOMODCACHE, GOCACHE) the recipes share."""
    root = cache_root() / "go"
    return root / "mod", root / "build"


def _digest(parts: list[tuple[str, bytes]]) -> str:
    """sha256 over named parts, each length-prefixed so no two part lists collide."""
    sha = hashlib.sha256()
    for name, data in parts:
        for chunk in (name.encode(), data):
            sha.update(len(chunk).to_bytes(8, "big"))
            sha.update(chunk)
    return sha.hexdigest()


def _tail(text: str) -> str:
    return "\n".join(text.rstrip().splitlines()[-TAIL_LINES:])


def _compile(argv: list[str], cwd: Path, env: dict[str, str], what: str) -> None:
    """Run one compile under ``nice -n 19`` in its own group; BuildError with the output's tail."""
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    pipe = subprocess.PIPE
    try:
        with running(["nice", "-n", "19", *argv], stdout=pipe, stderr=subprocess.STDOUT, cwd=cwd, env=env) as proc:
            assert proc.stdout is not None
            tail.extend(proc.stdout)
    except OSError as exc:
        raise BuildError(f"cannot run {argv[0]} for {what}: {exc}") from exc
    if proc.returncode != 0:
        raise BuildError(f"building {what} failed (exit {proc.returncode}):\n{''.join(tail).rstrip()}")


def _need_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BuildError(f"{name} is not installed", hint=hint)
    return path


@dataclass(frozen=True, kw_only=True)
class Recipe(ABC):
    """One artifact built from pinned inputs."""

    key: ArtifactKey
    version_args: tuple[str, ...] = ("--version",)
    requires: tuple[ArtifactKey, ...] = ()  # artifacts this one is made from (built first, e.g. an image's binaries)

    @abstractmethod
    def inputs(self) -> list[tuple[str, bytes]]:
        """Everything that decides the output, as named parts."""

    @abstractmethod
    def build(self, out: Path) -> None:
        """Write the artifact to ``out`` (and nothing else)."""

    @abstractmethod
    def ref(self) -> str:
        """What the manifest names as the build's source."""

    def recipe_hash(self) -> str:
        return _digest([("key", f"{self.key.name} {self.key.version} {self.key.platform}".encode()), *self.inputs()])

    def produce(self, out: Path) -> Source:
        """The store's Producer: build to ``out`` and say where it came from."""
        self.build(out)
        return Source(kind="build", ref=self.ref(), recipe_hash=self.recipe_hash())

    def check(self, path: Path) -> str:
        """Run the built program's version command; its output (stdout, else stderr)."""
        argv = [str(path), *self.version_args]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=CHECK_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BuildError(f"{self.key.name}: `{' '.join(argv)}` failed: {exc}") from exc
        output = (done.stdout or done.stderr).strip()
        if done.returncode != 0:
            raise BuildError(f"{self.key.name}: `{' '.join(argv)}` exited {done.returncode}: {_tail(output)}")
        return output


def _goarch(platform: str) -> tuple[str, str]:
    goos, _, goarch = platform.partition("/")
    return goos, goarch


@lru_cache(maxsize=4)
def _go_version(toolchain: str) -> str:
    """The Go version a toolchain setting builds with (decides the output, so it is hashed)."""
    if toolchain != "local":
        return toolchain
    go = shutil.which("go")
    if go is None:
        return "go-missing"
    done = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, env=_go_base_env(), check=False)
    return done.stdout.strip() or "go-unknown"


def _go_base_env() -> dict[str, str]:
    mod, build = go_caches()
    env = dict(os.environ)
    env.update(GOMODCACHE=str(mod), GOCACHE=str(build), GOFLAGS="-mod=readonly", GOTOOLCHAIN="local")
    return env


@dataclass(frozen=True, kw_only=True)
class GoBuild(Recipe):
    """``go build -trimpath`` of ``package`` inside the project's module ``go/<module>/``."""

    module: str
    package: str
    ldflags: tuple[str, ...] = ()
    cgo: bool = False
    tags: tuple[str, ...] = ()
    toolchain: str = "local"  # or "go1.27.3", the one other toolchain allowed
    modules_root: Path = field(default=GO_MODULES, compare=False)

    @property
    def module_dir(self) -> Path:
        return self.modules_root / self.module

    def module_files(self) -> list[Path]:
        """go.mod, go.sum and any Go source of our own in the module directory."""
        files = [self.module_dir / "go.mod", self.module_dir / "go.sum"]
        return files + sorted(self.module_dir.glob("*.go"))

    def env(self) -> dict[str, str]:
        """The variables that decide the build (the rest of the environment passes through)."""
        goos, goarch = _goarch(self.key.platform)
        return {"CGO_ENABLED": "1" if self.cgo else "0", "GOOS": goos, "GOARCH": goarch, "GOTOOLCHAIN": self.toolchain}

    def argv(self, out: Path) -> list[str]:
        argv = ["go", "build", "-trimpath", "-ldflags", " ".join(("-s", "-w", *self.ldflags))]
        if self.tags:
            argv += ["-tags", ",".join(self.tags)]
        return [*argv, "-o", str(out), self.package]

    def inputs(self) -> list[tuple[str, bytes]]:
        parts = [(f"file {p.name}", self._read(p)) for p in self.module_files()]
        parts += [("package", self.package.encode()), ("argv", "\0".join(self.argv(Path("OUT"))).encode())]
        parts += [(f"env {k}", v.encode()) for k, v in sorted(self.env().items())]
        return [*parts, ("go", _go_version(self.toolchain).encode())]

    def ref(self) -> str:
        return f"go build {self.package} (go/{self.module})"

    def _read(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise BuildError(f"{self.key.name}: cannot read {path}: {exc}") from exc

    def build(self, out: Path) -> None:
        _need_tool("go", "install Go >= 1.26 (Debian: golang-go from backports, or go.dev/dl)")
        mod, cache = go_caches()
        mod.mkdir(parents=True, exist_ok=True)
        cache.mkdir(parents=True, exist_ok=True)
        env = {**_go_base_env(), **self.env()}
        _compile(self.argv(out), self.module_dir, env, f"{self.key.name} {self.key.version}")


@dataclass(frozen=True, kw_only=True)
class CBuild(Recipe):
    """A static C program of the project's own: ``gcc -O2 -static``."""

    source: Path
    cflags: tuple[str, ...] = ("-O2", "-static")
    defines: tuple[str, ...] = ()

    def argv(self, out: Path) -> list[str]:
        return ["gcc", *self.cflags, *(f"-D{d}" for d in self.defines), "-o", str(out), str(self.source)]

    def inputs(self) -> list[tuple[str, bytes]]:
        try:
            code = self.source.read_bytes()
        except OSError as exc:
            raise BuildError(f"{self.key.name}: cannot read {self.source}: {exc}") from exc
        return [("source", code), ("argv", "\0".join(self.argv(Path("OUT"))[:-1]).encode()), ("cc", _gcc_version())]

    def ref(self) -> str:
        return f"gcc {self.source.relative_to(REPO) if self.source.is_relative_to(REPO) else self.source}"

    def build(self, out: Path) -> None:
        _need_tool("gcc", "apt-get install gcc libc6-dev (libc.a for -static)")
        _compile(self.argv(out), self.source.parent, dict(os.environ), f"{self.key.name} {self.key.version}")


@lru_cache(maxsize=1)
def _gcc_version() -> bytes:
    gcc = shutil.which("gcc")
    if gcc is None:
        return b"gcc-missing"
    return subprocess.run([gcc, "-dumpfullversion"], capture_output=True, check=False).stdout.strip()
