"""Upstream sources: the release URL of every artifact the catalog knows, and its published digest.

The checksum files under tests/fixtures/bundle/upstream/ are laid out as upstream serves them and
hold digests of stand-in files next to them, so each test hashes the stand-in to check the pick.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from deploy.bundle import ArtifactKey, BundleError, BundleStore, Source, catalog, upstream
from deploy.bundle.fetch import Fetcher, FetchError, ensure_release, fetcher_for, mirror_layout, mirror_url

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bundle" / "upstream"
GH = "https://github.com"
GVISOR = "https://storage.googleapis.com/gvisor/releases/release/20251103.0/x86_64"
K8S = "https://dl.k8s.io/release/v1.36.3/bin/linux/amd64"

# name, version -> download URL, checksum URL, member, algorithm
CASES = {
    **{(name, "v1.36.3"): (f"{K8S}/{name}", f"{K8S}/{name}.sha256", None, "sha256")
       for name in (*upstream.KUBERNETES, "kube-proxy")},
    ("crictl", "v1.37.0"): (
        f"{GH}/kubernetes-sigs/cri-tools/releases/download/v1.37.0/crictl-v1.37.0-linux-amd64.tar.gz",
        f"{GH}/kubernetes-sigs/cri-tools/releases/download/v1.37.0/crictl-v1.37.0-linux-amd64.tar.gz.sha256",
        "crictl", "sha256"),
    ("helm", "v3.22.0"): ("https://get.helm.sh/helm-v3.22.0-linux-amd64.tar.gz",
                          "https://get.helm.sh/helm-v3.22.0-linux-amd64.tar.gz.sha256sum",
                          "linux-amd64/helm", "sha256"),
    ("runc", "v1.4.4"): (f"{GH}/opencontainers/runc/releases/download/v1.4.4/runc.amd64",
                         f"{GH}/opencontainers/runc/releases/download/v1.4.4/runc.sha256sum", None, "sha256"),
    ("etcd", "v3.6.8"): (f"{GH}/etcd-io/etcd/releases/download/v3.6.8/etcd-v3.6.8-linux-amd64.tar.gz",
                         f"{GH}/etcd-io/etcd/releases/download/v3.6.8/SHA256SUMS",
                         "etcd-v3.6.8-linux-amd64/etcd", "sha256"),
    ("containerd", "v2.4.2"): (
        f"{GH}/containerd/containerd/releases/download/v2.4.2/containerd-2.4.2-linux-amd64.tar.gz",
        f"{GH}/containerd/containerd/releases/download/v2.4.2/containerd-2.4.2-linux-amd64.tar.gz.sha256sum",
        "bin/containerd", "sha256"),
    ("containerd-shim-runc-v2", "v2.4.2"): (
        f"{GH}/containerd/containerd/releases/download/v2.4.2/containerd-2.4.2-linux-amd64.tar.gz",
        f"{GH}/containerd/containerd/releases/download/v2.4.2/containerd-2.4.2-linux-amd64.tar.gz.sha256sum",
        "bin/containerd-shim-runc-v2", "sha256"),
    ("cni-plugins", "v1.10.0"): (
        f"{GH}/containernetworking/plugins/releases/download/v1.10.0/cni-plugins-linux-amd64-v1.10.0.tgz",
        f"{GH}/containernetworking/plugins/releases/download/v1.10.0/cni-plugins-linux-amd64-v1.10.0.tgz.sha256",
        None, "sha256"),
    ("coredns", "v1.14.3"): (
        f"{GH}/coredns/coredns/releases/download/v1.14.3/coredns_1.14.3_linux_amd64.tgz",
        f"{GH}/coredns/coredns/releases/download/v1.14.3/coredns_1.14.3_linux_amd64.tgz.sha256",
        "coredns", "sha256"),
    ("runsc", "20251103.0"): (f"{GVISOR}/runsc", f"{GVISOR}/runsc.sha512", None, "sha512"),
    ("containerd-shim-runsc-v1", "20251103.0"): (
        f"{GVISOR}/containerd-shim-runsc-v1", f"{GVISOR}/containerd-shim-runsc-v1.sha512", None, "sha512"),
}


def _fixture(url: str) -> Path:
    parts = urlsplit(url)
    return FIXTURES / parts.netloc / parts.path.lstrip("/")


def _release(name: str, version: str, platform: str = "linux/amd64") -> upstream.Release:
    rel = upstream.release(ArtifactKey(name, version, platform))
    assert rel is not None, f"no upstream release for {name}@{version}"
    return rel


@pytest.mark.parametrize(("name", "version"), sorted(CASES))
def test_release_url_shape_and_published_digest(name: str, version: str) -> None:
    url, checksum_url, member, algorithm = CASES[name, version]
    rel = _release(name, version)
    assert (rel.url, rel.checksum_url, rel.member, rel.algorithm) == (url, checksum_url, member, algorithm)
    assert rel.filename == url.rsplit("/", 1)[1]
    text = _fixture(checksum_url).read_text()
    want = hashlib.new(algorithm, _fixture(url).read_bytes()).hexdigest()
    assert upstream.expected_digest(rel, text) == want


def test_only_the_cni_plugins_archive_is_kept_whole_and_not_executable() -> None:
    kept_whole = {name for name, version in CASES if not _release(name, version).executable}
    assert kept_whole == {"cni-plugins"}


def test_every_pinned_artifact_of_the_catalog_has_an_upstream_release() -> None:
    for kubernetes in catalog.VERSIONS:
        keys = catalog.everything(kubernetes, ["runc", "containerd"])
        missing = [str(key) for key in keys if upstream.release(key) is None]
        assert missing == [f"pause@{catalog.PAUSE_VERSION}/linux/amd64"]  # our own program: built, never fetched


def test_sha256sum_lists_pick_the_line_of_the_artifacts_own_file() -> None:
    base = f"{GH}/etcd-io/etcd/releases/download/v3.6.8"
    text = _fixture(f"{base}/SHA256SUMS").read_text()
    arm = _release("etcd", "v3.6.8", "linux/arm64")
    assert arm.member == "etcd-v3.6.8-linux-arm64/etcd"
    sha = hashlib.sha256(_fixture(f"{base}/etcd-v3.6.8-linux-arm64.tar.gz").read_bytes()).hexdigest()
    assert upstream.expected_digest(arm, text) == sha
    with pytest.raises(upstream.ChecksumError, match=r"SHA256SUMS has no digest for etcd-v3.6.8-linux-s390x"):
        upstream.expected_digest(_release("etcd", "v3.6.8", "linux/s390x"), text)


def test_binary_mode_lines_are_read() -> None:
    runc = f"{GH}/opencontainers/runc/releases/download/v1.4.4"
    text = _fixture(f"{runc}/runc.sha256sum").read_text()
    assert " *runc.arm64" in text
    sha = hashlib.sha256(_fixture(f"{runc}/runc.arm64").read_bytes()).hexdigest()
    assert upstream.expected_digest(_release("runc", "v1.4.4", "linux/arm64"), text) == sha


def test_gvisor_publishes_sha512_and_a_sha256_file_is_refused_for_it() -> None:
    rel = _release("runsc", "20251103.0")
    sha256_text = _fixture(f"{K8S}/kubeadm.sha256").read_text()
    with pytest.raises(upstream.ChecksumError, match=r"runsc\.sha512: checksum line 1 is not a sha512 digest"):
        upstream.expected_digest(rel, sha256_text)
    with pytest.raises(upstream.ChecksumError, match="publishes sha512, not sha256"):
        upstream.expected_sha256(rel, _fixture(f"{GVISOR}/runsc.sha512").read_text())


@pytest.mark.parametrize(
    ("version", "platform", "url"),
    [
        ("20251103", "linux/amd64", "https://storage.googleapis.com/gvisor/releases/release/20251103/x86_64/runsc"),
        ("release-20251103.1", "linux/arm64",
         "https://storage.googleapis.com/gvisor/releases/release/20251103.1/aarch64/runsc"),
    ],
)
def test_gvisor_release_dates_and_architectures(version: str, platform: str, url: str) -> None:
    assert _release("runsc", version, platform).url == url


def test_a_gvisor_go_branch_pseudo_version_names_no_release() -> None:
    assert upstream.release(ArtifactKey("runsc", catalog.GVISOR_VERSION)) is None
    assert upstream.release(ArtifactKey("runsc", "20251103", "linux/s390x")) is None


def test_kubeadm_images_are_named_as_kubeadm_lists_them() -> None:
    assert upstream.kubeadm_images(catalog.minor("1.36")) == [
        "registry.k8s.io/kube-apiserver:v1.36.3",
        "registry.k8s.io/kube-controller-manager:v1.36.3",
        "registry.k8s.io/kube-scheduler:v1.36.3",
        "registry.k8s.io/kube-proxy:v1.36.3",
        "registry.k8s.io/coredns/coredns:v1.14.2",
        "registry.k8s.io/pause:3.10.2",
        "registry.k8s.io/etcd:3.6.8-0",
    ]


def test_a_mirror_keeps_the_upstream_path_under_its_host_folder() -> None:
    bases = mirror_layout("http://files.internal/mirror/")
    assert set(bases) == set(upstream.HOSTS)
    mirrored = mirror_url(f"{K8S}/kubeadm", bases)
    assert mirrored == f"http://files.internal/mirror/dl.k8s.io{urlsplit(K8S).path}/kubeadm"
    assert mirror_url("https://example.org/x", bases) is None
    fetcher = Fetcher(mirror_base=bases, upstream=False)
    assert fetcher.sources(_release("runsc", "20251103.0")) == [
        (f"http://files.internal/mirror/storage.googleapis.com{urlsplit(GVISOR).path}/runsc",
         f"http://files.internal/mirror/storage.googleapis.com{urlsplit(GVISOR).path}/runsc.sha512")]
    both = Fetcher(mirror_base=bases).sources(_release("kubeadm", "v1.36.3"))
    assert [urlsplit(url).netloc for url, _ in both] == ["files.internal", "dl.k8s.io"]


@pytest.mark.parametrize("base", ["files.internal/", "file:///srv/mirror", "ftp://files.internal/"])
def test_a_mirror_that_is_not_http_is_refused(base: str) -> None:
    with pytest.raises(FetchError, match="must be an http"):
        Fetcher(mirror_base={"dl.k8s.io": base})


def test_no_source_at_all_says_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"no mirror is set for dl\.k8s\.io and upstream is off") as info:
        Fetcher(upstream=False).fetch(_release("kubeadm", "v1.36.3"), tmp_path / "kubeadm")
    assert isinstance(info.value, BundleError)
    assert list(tmp_path.iterdir()) == []


def test_fetcher_for_each_bundle_source() -> None:
    auto = fetcher_for("auto", files="http://files.internal/")
    assert auto is not None
    assert auto.upstream
    assert auto.mirror_base["dl.k8s.io"] == "http://files.internal/dl.k8s.io"
    plain = fetcher_for("auto")
    assert plain is not None
    assert dict(plain.mirror_base) == {}
    up = fetcher_for("upstream", files="http://files.internal/")
    assert up is not None
    assert (dict(up.mirror_base), up.upstream) == ({}, True)  # upstream: release URLs, not the mirror
    assert fetcher_for("build") is None
    assert fetcher_for("offline") is None
    with pytest.raises(BundleError, match="not one of auto, upstream, build, offline"):
        fetcher_for("sideways")


def test_ensure_release_serves_the_store_without_traffic(tmp_path: Path) -> None:
    """A cached artifact comes back as is; the fetcher (pointed at a closed port) is never used."""
    store = BundleStore(tmp_path / "bundle")
    key = ArtifactKey("kubeadm", "v1.36.3")

    def stand_in(path: Path) -> Source:
        path.write_bytes(b"kubeadm")
        return Source("upstream", "https://dl.k8s.io/release/v1.36.3/bin/linux/amd64/kubeadm")

    store.ensure(key, stand_in)
    dead = Fetcher(mirror_base={"dl.k8s.io": "http://127.0.0.1:9"}, upstream=False, attempts=1)
    found = ensure_release(store, key, dead)
    assert found is not None
    assert (found[1], found[0].path.read_bytes()) == ("cached", b"kubeadm")
    assert ensure_release(store, ArtifactKey("pause", catalog.PAUSE_VERSION), dead) is None
