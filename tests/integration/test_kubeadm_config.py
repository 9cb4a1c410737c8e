"""kubeadm's configuration as the cluster stage renders it, validated by the bundle's own kubeadm of each minor.

``kubeadm config validate`` unmarshals strictly (an unknown field or API version is an error) and
runs kubeadm's own validation, so a document it accepts is one ``kubeadm init``/``join`` accepts.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from deploy.bundle import BundleStore, catalog
from deploy.cluster import ha
from deploy.cluster import kubeadm as k
from deploy.secrets import redact_text

pytestmark = pytest.mark.integration
CA_HASH = "sha256:" + "ab" * 32


@pytest.fixture(scope="module", params=sorted(catalog.VERSIONS))
def kubeadm(request: pytest.FixtureRequest) -> tuple[str, Path]:
    """(version, path) of the bundle's kubeadm for a minor (built once per machine, then cached)."""
    recipe = catalog.kube("kubeadm", catalog.VERSIONS[request.param])
    artifact, _ = BundleStore().ensure(recipe.key, recipe.produce, recipe_hash=recipe.recipe_hash())
    return recipe.key.version, artifact.path


def _validate(kubeadm: Path, text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "kubeadm.yaml"
    config.write_text(text)
    return subprocess.run([str(kubeadm), "config", "validate", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, check=False)


def _cluster(version: str, **changes: object) -> k.Cluster:
    base = k.Cluster("lab", version, "10.20.0.10:6443", cert_sans=("127.0.0.1", "localhost", "10.20.0.10"))
    return k.Cluster(**{**base.__dict__, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize("tcg", [False, True], ids=["kvm", "tcg"])
def test_init_validates_with_the_minors_kubeadm(kubeadm: tuple[str, Path], tcg: bool, tmp_path: Path) -> None:
    version, binary = kubeadm
    node = k.Node("control-1", "10.20.0.10", labels={"labdeploy.dev/group": "control"})
    text = k.render_init(_cluster(version, tcg=tcg), node, k.new_token())
    done = _validate(binary, text, tmp_path)
    assert done.returncode == 0, done.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(text)]
    assert kinds == ["InitConfiguration", "ClusterConfiguration", "KubeletConfiguration", "KubeProxyConfiguration"]


def test_without_kube_proxy_the_phase_is_skipped(kubeadm: tuple[str, Path], tmp_path: Path) -> None:
    version, binary = kubeadm
    text = k.render_init(_cluster(version, kube_proxy=False), k.Node("cp", "10.20.0.10"), k.new_token())
    assert _validate(binary, text, tmp_path).returncode == 0
    init, *rest = yaml.safe_load_all(text)
    assert init["skipPhases"] == ["addon/kube-proxy"]
    assert "KubeProxyConfiguration" not in [doc["kind"] for doc in rest]


@pytest.mark.parametrize("control_plane", [False, True], ids=["worker", "control-plane"])
def test_join_validates_for_workers_and_further_control_planes(
        kubeadm: tuple[str, Path], control_plane: bool, tmp_path: Path) -> None:
    version, binary = kubeadm
    secrets = k.JoinSecrets(k.new_token(), (CA_HASH,), "cd" * 32 if control_plane else None)
    node = k.Node("workers-1", "10.20.0.21", taints=(k.Taint("labdeploy.dev/gpu", "NoSchedule", "true"),))
    done = _validate(binary, k.render_join(_cluster(version, tcg=True), node, secrets), tmp_path)
    assert done.returncode == 0, done.stderr


def test_kubeadm_refuses_what_it_does_not_know(kubeadm: tuple[str, Path], tmp_path: Path) -> None:
    """The check above can fail: a misspelt field is an error, not ignored."""
    version, binary = kubeadm
    text = k.render_init(_cluster(version), k.Node("cp", "10.20.0.10"), k.new_token())
    done = _validate(binary, text.replace("podSubnet", "podSubnets"), tmp_path)
    assert done.returncode != 0
    assert "podSubnets" in done.stderr


def test_the_token_and_ca_hash_are_masked_wherever_a_document_is_quoted() -> None:
    token = k.new_token()
    secrets = k.JoinSecrets(token, (CA_HASH,), "ef" * 32)
    text = k.render_join(_cluster("v1.36.3"), k.Node("c-2", "10.20.0.11"), secrets)
    assert token.value in text  # the document itself carries them (it only travels over SSH)
    masked = redact_text(text)
    assert token.value not in masked
    assert CA_HASH not in masked
    assert "ef" * 32 not in masked
    assert token.value not in repr(secrets)
    assert token.value[7:] not in repr(token)


def test_tcg_patches_reach_the_static_pod_manifests(kubeadm: tuple[str, Path], tmp_path: Path) -> None:
    """kubeadm itself applies the patches (a dry run of the control-plane phase, all in tmp_path)."""
    version, binary = kubeadm
    patches = tmp_path / "patches"
    patches.mkdir()
    for name, text in k.tcg_patches().items():
        (patches / name).write_text(text)
    text = k.render_init(_cluster(version, tcg=True), k.Node("cp", "10.20.0.10"), k.new_token())
    config = tmp_path / "kubeadm.yaml"
    config.write_text(text.replace(k.PATCHES_DIR, str(patches)))
    env = {"PATH": "/usr/bin:/bin", "KUBEADM_INIT_DRYRUN_DIR": str(tmp_path / "dry")}
    for component in ("apiserver", "etcd"):
        phase = ["init", "phase", "etcd", "local"] if component == "etcd" else ["init", "phase", "control-plane",
                                                                                 component]
        done = subprocess.run([str(binary), *phase, "--config", str(config), "--dry-run"], capture_output=True,
                              text=True, timeout=60, env=env, check=False)
        assert done.returncode == 0, done.stderr
        assert "Applied patch of type" in done.stdout + done.stderr
    for manifest, container in (("kube-apiserver.yaml", "kube-apiserver"), ("etcd.yaml", "etcd")):
        pod = yaml.safe_load((tmp_path / "dry" / manifest).read_text())
        spec = next(c for c in pod["spec"]["containers"] if c["name"] == container)
        assert (spec["livenessProbe"]["initialDelaySeconds"], spec["startupProbe"]["failureThreshold"]) == (120, 60)
    assert not Path("/etc/kubernetes/tmp").exists() or not list(Path("/etc/kubernetes/tmp").glob("kubeadm-init-*"))


def test_ha_init_and_control_plane_join_validate(kubeadm: tuple[str, Path], tmp_path: Path) -> None:
    version, binary = kubeadm
    cluster = k.with_vip(_cluster(version), "10.20.0.5")
    init = k.render_init(cluster, k.Node("control-1", "10.20.0.10"), k.new_token(), k.new_certificate_key())
    done = _validate(binary, init, tmp_path)
    assert done.returncode == 0, done.stderr
    secrets = k.JoinSecrets(k.new_token(), (CA_HASH,), k.new_certificate_key().value)
    done = _validate(binary, k.render_join(cluster, k.Node("control-2", "10.20.0.11"), secrets), tmp_path)
    assert done.returncode == 0, done.stderr
    upload = k.render_upload_certs(cluster, k.Node("control-1", "10.20.0.10"), k.new_certificate_key())
    done = _validate(binary, upload, tmp_path)
    assert done.returncode == 0, done.stderr


def _dry_run(binary: Path, command: str, config: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``command`` as the stage runs it (config on stdin), with kubeadm's dry run: nothing leaves tmp_path."""
    argv = [str(binary), *shlex.split(command)[1:], "--dry-run", *(["--ignore-preflight-errors=all"]
                                                                    if " phase " not in command else [])]
    env = {"PATH": "/usr/bin:/bin", "KUBEADM_INIT_DRYRUN_DIR": str(tmp_path / "dry")}
    return subprocess.run(argv, input=config, capture_output=True, text=True, timeout=120, env=env, check=False)


def test_init_uploads_the_certificates_under_the_key_without_printing_it(
        kubeadm: tuple[str, Path], tmp_path: Path) -> None:
    version, binary = kubeadm
    key, token = k.new_certificate_key(), k.new_token()
    config = k.render_init(k.with_vip(_cluster(version), "10.20.0.5"), k.Node("cp", "10.20.0.10"), token, key)
    done = _dry_run(binary, ha.INIT_COMMAND, config, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    assert 'Storing the certificates in Secret "kubeadm-certs"' in output
    assert "--certificate-key <value withheld>" in output
    assert key.value not in output
    assert token.value not in output
    assert not Path("/etc/kubernetes/admin.conf").exists()


def test_a_later_upload_stores_the_certificates_under_a_fresh_key(kubeadm: tuple[str, Path], tmp_path: Path) -> None:
    """``kubeadm init phase upload-certs`` as upload_certs runs it, against certificates made in tmp_path."""
    version, binary = kubeadm
    key = k.new_certificate_key()
    docs = list(yaml.safe_load_all(k.render_upload_certs(k.with_vip(_cluster(version), "10.20.0.5"),
                                                         k.Node("cp", "10.20.0.10"), key)))
    docs[1]["certificatesDir"] = str(tmp_path / "pki")
    config = yaml.safe_dump_all(docs)
    (tmp_path / "kubeadm.yaml").write_text(config)
    env = {"PATH": "/usr/bin:/bin"}
    for phase in (["certs", "all"], ["kubeconfig", "admin", "--kubeconfig-dir", str(tmp_path / "dry")]):
        made = subprocess.run([str(binary), "init", "phase", *phase, "--config", str(tmp_path / "kubeadm.yaml")],
                              capture_output=True, text=True, timeout=60, env=env, check=False)
        assert made.returncode == 0, made.stderr
    done = _dry_run(binary, ha.UPLOAD_COMMAND, config, tmp_path)
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert 'Storing the certificates in Secret "kubeadm-certs"' in output
    assert "name: kubeadm-certs" in output
    assert key.value not in output
