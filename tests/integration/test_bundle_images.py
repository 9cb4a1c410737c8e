"""The bundle's images in a real containerd: Debian's containerd (1.6) started by the test on its own
root, state and socket under tmp_path, images imported with ``ctr -n k8s.io images import``, listed under
the names kubeadm expects, and run with Debian's runc.

The images come from the real store (``deploy.bundle.BundleStore()``): what is missing is built
(on a warm machine only the layouts are written).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.bundle import BundleStore, catalog, images

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("containerd") is None or shutil.which("ctr") is None,
                       reason="containerd is not installed (apt-get install containerd)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="containerd needs root for its snapshotter and mounts"),
]

MINOR = "1.36"
NS = "k8s.io"
CONFIG = """version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{base}/containerd.sock"
"""


@dataclass(frozen=True)
class Ctr:
    address: str
    log: Path

    def __call__(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        argv = ["ctr", "--address", self.address, "-n", NS, *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)

    def ok(self, *args: str) -> str:
        done = self(*args)
        tail = self.log.read_text()[-3000:]
        assert done.returncode == 0, f"ctr {' '.join(args)}: {done.stderr}\ncontainerd log:\n{tail}"
        return done.stdout


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def ctr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctr]:
    version = subprocess.run(["containerd", "--version"], capture_output=True, text=True, check=True).stdout
    print(f"\n{version.strip()}")
    base = tmp_path_factory.mktemp("containerd")
    (base / "config.toml").write_text(CONFIG.format(base=base))
    log = base / "containerd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["containerd", "--config", str(base / "config.toml")], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        client = Ctr(str(base / "containerd.sock"), log)
        deadline = time.monotonic() + 30
        while client("version").returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"containerd did not serve {client.address} within 30 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield client
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def layouts() -> dict[str, Path]:
    """The image layouts a 1.36 lab gets, by image name, built into (or found in) the real store."""
    store = BundleStore()
    chosen = images.needs(MINOR, store, catalog.needs(MINOR, []))
    out = {}
    for recipe in chosen:
        artifact, outcome = images.ensure(store, recipe)
        if isinstance(recipe, images.ImageRecipe):
            print(f"{outcome:<7} {recipe.reference}  {artifact.size / 2**20:.1f} MiB")
            out[recipe.reference] = artifact.path
    return out


@pytest.fixture(scope="module")
def imported(ctr: Ctr, layouts: dict[str, Path]) -> list[str]:
    for path in layouts.values():
        done = subprocess.run(images.ctr_import(path, ctr.address), capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
    return ctr.ok("images", "ls", "-q").split()


def test_debian_containerd_is_the_1_6_line() -> None:
    version = subprocess.run(["containerd", "--version"], capture_output=True, text=True, check=True).stdout
    assert " 1.6." in version


def test_imported_images_have_exactly_kubeadms_names_and_ours(imported: list[str]) -> None:
    kubeadm = images.references(catalog.VERSIONS[MINOR])
    ours = ["localhost/labdeploy/busybox:1.35.0", "localhost/labdeploy/wasm-hello:1.0.0"]
    assert f"registry.k8s.io/coredns/coredns:{catalog.VERSIONS[MINOR].kubeadm_coredns}" in kubeadm
    assert sorted(imported) == sorted([*kubeadm, *ours])  # all seven of kubeadm's, CoreDNS included


def test_the_built_kubeadm_expects_those_names(imported: list[str]) -> None:
    pins = catalog.VERSIONS[MINOR]
    recipe = catalog.kube("kubeadm", pins)
    art, _ = BundleStore().ensure(recipe.key, recipe.produce, recipe_hash=recipe.recipe_hash())
    expected = images.kubeadm_references(art.path, pins.kubernetes)
    assert set(imported) - set(expected) == {f"{images.LOCAL}/busybox:1.35.0", f"{images.LOCAL}/wasm-hello:1.0.0"}


def test_content_is_complete_and_unpacked(ctr: Ctr, imported: list[str]) -> None:
    lines = ctr.ok("images", "check").splitlines()[1:]
    assert len(lines) == len(imported)
    assert all("complete" in line for line in lines), lines


def test_images_can_be_pinned_for_the_kubelet(ctr: Ctr, imported: list[str]) -> None:
    for name in imported:
        subprocess.run(images.ctr_pin(name, ctr.address), capture_output=True, check=True)
    rows = ctr.ok("images", "ls").splitlines()[1:]
    assert len(rows) == len(imported)
    assert all(row.rstrip().endswith("io.cri-containerd.pinned=pinned") for row in rows), rows


def _run(ctr: Ctr, image: str, name: str, *argv: str) -> str:
    done = ctr("run", "--rm", image, name, *argv, timeout=60)
    if done.returncode != 0:
        pytest.skip(f"`ctr run` cannot start a container in this sandbox: {done.stderr.strip()[-500:]}")
    return done.stdout


@pytest.mark.usefixtures("imported")
def test_the_shell_image_runs_sh(ctr: Ctr) -> None:
    assert _run(ctr, "localhost/labdeploy/busybox:1.35.0", "shell-ok", "sh", "-c", "echo ok").strip() == "ok"


@pytest.mark.usefixtures("imported")
def test_control_plane_binaries_run_by_name(ctr: Ctr) -> None:
    pins = catalog.VERSIONS[MINOR]
    out = _run(ctr, f"registry.k8s.io/kube-apiserver:{pins.kubernetes}", "apiserver-version", "kube-apiserver",
               "--version")
    assert out.strip() == f"Kubernetes {pins.kubernetes}"
    out = _run(ctr, f"registry.k8s.io/etcd:{pins.kubeadm_etcd}", "etcd-version", "etcd", "--version")
    assert f"etcd Version: {pins.etcd.lstrip('v')}" in out


@pytest.mark.usefixtures("imported")
def test_kube_proxy_has_debians_iptables_with_the_nft_backend(ctr: Ctr) -> None:
    image = f"registry.k8s.io/kube-proxy:{catalog.VERSIONS[MINOR].kubernetes}"
    for name in ("iptables", "ip6tables-restore"):
        assert _run(ctr, image, f"proxy-{name}", name, "--version").strip() == f"{name} v1.8.9 (nf_tables)"
    assert _run(ctr, image, "proxy-version", "kube-proxy", "--version").strip().startswith("Kubernetes v1.36")
