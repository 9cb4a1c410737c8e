"""The OCI layout writer (structure, digests, determinism, names) and the image recipes built on it."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from deploy.bundle import ArtifactKey, BundleStore, Source, catalog, image_inputs, images, oci
from deploy.bundle.recipes import BuildError

PAUSE = "registry.k8s.io/pause:3.10.2"


def _image(tmp_path: Path, reference: str = PAUSE, mode: int = 0o755) -> oci.Image:
    source = tmp_path / "binary"
    if not source.exists():
        source.write_bytes(b"\x7fELF pretend program\n" * 100)
    layer = (oci.File("/usr/local/bin/tool", mode, source=source), oci.File("/etc/motd", data=b"hi\n"),
             oci.File("/bin/sh", link="/usr/local/bin/tool"))
    config = oci.Config(entrypoint=("/usr/local/bin/tool",), cmd=("--help",), working_dir="/", user="0",
                        labels=((oci.VERSION_LABEL, "1.0.0"),))
    return oci.Image(reference, (layer, (oci.File("/data/x", data=b"x"),)), config, (("a.b/c", "d"),))


def _members(path: Path) -> dict[str, bytes]:
    return dict(oci.read_layout(path))


def _blob(members: dict[str, bytes], digest: str) -> bytes:
    return members[f"blobs/sha256/{digest.removeprefix('sha256:')}"]


def _layout(tmp_path: Path, *imgs: oci.Image, name: str = "out.tar") -> tuple[Path, list[oci.Written]]:
    out = tmp_path / name
    written = oci.write_layout(list(imgs) or [_image(tmp_path)], out)
    return out, written


# --- the writer --------------------------------------------------------------------------------------


def test_layout_has_the_oci_files_and_only_oci_media_types(tmp_path: Path) -> None:
    out, [done] = _layout(tmp_path)
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert names[:4] == ["oci-layout", "index.json", "blobs", "blobs/sha256"]
    assert sorted(names[4:]) == names[4:]
    assert len(names) == 4 + 4
    members = _members(out)
    assert json.loads(members["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(members["index.json"])
    assert index["mediaType"] == oci.INDEX
    assert index["schemaVersion"] == 2
    [desc] = index["manifests"]
    assert desc["mediaType"] == oci.MANIFEST
    assert desc["platform"] == {"architecture": "amd64", "os": "linux"}
    manifest = json.loads(_blob(members, desc["digest"]))
    assert manifest["mediaType"] == oci.MANIFEST
    assert manifest["config"]["mediaType"] == oci.CONFIG
    assert {layer["mediaType"] for layer in manifest["layers"]} == {oci.LAYER}
    assert manifest["annotations"] == {"a.b/c": "d"}
    assert desc["digest"] == done.manifest.digest


def test_index_names_the_image_for_containerd_and_by_tag_for_oci(tmp_path: Path) -> None:
    out, _ = _layout(tmp_path, _image(tmp_path, "registry.k8s.io/coredns/coredns:v1.14.2"))
    [desc] = json.loads(_members(out)["index.json"])["manifests"]
    assert desc["annotations"] == {
        "io.containerd.image.name": "registry.k8s.io/coredns/coredns:v1.14.2",
        "org.opencontainers.image.ref.name": "v1.14.2",
        "a.b/c": "d",
    }
    assert oci.verify_layout(out) == ["registry.k8s.io/coredns/coredns:v1.14.2"]


def test_every_digest_and_size_matches_its_blob(tmp_path: Path) -> None:
    out, [done] = _layout(tmp_path)
    members = _members(out)
    for name, data in members.items():
        if name.startswith("blobs/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    for desc in (done.manifest, done.config, *done.layers):
        assert len(_blob(members, desc.digest)) == desc.size


def test_config_diff_ids_are_the_uncompressed_layer_digests(tmp_path: Path) -> None:
    out, [done] = _layout(tmp_path)
    members = _members(out)
    config = json.loads(_blob(members, done.config.digest))
    plain = [gzip.decompress(_blob(members, layer.digest)) for layer in done.layers]
    diff_ids = [f"sha256:{hashlib.sha256(p).hexdigest()}" for p in plain]
    assert config["rootfs"] == {"type": "layers", "diff_ids": diff_ids}
    assert config["architecture"] == "amd64"
    assert config["os"] == "linux"
    assert config["config"] == {
        "Entrypoint": ["/usr/local/bin/tool"], "Cmd": ["--help"], "Env": [oci.DEFAULT_PATH],
        "WorkingDir": "/", "User": "0", "Labels": {oci.VERSION_LABEL: "1.0.0"},
    }


def test_layer_members_are_sorted_owned_by_root_at_time_zero_with_implied_folders(tmp_path: Path) -> None:
    out, [done] = _layout(tmp_path)
    blob = _blob(_members(out), done.layers[0].digest)
    assert blob[4:8] == b"\0\0\0\0"
    assert blob[3] & 0x08 == 0
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["bin", "bin/sh", "etc", "etc/motd", "usr", "usr/local",
                                             "usr/local/bin", "usr/local/bin/tool"]
        assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {(0, 0, "", "", 0)}
        by = {m.name: m for m in members}
        assert by["usr"].isdir()
        assert by["usr"].mode == 0o755
        assert by["bin/sh"].issym()
        assert by["bin/sh"].linkname == "/usr/local/bin/tool"
        assert by["usr/local/bin/tool"].mode == 0o755
        assert by["etc/motd"].mode == 0o644
        tool = tar.extractfile("usr/local/bin/tool")
        assert tool is not None
        assert tool.read() == (tmp_path / "binary").read_bytes()


def test_same_inputs_give_the_same_bytes_whatever_the_source_files_times(tmp_path: Path) -> None:
    first, _ = _layout(tmp_path, name="a.tar")
    os.utime(tmp_path / "binary", (12345, 67890))
    second, _ = _layout(tmp_path, name="b.tar")
    assert first.read_bytes() == second.read_bytes()
    third, _ = _layout(tmp_path, _image(tmp_path, mode=0o700), name="c.tar")
    assert hashlib.sha256(third.read_bytes()).digest() != hashlib.sha256(first.read_bytes()).digest()


def test_two_images_share_a_layer_blob_and_keep_their_names(tmp_path: Path) -> None:
    one = _image(tmp_path, "registry.k8s.io/a:v1")
    two = replace(_image(tmp_path, "localhost/labdeploy/b:v2"), config=oci.Config(cmd=("/bin/sh",)))
    out, written = _layout(tmp_path, one, two)
    assert written[0].layers == written[1].layers
    assert oci.verify_layout(out) == ["registry.k8s.io/a:v1", "localhost/labdeploy/b:v2"]
    assert len([n for n in _members(out) if n.startswith("blobs/")]) == 2 + 2 + 2  # shared layers, configs, manifests


@pytest.mark.parametrize("reference", ["pause", "registry.k8s.io/Pause:1", "registry.k8s.io/pause:", "a:b c"])
def test_a_reference_without_a_proper_name_and_tag_is_refused(tmp_path: Path, reference: str) -> None:
    with pytest.raises(oci.ImageError, match="image reference"):
        oci.write_layout([_image(tmp_path, reference)], tmp_path / "out.tar")


def test_bad_layers_are_refused(tmp_path: Path) -> None:
    with pytest.raises(oci.ImageError, match="given twice"):
        oci.write_layer([oci.File("/a", data=b""), oci.File("a", data=b"")], tmp_path / "l")
    with pytest.raises(oci.ImageError, match="also a folder"):
        oci.write_layer([oci.File("/a", data=b""), oci.File("/a/b", data=b"")], tmp_path / "l")
    with pytest.raises(oci.ImageError, match="exactly one"):
        oci.File("/a", data=b"", link="/b")
    with pytest.raises(oci.ImageError, match=r"without '\.\.'"):
        oci.File("/../etc/passwd", data=b"")


def test_verify_layout_finds_a_damaged_blob(tmp_path: Path) -> None:
    out, [done] = _layout(tmp_path)
    data = bytearray(out.read_bytes())
    config = _blob(_members(out), done.config.digest)
    at = data.find(config)
    data[at + 2] ^= 1
    out.write_bytes(bytes(data))
    with pytest.raises(oci.ImageError, match="does not hash to its name"):
        oci.verify_layout(out)


# --- kubeadm's names -------------------------------------------------------------------------------

KUBEADM_LISTS = {  # `kubeadm config images list --kubernetes-version <v>` of the built kubeadm of each minor
    "1.35": ["registry.k8s.io/kube-apiserver:v1.35.4", "registry.k8s.io/kube-controller-manager:v1.35.4",
             "registry.k8s.io/kube-scheduler:v1.35.4", "registry.k8s.io/kube-proxy:v1.35.4",
             "registry.k8s.io/coredns/coredns:v1.13.1", "registry.k8s.io/pause:3.10.1",
             "registry.k8s.io/etcd:3.6.6-0"],
    "1.36": ["registry.k8s.io/kube-apiserver:v1.36.3", "registry.k8s.io/kube-controller-manager:v1.36.3",
             "registry.k8s.io/kube-scheduler:v1.36.3", "registry.k8s.io/kube-proxy:v1.36.3",
             "registry.k8s.io/coredns/coredns:v1.14.2", "registry.k8s.io/pause:3.10.2",
             "registry.k8s.io/etcd:3.6.8-0"],
    "1.37": ["registry.k8s.io/kube-apiserver:v1.37.2", "registry.k8s.io/kube-controller-manager:v1.37.2",
             "registry.k8s.io/kube-scheduler:v1.37.2", "registry.k8s.io/kube-proxy:v1.37.2",
             "registry.k8s.io/coredns/coredns:v1.14.6", "registry.k8s.io/pause:3.10.2",
             "registry.k8s.io/etcd:3.7.0-0"],
}


@pytest.mark.parametrize("minor", sorted(KUBEADM_LISTS))
def test_image_names_are_what_kubeadm_lists(minor: str) -> None:
    pins = catalog.VERSIONS[minor]
    assert images.references(pins) == KUBEADM_LISTS[minor]
    recipes = images.for_minor(minor, images.from_store(BundleStore(Path("/nonexistent"))))
    assert [r.reference for r in recipes] == KUBEADM_LISTS[minor]


@pytest.mark.parametrize("minor", sorted(KUBEADM_LISTS))
def test_the_built_kubeadm_prints_the_pinned_list(minor: str) -> None:
    pins = catalog.VERSIONS[minor]
    art = BundleStore().get(catalog.kube("kubeadm", pins).key)
    if art is None:
        pytest.skip(f"kubeadm {pins.kubernetes} is not in the bundle store (deploy bundle build --kubernetes {minor})")
    assert images.kubeadm_references(art.path, pins.kubernetes) == KUBEADM_LISTS[minor]


def test_image_keys_leave_out_the_registry() -> None:
    key = images.image_key("registry.k8s.io/coredns/coredns:v1.14.2")
    assert str(key) == "image:coredns.coredns@v1.14.2/linux/amd64"
    assert images.image_key("localhost/labdeploy/busybox:1.35.0").name == "image:labdeploy.busybox"
    assert images.image_key("registry.k8s.io/etcd:3.6.6-0") == ArtifactKey("image:etcd", "3.6.6-0")


def test_nearer_content_is_tagged_for_kubeadm_and_labelled_with_what_it_is() -> None:
    fetch = images.from_store(BundleStore(Path("/nonexistent")))
    by_name = {r.reference: r for r in images.for_minor("1.35", fetch)}
    etcd = by_name["registry.k8s.io/etcd:3.6.6-0"]
    assert dict(etcd.config.labels)[oci.VERSION_LABEL] == "v3.6.8"
    assert etcd.artifacts == [ArtifactKey("etcd", "v3.6.8")]
    coredns = by_name["registry.k8s.io/coredns/coredns:v1.13.1"]
    assert dict(coredns.config.labels)[oci.VERSION_LABEL] == "v1.13.1"  # exactly kubeadm's: served now
    assert coredns.config.entrypoint == ("/coredns",)
    apiserver = by_name["registry.k8s.io/kube-apiserver:v1.35.4"]
    assert apiserver.config.entrypoint == ("/usr/local/bin/kube-apiserver",)
    assert by_name["registry.k8s.io/pause:3.10.1"].config.entrypoint == ("/pause",)


# --- image recipes against a real store ------------------------------------------------------------


def _put(store: BundleStore, key: ArtifactKey, data: bytes) -> None:
    def produce(out: Path) -> Source:
        out.write_bytes(data)
        out.chmod(0o755)
        return Source("build", "test bytes")

    store.ensure(key, produce)


def test_an_image_recipe_hashes_its_inputs_and_builds_from_the_store(tmp_path: Path) -> None:
    store = BundleStore(tmp_path / "store")
    recipe = images.for_minor("1.36", images.from_store(store))[0]  # kube-apiserver
    with pytest.raises(BuildError, match=r"kube-apiserver@v1\.36\.3/linux/amd64 is not in the bundle"):
        recipe.recipe_hash()
    _put(store, ArtifactKey("kube-apiserver", "v1.36.3"), b"apiserver one")
    first = recipe.recipe_hash()
    art, outcome = images.ensure(store, recipe)
    assert outcome == "built"
    assert art.key == ArtifactKey("image:kube-apiserver", "v1.36.3")
    assert recipe.check(art.path) == "registry.k8s.io/kube-apiserver:v1.36.3"
    members = _members(art.path)
    manifest = json.loads(_blob(members, json.loads(members["index.json"])["manifests"][0]["digest"]))
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(_blob(members, manifest["layers"][0]["digest"])))) as tar:
        tool = tar.extractfile("usr/local/bin/kube-apiserver")
        assert tool is not None
        assert tool.read() == b"apiserver one"
    store.prune(0)
    _put(store, ArtifactKey("kube-apiserver", "v1.36.3"), b"apiserver two")
    assert recipe.recipe_hash() != first


def test_needs_adds_images_whose_inputs_can_be_had_and_plans_the_rest(tmp_path: Path) -> None:
    store = BundleStore(tmp_path / "store")
    binaries = catalog.needs("1.36", [])
    keys = [str(r.key) for r in images.needs("1.36", store, binaries)]
    assert keys[:2] == ["deb:busybox-static@1:1.35.0-4+deb12u1+b1/linux/amd64", "wasm-hello@1.0.0/linux/amd64"]
    assert "image:pause@3.10.2/linux/amd64" in keys
    assert "image:etcd@3.6.8-0/linux/amd64" in keys
    assert "image:coredns.coredns@v1.14.2/linux/amd64" in keys
    assert images.planned("1.36", store, binaries) == []  # every input of every kubeadm image has a recipe
    no_coredns = [r for r in binaries if r.key.name != "coredns"]
    assert images.planned("1.36", store, no_coredns) == [ArtifactKey("image:coredns.coredns", "v1.14.2")]
    assert [r.key.name for r in images.needs(None, store, [])][2:] == ["image:labdeploy.busybox",
                                                                          "image:labdeploy.wasm-hello"]


def test_the_wasm_image_is_marked_for_crun(tmp_path: Path) -> None:
    recipe = images.wasm_image(images.from_store(BundleStore(tmp_path)))
    assert recipe.reference == "localhost/labdeploy/wasm-hello:1.0.0"
    assert recipe.config.entrypoint == ("/hello.wasm",)
    assert ("module.wasm.image/variant", "compat") in recipe.annotations
    assert dict(recipe.config.labels)["module.wasm.image/variant"] == "compat"


@pytest.mark.skipif(shutil.which("wat2wasm") is None, reason="wat2wasm is not installed (apt-get install wabt)")
def test_the_wasm_module_is_a_valid_wasi_command_that_writes_the_line(tmp_path: Path) -> None:
    recipe = images.hello_wasm()
    out = tmp_path / "hello.wasm"
    recipe.produce(out)
    module = out.read_bytes()
    assert module[:4] == b"\0asm"
    assert f"{images.WASM_LINE}\n".encode() in module  # the data segment
    assert b"wasi_snapshot_preview1" in module
    assert b"fd_write" in module
    assert b"_start" in module
    assert recipe.check(out).startswith("valid wasm")
    host = subprocess.run(["wasm-interp", "--host-print", "--run-all-exports", str(out)],
                          capture_output=True, text=True, check=False)
    # wabt's interpreter has no WASI here; it still shows the module's only import is fd_write
    assert "wasi_snapshot_preview1.fd_write" in host.stdout + host.stderr


def _deb(tmp_path: Path) -> Path:
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: labdeploy-test\nVersion: 1.0-1\nArchitecture: amd64\nMaintainer: t <t@example.org>\nDescription: t\n"
    )
    (root / "usr" / "sbin").mkdir(parents=True)
    (root / "usr" / "sbin" / "tool").write_bytes(b"#!/bin/sh\n")
    (root / "usr" / "sbin" / "tool").chmod(0o750)
    (root / "usr" / "sbin" / "alias").symlink_to("tool")
    (root / "usr" / "share" / "doc" / "labdeploy-test").mkdir(parents=True)
    (root / "usr" / "share" / "doc" / "labdeploy-test" / "copyright").write_text("c")
    out = tmp_path / "test.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(root), str(out)], check=True, capture_output=True)
    return out


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed")
def test_a_deb_tree_gives_its_files_modes_and_links_without_docs(tmp_path: Path) -> None:
    store = BundleStore(tmp_path / "store")
    key = ArtifactKey("deb:labdeploy-test", "1.0-1")
    _put(store, key, _deb(tmp_path).read_bytes())
    (tmp_path / "work").mkdir()
    files = image_inputs.DebTree(key).files(images.from_store(store), tmp_path / "work")
    got = [(f.path, f.mode, f.link) for f in files]
    assert got == [("/usr/sbin/alias", 0o644, "tool"), ("/usr/sbin/tool", 0o750, None)]


def test_kube_proxy_has_an_iptables_layer_below_its_binary() -> None:
    fetch = images.from_store(BundleStore(Path("/nonexistent")))
    proxy = next(r for r in images.for_minor("1.36", fetch) if "kube-proxy" in r.reference)
    base, binary = proxy.layers
    assert [type(i).__name__ for i in base].count("DebTree") == len(images.IPTABLES_DEBS)
    links = {i.path: i.link for i in base if isinstance(i, image_inputs.Entry)}
    assert links["/usr/sbin/iptables-restore"] == "xtables-nft-multi"
    assert set(links) == {f"/usr/sbin/{n}" for n in ("iptables", "iptables-save", "iptables-restore",
                                                     "ip6tables", "ip6tables-save", "ip6tables-restore")}
    assert [i.path for i in binary] == ["/usr/local/bin/kube-proxy"]
    assert ArtifactKey("deb:iptables", "1.8.9-2") in proxy.artifacts


def test_node_commands_import_into_the_kubelets_namespace_and_pin() -> None:
    assert images.ctr_import("/var/lib/labdeploy/pause.tar") == [
        "ctr", "-n", "k8s.io", "images", "import", "--all-platforms", "/var/lib/labdeploy/pause.tar",
    ]
    assert images.ctr_pin(PAUSE, "/run/c.sock") == [
        "ctr", "--address", "/run/c.sock", "-n", "k8s.io", "images", "label", PAUSE, "io.cri-containerd.pinned=pinned",
    ]
