"""Container images of the bundle: OCI layouts (deploy.bundle.oci) made from artifacts of the store.

    ImageRecipe       one image, one layout tar; key ``image:<repository path>@<tag>``; its recipe hash
                      covers the sha256 of every input artifact (got through a ``Fetch``)
                      (its layer items and the Debian/Wasm input recipes: deploy.bundle.image_inputs)
    for_minor(k, fetch)     kubeadm's seven images for a minor (names as ``kubeadm config images list``)
    verification(fetch)     the shell (busybox) and Wasm images for verification pods
    needs(k, store, recipes) / planned(...)   what a lab's bundle build adds (see the functions)

Where the content is a nearer release than kubeadm's tag (catalog: etcd, CoreDNS), the image is
tagged as kubeadm expects and the config label ``org.opencontainers.image.version`` says what is
really inside; ``io.labdeploy.artifacts`` lists the artifacts it was made from.

kube-proxy gets Debian 12's iptables (nft backend, as Debian 12 nodes use) under the names it
runs (iptables, iptables-save, iptables-restore and the ip6tables ones), like upstream's
distroless-iptables base; the other control-plane images are the static binary alone.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from deploy.bundle import Artifact, ArtifactKey, BundleStore, catalog, oci
from deploy.bundle.image_inputs import Busybox, DebDownload, DebTree, Entry, Fetch, Item, WatBuild, _run, deb
from deploy.bundle.recipes import BuildError, Recipe
from deploy.bundle.store import Outcome

REGISTRY = "registry.k8s.io"
LOCAL = "localhost/labdeploy"  # our own images: never pulled (a "localhost/" name stays as it is in containerd)
CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")
BUSYBOX_DEB = "1:1.35.0-4+deb12u1+b1"  # Debian 12's busybox-static
WASM_DIR = Path(__file__).resolve().parent / "wasm"
WASM_VERSION = "1.0.0"
WASM_LINE = "labdeploy wasm: hello"
WASM_VARIANT = ("module.wasm.image/variant", "compat")  # crun's wasm handler runs images marked so
ARTIFACTS_LABEL = "io.labdeploy.artifacts"
IPTABLES_DEBS = {  # Debian 12: iptables and what it links against (`apt-cache depends iptables`)
    "libc6": "2.36-9+deb12u14",
    "libmnl0": "1.0.4-3",
    "libnfnetlink0": "1.0.2-2",
    "libnetfilter-conntrack3": "1.0.9-3",
    "libnftnl11": "1.2.4-2",
    "libxtables12": "1.8.9-2",
    "libip4tc2": "1.8.9-2",
    "libip6tc2": "1.8.9-2",
    "iptables": "1.8.9-2",
    "netbase": "6.4",
}
IPTABLES_NAMES = tuple(f"{family}{tail}" for family in ("iptables", "ip6tables") for tail in ("", "-save", "-restore"))


@dataclass(frozen=True, kw_only=True)
class ImageRecipe(Recipe):
    """One image as an OCI layout tar, built from artifacts that ``fetch`` gets from the store."""

    reference: str
    layers: tuple[tuple[Item, ...], ...]
    config: oci.Config
    annotations: tuple[tuple[str, str], ...] = ()
    fetch: Fetch = field(compare=False, repr=False)
    identity: Callable[[ArtifactKey], str] | None = field(default=None, compare=False, repr=False)

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
        identity = self.identity or (lambda key: self.fetch(key).sha256)
        return parts + [(f"artifact {key}", identity(key).encode()) for key in self.artifacts]

    def ref(self) -> str:
        return f"oci layout of {self.reference} from {', '.join(map(str, self.artifacts)) or 'literal files'}"

    def image(self, work: Path) -> oci.Image:
        layers = []
        for layer in self.layers:
            files: list[oci.File] = []
            for item in layer:
                files += item.files(self.fetch, work)
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


def iptables_debs() -> list[DebDownload]:
    return [deb(package, version) for package, version in IPTABLES_DEBS.items()]


def with_iptables(recipe: ImageRecipe) -> ImageRecipe:
    """The image with a first layer of Debian's iptables (nft backend) and its libraries."""
    links = tuple(Entry(f"/usr/sbin/{name}", link="xtables-nft-multi") for name in IPTABLES_NAMES)
    base: tuple[Item, ...] = (*(DebTree(d.key) for d in iptables_debs()), *links)
    return replace(recipe, layers=(base, *recipe.layers))


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
    kube[3] = with_iptables(kube[3])  # kube-proxy
    coredns = binary_image(names[4], ArtifactKey("coredns", pins.coredns), "/", fetch)
    pause = binary_image(names[5], catalog.pause().key, "/", fetch)
    etcd = binary_image(names[6], ArtifactKey("etcd", pins.etcd), "/usr/local/bin", fetch)
    return [*kube, coredns, pause, etcd]


# --- the images of the verification pods -----------------------------------------------------------


def busybox_deb() -> DebDownload:
    return deb("busybox-static", BUSYBOX_DEB)


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


def network_policy_image(fetch: Fetch) -> ImageRecipe:
    """kube-network-policies alone at /bin: ``localhost/labdeploy/kube-network-policies:<version>``."""
    from deploy.bundle import recipes_tools

    build = recipes_tools.network_policies()
    image = binary_image(f"{LOCAL}/kube-network-policies:{build.key.version}", build.key, "/bin", fetch)
    return replace(image, requires=(build.key,), identity=lambda _key: f"recipe {build.recipe_hash()}")


def verification(fetch: Fetch) -> list[ImageRecipe]:
    return [shell_image(fetch), wasm_image(fetch)]


def verification_refs() -> tuple[str, str]:
    """The references of the shell and Wasm images the cluster checks run (no artifact is read)."""
    def nothing(key: ArtifactKey) -> Artifact:
        raise LookupError(key)

    shell, wasm = verification(nothing)
    return shell.reference, wasm.reference


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


def ensure(store: BundleStore, recipe: Recipe) -> tuple[Artifact, Outcome]:
    return store.ensure(recipe.key, recipe.produce, recipe_hash=recipe.recipe_hash())


def _images(kubernetes: str | None, fetch: Fetch) -> list[ImageRecipe]:
    return [*(for_minor(kubernetes, fetch) if kubernetes is not None else []), *verification(fetch)]


def needs(kubernetes: str | None, store: BundleStore, recipes: Iterable[Recipe]) -> list[Recipe]:
    """The image recipes whose inputs ``recipes`` (the lab's binaries) or the store can give, and the
    recipes of their own inputs (the busybox .deb, the Wasm module). Add them to the lab's build.

    Each image ``requires`` its inputs (so a build packs it after them) and hashes each input by its
    recipe's hash, or by its sha256 when only the store has it: computing a plan builds nothing.
    """
    own: list[Recipe] = [busybox_deb(), hello_wasm(), *(iptables_debs() if kubernetes is not None else [])]
    known = {r.key: r for r in [*recipes, *own]}
    stored = from_store(store)
    have = set(known) | {a.key for a in store.list()}

    def identity(key: ArtifactKey) -> str:
        recipe = known.get(key)
        return f"recipe {recipe.recipe_hash()}" if recipe is not None else f"sha256 {stored(key).sha256}"

    chosen = [replace(image, requires=tuple(image.artifacts), identity=identity)
              for image in _images(kubernetes, stored) if set(image.artifacts) <= have]
    return [*own, *chosen]


def planned(kubernetes: str | None, store: BundleStore, recipes: Iterable[Recipe]) -> list[ArtifactKey]:
    """The image keys a lab needs whose inputs nothing here makes yet (e.g. no CoreDNS recipe)."""
    given = list(recipes)
    made = {r.key for r in needs(kubernetes, store, given)}
    return [image.key for image in _images(kubernetes, from_store(store)) if image.key not in made]



# --- on a node -----------------------------------------------------------------------------------

PINNED = ("io.cri-containerd.pinned", "pinned")  # the CRI reports such images as pinned: kubelet's GC keeps them
NAMESPACE = "k8s.io"  # the containerd namespace the CRI (and so the kubelet) sees


def ctr_import(layout: Path | str, address: str | None = None) -> list[str]:
    """The argv that imports one layout tar where the kubelet finds it (names from io.containerd.image.name)."""
    return [*_ctr(address), "images", "import", "--all-platforms", str(layout)]


def ctr_pin(reference: str, address: str | None = None) -> list[str]:
    """The argv that pins an imported image (containerd >= 1.7 reports the label to the kubelet as pinned)."""
    return [*_ctr(address), "images", "label", reference, "=".join(PINNED)]


def _ctr(address: str | None) -> list[str]:
    return ["ctr", *(["--address", address] if address else []), "-n", NAMESPACE]
