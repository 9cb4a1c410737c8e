"""Bundle recipes: what their hashes cover, the catalog's honesty, checksum parsing, and pause for real."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from deploy.bundle import ArtifactKey, BundleStore, catalog, recipes, upstream
from deploy.bundle.recipes import GO_MODULES, BuildError, CBuild, GoBuild, go_caches
from deploy.errors import PlanError
from deploy.images.children import alive

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bundle"


def _module_copy(tmp_path: Path, name: str = "crictl") -> Path:
    root = tmp_path / "go"
    shutil.copytree(GO_MODULES / name, root / name)
    return root


def _crictl_in(root: Path) -> GoBuild:
    return replace(catalog.crictl(), modules_root=root)


# --- recipe hashes -------------------------------------------------------------------------------


def test_go_recipe_hash_is_stable_and_changes_with_go_sum(tmp_path: Path) -> None:
    root = _module_copy(tmp_path)
    before = _crictl_in(root).recipe_hash()
    assert _crictl_in(root).recipe_hash() == before
    assert before == catalog.crictl().recipe_hash()  # the copy hashes like the committed module
    with (root / "crictl" / "go.sum").open("a") as handle:
        handle.write("example.com/x v1.0.0 h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n")
    assert _crictl_in(root).recipe_hash() != before


def test_go_recipe_hash_covers_go_mod_and_own_sources(tmp_path: Path) -> None:
    root = _module_copy(tmp_path)
    before = _crictl_in(root).recipe_hash()
    (root / "crictl" / "main.go").write_text("package main\n")
    with_source = _crictl_in(root).recipe_hash()
    mod = root / "crictl" / "go.mod"
    mod.write_text(mod.read_text() + "\n// changed\n")
    assert len({before, with_source, _crictl_in(root).recipe_hash()}) == 3


@pytest.mark.parametrize(
    "change",
    [
        {"ldflags": ("-X sigs.k8s.io/cri-tools/pkg/version.Version=v9",)},
        {"cgo": True},
        {"tags": ("netgo",)},
        {"package": "sigs.k8s.io/cri-tools/cmd/critest"},
        {"toolchain": "go1.27.3"},
        {"key": ArtifactKey("crictl", "v1.37.0", "linux/arm64")},
    ],
)
def test_go_recipe_hash_changes_with_each_build_setting(change: dict[str, object]) -> None:
    recipe = catalog.crictl()
    assert replace(recipe, **change).recipe_hash() != recipe.recipe_hash()  # type: ignore[arg-type]


def test_go_recipe_env_is_static_linux_amd64_with_the_local_toolchain() -> None:
    recipe = catalog.crictl()
    assert recipe.env() == {"CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": "amd64", "GOTOOLCHAIN": "local"}
    argv = recipe.argv(Path("/o/crictl"))
    assert argv[:3] == ["go", "build", "-trimpath"]
    assert argv[-3:] == ["-o", "/o/crictl", "sigs.k8s.io/cri-tools/cmd/crictl"]
    assert argv[4].startswith("-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=v1.37.0")


def test_go_caches_follow_labdeploy_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LABDEPLOY_CACHE", str(tmp_path))
    assert go_caches() == (tmp_path / "go" / "mod", tmp_path / "go" / "build")


def test_c_recipe_hash_covers_source_and_flags(tmp_path: Path) -> None:
    source = tmp_path / "pause.c"
    shutil.copy(catalog.pause().source, source)
    recipe = replace(catalog.pause(), source=source)
    before = recipe.recipe_hash()
    assert before == catalog.pause().recipe_hash()  # the path is not hashed, the content is
    assert replace(recipe, cflags=("-O0", "-static")).recipe_hash() != before
    assert replace(recipe, defines=('PAUSE_VERSION="x"',)).recipe_hash() != before
    source.write_text(source.read_text() + "\n")
    assert recipe.recipe_hash() != before


def test_missing_module_file_is_a_build_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"crictl: cannot read .*crictl/go\.mod"):
        _crictl_in(tmp_path).recipe_hash()


def test_failed_go_build_raises_with_the_tail_of_go_output(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if shutil.which("go") is None:
        pytest.skip("go is not installed")
    # never downloads: with the shared cache warm, go finds no module providing the package; on a
    # cold cache it stops at the first module it may not look up; either way go says why, and we show it
    monkeypatch.setenv("GOPROXY", "off")
    recipe = replace(_crictl_in(_module_copy(tmp_path)), package="example.invalid/nothing/cmd/x")
    tail = r"\n.*(cannot find module providing package example\.invalid|module lookup disabled by GOPROXY=off)"
    with pytest.raises(BuildError, match=r"building crictl v1\.37\.0 failed \(exit 1\):" + tail):
        recipe.produce(tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- catalog ---------------------------------------------------------------------------------------


def test_every_minor_pins_a_patch_release_of_its_own_minor() -> None:
    assert set(catalog.VERSIONS) >= {"1.35", "1.36", "1.37"}
    for name, pins in catalog.VERSIONS.items():
        assert pins.minor == name
        assert catalog.minor(pins.kubernetes) is pins
        assert catalog.minor(f"v{name}") is pins


def test_unknown_or_unpinned_versions_are_plan_errors() -> None:
    with pytest.raises(PlanError, match="not in the bundle's catalog"):
        catalog.minor("1.20")
    with pytest.raises(PlanError, match=r"Kubernetes 1\.36\.0 is not") as info:
        catalog.minor("1.36.0")
    assert "v1.36.3" in info.value.hint
    with pytest.raises(PlanError, match="runtime 'nope'"):
        catalog.needs("1.36", ["nope"])


def test_needs_lists_only_recipes_whose_module_is_committed() -> None:
    keys = {recipe.key.name: recipe for recipe in catalog.needs("1.36", ["gvisor"])}
    assert set(keys) == {"pause", "crictl", "etcd", *catalog.VERSIONS["1.36"].built, "cni-plugins", "coredns", "helm",
                         "containerd", "containerd-shim-runc-v2", "runc", "runsc", "containerd-shim-runsc-v1"}
    assert {"kubeadm", "kubelet", "kubectl", "kube-apiserver", "kube-proxy"} <= set(keys)
    assert keys["etcd"].key.version == "v3.6.8"
    for recipe in keys.values():
        if isinstance(recipe, GoBuild):
            assert (recipe.module_dir / "go.sum").is_file(), recipe.key
        else:
            assert isinstance(recipe, CBuild)
            assert recipe.source.is_file()
    assert {r.key.name for r in catalog.needs(None, [])} == {"pause", "crictl"}


def test_needs_lists_a_kubernetes_binary_only_once_its_build_was_checked() -> None:
    for minor_name, pins in catalog.VERSIONS.items():
        kube = {r.key.name for r in catalog.needs(minor_name, []) if r.key.version == pins.kubernetes}
        assert kube == set(pins.built)
        missing = {key.name for key in catalog.planned(minor_name, []) if key.version == pins.kubernetes}
        assert missing == {*catalog.KUBE_BINARIES, *catalog.KUBE_CONTROL_PLANE} - set(pins.built)
        if pins.built:
            assert (GO_MODULES / pins.module_dir / "go.sum").is_file()


def test_planned_names_the_rest_and_never_a_buildable_one() -> None:
    runtimes = ["gvisor", "wasmedge", "kata", "spin"]
    for minor_name in catalog.VERSIONS:
        built = {recipe.key for recipe in catalog.needs(minor_name, runtimes)}
        missing = catalog.planned(minor_name, runtimes)
        assert built.isdisjoint(missing)
        assert set(catalog.everything(minor_name, runtimes)) == built | set(missing)
        # Kata and Spin run nowhere here (no nested virtualisation, no Spin shim recipe): planned, not built
        assert {key.name for key in missing} == {"kata-runtime", "containerd-shim-kata-v2", "containerd-shim-spin-v2"}
    assert ArtifactKey("etcd", "v3.7.0") in {r.key for r in catalog.needs("1.37", [])}  # go/etcd-v3.7.0
    assert catalog.planned(None, []) == []


def test_etcd_recipe_builds_our_main_and_hashes_it() -> None:
    recipe = catalog.etcd("v3.6.8")
    assert [p.name for p in recipe.module_files()] == ["go.mod", "go.sum", "main.go"]
    assert "etcdmain.Main(os.Args)" in (recipe.module_dir / "main.go").read_text()
    assert recipe.ldflags[0].startswith("-X go.etcd.io/etcd/api/v3/version.GitSHA=")


def test_kube_recipe_stamps_both_version_packages() -> None:
    recipe = catalog.kube("kubeadm", catalog.VERSIONS["1.36"])
    stamps = " ".join(recipe.ldflags)
    commit = hashlib.sha1(b"k8s.io/kubernetes@v1.36.3").hexdigest()
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {pkg}.gitVersion=v1.36.3" in stamps
        assert f"-X {pkg}.gitMajor=1 -X {pkg}.gitMinor=36 -X {pkg}.gitCommit={commit}" in stamps
        assert f"-X {pkg}.gitTreeState=clean -X {pkg}.buildDate=1970-01-01T00:00:00Z" in stamps
    assert recipe.version_args == ("version", "-o", "short")
    assert recipe.env()["CGO_ENABLED"] == "0"


def test_kubernetes_module_replaces_every_staging_module_with_its_v0_release() -> None:
    text = (GO_MODULES / "kubernetes-1.36" / "go.mod").read_text()
    lines = [line.split() for line in text.splitlines()]
    assert ["k8s.io/kubernetes", "v1.36.3"] in [words[:2] for words in lines]  # tidy marks a tool's module indirect
    replaces = [words for words in lines if "=>" in words]
    assert len(replaces) >= 30
    for old, _, new, version in replaces:
        assert (old, version) == (new, "v0.36.3")


# --- upstream checksums ------------------------------------------------------------------------------


def _sha(name: str) -> str:
    return hashlib.sha256((FIXTURES / name).read_bytes()).hexdigest()


def test_kubeadm_release_and_its_lone_digest_file() -> None:
    rel = upstream.release(ArtifactKey("kubeadm", "v1.36.3"))
    assert rel is not None
    assert rel.url == "https://dl.k8s.io/release/v1.36.3/bin/linux/amd64/kubeadm"
    assert rel.checksum_url == rel.url + ".sha256"
    text = (FIXTURES / "kubeadm-v1.36.3.sha256").read_text()
    assert upstream.parse_checksums(text) == {None: _sha("payload-kubeadm")}
    assert upstream.expected_sha256(rel, text) == _sha("payload-kubeadm")


def test_crictl_release_and_its_named_digest_line() -> None:
    rel = upstream.release(ArtifactKey("crictl", "v1.37.0"))
    assert rel is not None
    base = "https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.37.0"
    assert rel.url == f"{base}/crictl-v1.37.0-linux-amd64.tar.gz"
    assert (rel.checksum_url, rel.member) == (rel.url + ".sha256", "crictl")
    text = (FIXTURES / "crictl-v1.37.0-linux-amd64.tar.gz.sha256").read_text()
    assert upstream.expected_sha256(rel, text) == _sha("payload-crictl.tar.gz")


def test_sha256sum_lists_pick_the_artifacts_own_line() -> None:
    text = (FIXTURES / "runc-v1.4.4.sha256sum").read_text()
    amd = upstream.release(ArtifactKey("runc", "v1.4.4"))
    arm = upstream.release(ArtifactKey("runc", "v1.4.4", "linux/arm64"))
    assert amd is not None
    assert arm is not None
    assert upstream.expected_sha256(amd, text) == _sha("payload-runc.amd64")
    assert upstream.expected_sha256(arm, text) == _sha("payload-runc.arm64")
    wrong = upstream.release(ArtifactKey("runc", "v1.4.4", "linux/s390x"))
    assert wrong is not None
    with pytest.raises(upstream.ChecksumError, match=r"no digest for runc\.s390x"):
        upstream.expected_sha256(wrong, text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("# only a comment\n", "empty"),
        ("not-a-digest  kubeadm\n", "line 1 is not a sha256 digest"),
        ("abc123\n", "line 1 is not a sha256 digest"),
        (f"{'a' * 64}  f\n{'b' * 64}  f\n", "names f twice"),
    ],
)
def test_malformed_checksum_files_are_refused(text: str, message: str) -> None:
    with pytest.raises(upstream.ChecksumError, match=message):
        upstream.parse_checksums(text)


def test_artifacts_without_a_known_upstream_say_so() -> None:
    assert upstream.release(ArtifactKey("pause", "1.0.0")) is None


# --- pause, built and run for real -----------------------------------------------------------------


@pytest.fixture(scope="module")
def pause_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    out = tmp_path_factory.mktemp("pause") / "pause"
    source = catalog.pause().produce(out)
    assert (source.kind, source.recipe_hash) == ("build", catalog.pause().recipe_hash())
    return out


def test_pause_is_static_and_prints_its_version(pause_binary: Path) -> None:
    assert catalog.pause().check(pause_binary) == f"labdeploy-pause {catalog.PAUSE_VERSION}"
    assert pause_binary.read_bytes()[:4] == b"\x7fELF"
    ldd = subprocess.run(["ldd", str(pause_binary)], capture_output=True, text=True, check=False)
    assert "not a dynamic executable" in ldd.stdout + ldd.stderr


def test_pause_goes_into_the_real_store_once(tmp_path: Path, pause_binary: Path) -> None:
    recipe = catalog.pause()
    store = BundleStore(tmp_path / "bundle")
    art, outcome = store.ensure(recipe.key, recipe.produce, recipe_hash=recipe.recipe_hash())
    assert outcome == "built"
    assert (art.source.kind, art.source.recipe_hash) == ("build", recipe.recipe_hash())
    assert art.sha256 == hashlib.sha256(art.path.read_bytes()).hexdigest()
    assert recipe.check(art.path) == recipe.check(pause_binary)
    assert store.ensure(recipe.key, recipe.produce, recipe_hash=recipe.recipe_hash())[1] == "cached"


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT])
def test_pause_exits_zero_on_a_stop_signal_within_a_second(pause_binary: Path, signo: int) -> None:
    proc = subprocess.Popen([str(pause_binary)])
    time.sleep(0.2)
    assert proc.poll() is None  # it sleeps
    proc.send_signal(signo)
    assert proc.wait(timeout=1) == 0


def test_pause_reaps_the_children_it_inherits(pause_binary: Path) -> None:
    # a shell forks a child that exits after 0.3 s, then execs pause in its own place: pause is
    # that child's parent and must reap it, or it stays a zombie
    script = f"sleep 0.3 & echo $!; exec {pause_binary}"
    proc = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        deadline = time.monotonic() + 5
        while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{child}").exists(), "the exited child was not reaped"
        assert proc.poll() is None
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=1) == 0


# --- a build interrupted mid-way leaves no process behind -------------------------------------------


class _Interrupted(Exception):
    pass


def _raise_interrupted(_signo: int, _frame: object) -> None:
    raise _Interrupted


def test_an_interrupted_compile_kills_its_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    script = f"sleep 300 & echo $! > {pidfile}; wait"
    previous = signal.signal(signal.SIGALRM, _raise_interrupted)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(_Interrupted):
            recipes._compile(["sh", "-c", script], tmp_path, dict(os.environ), "test")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild)

