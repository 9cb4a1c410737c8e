"""Kata's install, handler and RuntimeClass, as fixtures: Kata needs nested KVM and a guest kernel,
which cannot run here (its verify checks fail with "this host cannot run VM sandboxes: ...").

The install is the list of pyinfra operations the runtimes and containerd deploys add for a node
(recorded with their arguments, not executed): kata-static.tar.xz from ``mirrors.files`` with the
lab's sha256, or from the bundle, unpacked to / (into /opt/kata) and the shim linked into
containerd's PATH; the rendered config.toml is covered by tests/operations/containerd.config/kata_*.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from typing import Any

import kubernetes_validate
from pyinfra.operations import apt, files, server

from deploy.cluster import runtimeclasses
from deploy.configure.deploys import containerd, runtimes
from deploy.configure.operations.containerd import render_config
from deploy.configure.settings import ConfigureSettings, validate_settings

SHA = "ab" * 32
TARBALL = "/var/cache/labdeploy/kata-static.tar.xz"
SHIM = "/opt/kata/bin/containerd-shim-kata-v2"
CONFIG = "/opt/kata/share/defaults/kata-containers/configuration.toml"


@dataclass(frozen=True)
class Planned:
    name: str
    op: Any
    kwargs: dict[str, Any]
    did_change: object = field(default_factory=object)  # what a later op's _if refers to


@dataclass
class Recorder:
    """Collects what a deploy adds, in order, as ``deploy.configure.deploys.OpSink`` would hand it to pyinfra."""

    ops: list[Planned] = field(default_factory=list)

    def add(self, name: str, op: Any, **kwargs: Any) -> Planned:
        planned = Planned(name, op, kwargs)
        self.ops.append(planned)
        return planned

    def apt_lists(self) -> Planned:
        return self.add("apt package lists", apt.update)

    def named(self, name: str) -> Planned:
        return next(p for p in self.ops if p.name == name)


def install(settings: ConfigureSettings) -> Recorder:
    recorder = Recorder()
    runtimes.deploy(recorder, settings)  # type: ignore[arg-type]  # duck-typed OpSink
    return recorder


def test_kata_from_the_files_mirror_is_checked_unpacked_and_its_shim_linked() -> None:
    plan = install(ConfigureSettings(runtimes=("kata",), mirrors_files="http://files.internal/",
                                     file_checksums={"kata-static.tar.xz": SHA}))
    download = plan.named("kata: kata-static.tar.xz from the files mirror")
    assert download.op is files.download
    assert download.kwargs == {"src": "http://files.internal/kata-static.tar.xz", "dest": TARBALL,
                               "sha256sum": SHA, "mode": "644"}
    unpack = plan.named("kata: unpack kata-static.tar.xz")
    assert unpack.op is server.shell
    assert unpack.kwargs == {"commands": [f"tar -xf {TARBALL} -C /"], "_if": download.did_change}
    link = plan.named("kata: link /usr/local/bin/containerd-shim-kata-v2")
    assert (link.op, link.kwargs) == (files.link, {"path": "/usr/local/bin/containerd-shim-kata-v2", "target": SHIM})
    names = [p.name for p in plan.ops]
    assert names.index(download.name) < names.index(unpack.name) < names.index(link.name)
    assert plan.named("packages").kwargs["packages"] == ["runc"]  # Kata has no Debian package


def test_kata_from_the_bundle_is_uploaded_instead_of_downloaded() -> None:
    plan = install(ConfigureSettings(runtimes=("kata",), bundle_files={"kata-static.tar.xz": ("/b/kata.txz", SHA)}))
    put = plan.named("kata: kata-static.tar.xz from the bundle")
    assert (put.op, put.kwargs) == (files.put, {"src": "/b/kata.txz", "dest": TARBALL, "mode": "644"})
    assert plan.named("kata: unpack kata-static.tar.xz").kwargs["_if"] is put.did_change
    assert not [p for p in plan.ops if p.op is files.download]


def test_the_mirror_download_has_its_directory() -> None:
    plan = install(ConfigureSettings(runtimes=("kata",), mirrors_files="http://m/",
                                     file_checksums={"kata-static.tar.xz": SHA}))
    names = [p.name for p in plan.ops]
    made = [i for i, p in enumerate(plan.ops)
            if p.op is files.directory and p.kwargs.get("path") == "/var/cache/labdeploy"]
    assert made
    assert made[0] < names.index("kata: kata-static.tar.xz from the files mirror")


def test_kata_without_mirror_or_bundle_is_refused_before_any_side_effect() -> None:
    problems = validate_settings(ConfigureSettings(runtimes=("kata",)), {"n1": ("containerd",)})
    assert any("kata-static.tar.xz" in problem for problem in problems), problems


def test_containerd_gets_the_kata_handler_with_its_config_path() -> None:
    settings = ConfigureSettings(runtimes=("kata",), file_checksums={"kata-static.tar.xz": SHA},
                                 mirrors_files="http://m/")
    handlers = containerd.handler_dicts(settings)
    assert [h["name"] for h in handlers] == ["runc", "kata"]
    kata = handlers[1]
    assert (kata["runtime_type"], kata["binary"], kata["config_path"]) == ("io.containerd.kata.v2", SHIM, CONFIG)
    for version, plugin in ((2, "io.containerd.grpc.v1.cri"), (3, "io.containerd.cri.v1.runtime")):
        doc = tomllib.loads(render_config(handlers, version=version))
        assert doc["plugins"][plugin]["containerd"]["runtimes"]["kata"] == {
            "runtime_type": "io.containerd.kata.v2", "options": {"ConfigPath": CONFIG}}


def test_kata_runtimeclass_has_its_handler_overhead_and_node_selector() -> None:
    manifest = runtimeclasses.manifest("kata")
    assert manifest == {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": "kata", "labels": {"app.kubernetes.io/managed-by": "labdeploy"}},
        "handler": "kata",
        "scheduling": {"nodeSelector": {"runtime.labdeploy.io/kata": "true"}},
        "overhead": {"podFixed": {"memory": "160Mi", "cpu": "250m"}},
    }
    kubernetes_validate.validate(manifest, "1.36.0", strict=True)
    assert runtimeclasses.node_labels(["kata"]) == manifest["scheduling"]["nodeSelector"]
