"""Container images of the bundle: OCI layouts (deploy.bundle.oci) made from artifacts of the store.

    ImageRecipe       one image, one layout tar; key ``image:<repository path>@<tag>``; its recipe hash
                      covers the sha256 of every input artifact (got through a ``Fetch``)
    DebDownload       a Debian package, ``apt-get download <package>=<version>`` (key ``deb:<package>``)
    WatBuild          the project's own Wasm module, ``wat2wasm`` of deploy/bundle/wasm/<name>.wat
    for_minor(k, fetch)     kubeadm's seven images for a minor (names as ``kubeadm config images list``)
    verification(fetch)     the shell (busybox) and Wasm images for verification pods
    needs(k, store, recipes) / planned(...)   what a lab's bundle build adds (see the functions)

Where the content is a nearer release than kubeadm's tag (catalog: etcd, CoreDNS), the image is
tagged as kubeadm expects and the config label ``org.opencontainers.image.version`` says what is
really inside; ``io.labdeploy.artifacts`` lists the artifacts it was made from.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from deploy.bundle import Artifact, ArtifactKey, BundleStore, catalog, oci
from deploy.bundle.recipes import BuildError, Recipe, _need_tool
from deploy.bundle.store import Outcome

Fetch = Callable[[ArtifactKey], Artifact]
REGISTRY = "registry.k8s.io"
LOCAL = "localhost/labdeploy"  # our own images: never pulled (a "localhost/" name stays as it is in containerd)
CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")
BUSYBOX_DEB = "1:1.35.0-4+deb12u1+b1"  # Debian 12's busybox-static
WASM_DIR = Path(__file__).resolve().parent / "wasm"
WASM_VERSION = "1.0.0"
WASM_LINE = "labdeploy wasm: hello"
WASM_VARIANT = ("module.wasm.image/variant", "compat")  # crun's wasm handler runs images marked so
ARTIFACTS_LABEL = "io.labdeploy.artifacts"
TIMEOUT = 300.0


def _run(argv: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"{what}: `{' '.join(argv)}` failed: {exc}") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise BuildError(f"{what}: `{' '.join(argv)}` exited {done.returncode}:\n{tail}")
    return done.stdout


# --- what goes into a layer ----------------------------------------------------------------------


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

    def file(self, fetch: Fetch) -> oci.File:
        if self.artifact is not None:
            return oci.File(self.path, self.mode, source=fetch(self.artifact).path)
        return oci.File(self.path, self.mode, data=self.data, link=self.link)


@dataclass(frozen=True)
class Busybox:
    """/bin/busybox out of a busybox-static .deb artifact, and a symlink for each of its applets."""

    artifact: ArtifactKey

    def spec(self) -> dict[str, object]:
        return {"busybox-from-deb": str(self.artifact)}

    def files(self, fetch: Fetch, work: Path) -> list[oci.File]:
        _need_tool("dpkg-deb", "apt-get install dpkg")
        tree = work / "busybox-deb"
        _run(["dpkg-deb", "-x", str(fetch(self.artifact).path), str(tree)], "busybox-static")
        binary = tree / "bin" / "busybox"
        applets = _run([str(binary), "--list-full"], "busybox --list-full").split()
        links = [oci.File(f"/{name}", link="/bin/busybox") for name in sorted(set(applets)) if name != "bin/busybox"]
        return [oci.File("/bin/busybox", 0o755, source=binary), *links]


Item = Entry | Busybox


@dataclass(frozen=True, kw_only=True)
class ImageRecipe(Recipe):
    """One image as an OCI layout tar, built from artifacts that ``fetch`` gets from the store."""

    reference: str
    layers: tuple[tuple[Item, ...], ...]
    config: oci.Config
    annotations: tuple[tuple[str, str], ...] = ()
    fetch: Fetch = field(compare=False, repr=False)

    @property
    def artifacts(self) -> list[ArtifactKey]:
        """The input artifacts, in layer order."""
        keys = [i.artifact for layer in self.layers for i in layer if i.artifact is not None]
        return list(dict.fromkeys(keys))

    def spec(self) -> bytes:
        return oci.canonical_json({
            "reference": self.reference,
            "layers": [[item.spec() for item in layer] for layer in self.layers],
            "config": self.config.as_json(),
            "annotations": dict(self.annotations),
        })

    def inputs(self) -> list[tuple[str, bytes]]:
        parts = [("oci writer", f"gzip {oci.GZIP_LEVEL}".encode()), ("image", self.spec())]
        return parts + [(f"artifact {key}", self.fetch(key).sha256.encode()) for key in self.artifacts]

    def ref(self) -> str:
        return f"oci layout of {self.reference} from {', '.join(map(str, self.artifacts)) or 'literal files'}"

    def image(self, work: Path) -> oci.Image:
        layers = []
        for layer in self.layers:
            files: list[oci.File] = []
            for item in layer:
                files += item.files(self.fetch, work) if isinstance(item, Busybox) else [item.file(self.fetch)]
            layers.append(tuple(files))
        return oci.Image(self.reference, tuple(layers), self.config, self.annotations)

    def build(self, out: Path) -> None:
        with tempfile.TemporaryDirectory(prefix=".image-", dir=out.parent) as work:
            try:
                oci.write_layout([self.image(Path(work))], out)
            except oci.ImageError as exc:
                raise BuildError(f"{self.key}: {exc.message}") from exc

    def check(self, path: Path) -> str:
        """The layout's image names, after every blob's digest was verified."""
        return " ".join(oci.verify_layout(path))


def image_key(reference: str) -> ArtifactKey:
    """``registry.k8s.io/coredns/coredns:v1.14.2`` -> ``image:coredns.coredns@v1.14.2``.

    The registry (a first component with '.' or ':', or ``localhost``) is left out; keys hold no '/'.
    """
    name, tag = oci.split_reference(reference)
    first, _, rest = name.partition("/")
    path = rest if rest and (first == "localhost" or "." in first or ":" in first) else name
    return ArtifactKey(f"image:{path.replace('/', '.')}", tag)


def _labels(version: str, artifacts: Iterable[ArtifactKey]) -> tuple[tuple[str, str], ...]:
    return ((oci.VERSION_LABEL, version), (ARTIFACTS_LABEL, ",".join(map(str, artifacts))))


def binary_image(reference: str, binary: ArtifactKey, at: str, fetch: Fetch, *,
                 extra: tuple[ArtifactKey, ...] = ()) -> ImageRecipe:
    """An image of static binaries at ``at``/<name>, the first one its entrypoint."""
    keys = (binary, *extra)
    entries = tuple(Entry(f"{at.rstrip('/')}/{k.name}", artifact=k) for k in keys)
    config = oci.Config(entrypoint=(entries[0].path,), labels=_labels(binary.version, keys))
    return ImageRecipe(key=image_key(reference), reference=reference, layers=(entries,), config=config, fetch=fetch)


# --- the images of a Kubernetes minor --------------------------------------------------------------


def references(pins: catalog.Minor, registry: str = REGISTRY) -> list[str]:
    """The names ``kubeadm config images list --kubernetes-version <v>`` prints, in its order."""
    kube = [f"{registry}/{name}:{pins.kubernetes}" for name in CONTROL_PLANE]
    return [*kube, f"{registry}/coredns/coredns:{pins.kubeadm_coredns}", f"{registry}/pause:{pins.pause_image}",
            f"{registry}/etcd:{pins.kubeadm_etcd}"]


def kubeadm_references(kubeadm: Path, version: str) -> list[str]:
    """Ask a kubeadm binary itself (offline: the version is given, so nothing is looked up)."""
    out = _run([str(kubeadm), "config", "images", "list", "--kubernetes-version", version], "kubeadm images")
    return out.split()


def for_minor(kubernetes: str, fetch: Fetch) -> list[ImageRecipe]:
    """kubeadm's images for a minor, in the order of ``references``."""
    pins = catalog.minor(kubernetes)
    names = references(pins)
    kube = [binary_image(ref, ArtifactKey(n, pins.kubernetes), "/usr/local/bin", fetch)
            for ref, n in zip(names, CONTROL_PLANE, strict=False)]
    coredns = binary_image(names[4], ArtifactKey("coredns", pins.coredns), "/", fetch)
    pause = binary_image(names[5], catalog.pause().key, "/", fetch)
    etcd = binary_image(names[6], ArtifactKey("etcd", pins.etcd), "/usr/local/bin", fetch)
    return [*kube, coredns, pause, etcd]


# --- the images of the verification pods -----------------------------------------------------------


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


def busybox_deb() -> DebDownload:
    return DebDownload(key=ArtifactKey("deb:busybox-static", BUSYBOX_DEB), package="busybox-static")


def hello_wasm() -> WatBuild:
    return WatBuild(key=ArtifactKey("wasm-hello", WASM_VERSION), source=WASM_DIR / "hello.wat")


def shell_image(fetch: Fetch) -> ImageRecipe:
    """busybox's /bin/sh and applets: ``localhost/labdeploy/busybox:<upstream version>``."""
    deb = busybox_deb().key
    upstream = deb.version.split(":", 1)[-1].split("-", 1)[0]
    reference = f"{LOCAL}/busybox:{upstream}"
    config = oci.Config(cmd=("/bin/sh",), labels=_labels(deb.version, [deb]))
    return ImageRecipe(key=image_key(reference), reference=reference, layers=((Busybox(deb),),),
                       config=config, fetch=fetch)


def wasm_image(fetch: Fetch) -> ImageRecipe:
    """The Wasm module as /hello.wasm, marked for crun's wasm handler (annotation and label)."""
    wasm = hello_wasm().key
    reference = f"{LOCAL}/wasm-hello:{wasm.version}"
    config = oci.Config(entrypoint=("/hello.wasm",), labels=(*_labels(wasm.version, [wasm]), WASM_VARIANT))
    layer = (Entry("/hello.wasm", 0o755, artifact=wasm),)
    return ImageRecipe(key=image_key(reference), reference=reference, layers=(layer,), config=config,
                       annotations=(WASM_VARIANT,), fetch=fetch)


def verification(fetch: Fetch) -> list[ImageRecipe]:
    return [shell_image(fetch), wasm_image(fetch)]


# --- how the store hands inputs to image recipes -------------------------------------------------


def from_store(store: BundleStore) -> Fetch:
    """A Fetch of what is already in the store (BuildError naming the key if it is not)."""

    def fetch(key: ArtifactKey) -> Artifact:
        art = store.get(key)
        if art is None:
            raise BuildError(f"{key} is not in the bundle; an image needs it",
                             hint="build it first: `deploy bundle build` with the lab that needs it")
        return art

    return fetch


def ensuring(store: BundleStore, recipes: Iterable[Recipe]) -> Fetch:
    """A Fetch that builds an input first when one of ``recipes`` makes it (else: from the store)."""
    by_key = {recipe.key: recipe for recipe in recipes}
    stored = from_store(store)

    def fetch(key: ArtifactKey) -> Artifact:
        recipe = by_key.get(key)
        if recipe is None:
            return stored(key)
        art, _outcome = ensure(store, recipe)
        return art

    return fetch


def ensure(store: BundleStore, recipe: Recipe) -> tuple[Artifact, Outcome]:
    return store.ensure(recipe.key, recipe.produce, recipe_hash=recipe.recipe_hash())


def _images(kubernetes: str | None, fetch: Fetch) -> list[ImageRecipe]:
    return [*(for_minor(kubernetes, fetch) if kubernetes is not None else []), *verification(fetch)]


def needs(kubernetes: str | None, store: BundleStore, recipes: Iterable[Recipe]) -> list[Recipe]:
    """The image recipes whose inputs ``recipes`` (the lab's binaries) or the store can give, and the
    recipes of their own inputs (the busybox .deb, the Wasm module). Add them to the lab's build."""
    own: list[Recipe] = [busybox_deb(), hello_wasm()]
    known = [*recipes, *own]
    fetch = ensuring(store, known)
    have = {r.key for r in known} | {a.key for a in store.list()}
    chosen = [image for image in _images(kubernetes, fetch) if set(image.artifacts) <= have]
    return [*own, *chosen]


def planned(kubernetes: str | None, store: BundleStore, recipes: Iterable[Recipe]) -> list[ArtifactKey]:
    """The image keys a lab needs whose inputs nothing here makes yet (e.g. no CoreDNS recipe)."""
    given = list(recipes)
    made = {r.key for r in needs(kubernetes, store, given)}
    return [image.key for image in _images(kubernetes, from_store(store)) if image.key not in made]

