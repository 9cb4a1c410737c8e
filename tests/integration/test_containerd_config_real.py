"""The containerd config labdeploy renders, read back by real containerd (``containerd config dump``, no daemon).

containerd 2.4.2 is the bundle's (built from the Go module proxy, cached in the machine's store);
1.6 is Debian's package on the host. Each must see every handler where its CRI plugins look.
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from deploy.bundle import BundleStore, catalog
from deploy.bundle.recipes_runtimes import containerd as containerd_recipes
from deploy.configure.operations.containerd import CRI, CRI_IMAGES, CRI_RUNTIME, config_version, render_config

pytestmark = pytest.mark.integration
PAUSE = "registry.k8s.io/pause:3.10.2"
HANDLERS: list[dict[str, Any]] = [
    {"name": "runc", "runtime_type": "io.containerd.runc.v2"},
    {"name": "crun-wasm", "runtime_type": "io.containerd.runc.v2", "binary_name": "/usr/local/bin/crun-wasmedge",
     "pod_annotations": ["module.wasm.image/variant"]},
    {"name": "runsc", "runtime_type": "io.containerd.runsc.v1"},
]


def _dump(binary: str, text: str, tmp_path: Path) -> tuple[dict[str, Any], str]:
    config = tmp_path / "config.toml"
    config.write_text(text)
    done = subprocess.run([binary, "--config", str(config), "config", "dump"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return tomllib.loads(done.stdout), done.stderr


def test_containerd_2_reads_its_native_version_with_every_handler(tmp_path: Path) -> None:
    recipe = containerd_recipes(catalog.VERSIONS["1.36"].containerd)[0]
    artifact, _ = BundleStore().ensure(recipe.key, recipe.produce, recipe_hash=recipe.recipe_hash())
    version = config_version(recipe.key.version)
    assert version == 4
    dumped, stderr = _dump(str(artifact.path), render_config(HANDLERS, version=version, sandbox_image=PAUSE),
                           tmp_path)
    assert "migrated" not in stderr  # written in the version it reads natively
    runtimes = dumped["plugins"][CRI_RUNTIME]["containerd"]["runtimes"]
    assert set(runtimes) >= {"runc", "crun-wasm", "runsc"}
    assert runtimes["crun-wasm"]["pod_annotations"] == ["module.wasm.image/variant"]
    assert runtimes["crun-wasm"]["options"]["BinaryName"] == "/usr/local/bin/crun-wasmedge"
    assert runtimes["runsc"]["runtime_type"] == "io.containerd.runsc.v1"
    assert dumped["plugins"][CRI_IMAGES]["pinned_images"]["sandbox"] == PAUSE
    assert dumped["plugins"][CRI_IMAGES]["registry"]["config_path"] == "/etc/containerd/certs.d"


@pytest.mark.skipif(shutil.which("containerd") is None, reason="Debian's containerd is not installed (make test does)")
def test_debians_containerd_1_reads_version_2_with_every_handler(tmp_path: Path) -> None:
    done = subprocess.run(["containerd", "--version"], capture_output=True, text=True, check=True)
    release = done.stdout.split()[2]  # "containerd github.com/containerd/containerd 1.6.20~ds1 ..."
    version = config_version(release)
    assert version == 2
    dumped, _ = _dump("containerd", render_config(HANDLERS, version=version, sandbox_image=PAUSE), tmp_path)
    cri = dumped["plugins"][CRI]
    assert set(cri["containerd"]["runtimes"]) >= {"runc", "crun-wasm", "runsc"}
    assert cri["containerd"]["runtimes"]["crun-wasm"]["pod_annotations"] == ["module.wasm.image/variant"]
    assert cri["sandbox_image"] == PAUSE
