"""The lab's admin kubeconfig: localized from a real kubeadm-style admin.conf, written 0600, merged, and the CLI.

The fixture is what kubeadm writes: a CA and a client certificate (O=system:masters) made with
``cryptography``, PEM then base64 in ``*-data`` fields.
"""

from __future__ import annotations

import base64
import datetime
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from deploy import atomic
from deploy.cli import main
from deploy.cluster import kubeconfig
from deploy.cluster.kubeconfig import KubeconfigFileError, NoKubeconfig
from deploy.errors import StageError
from deploy.secrets import Redactor, redact_text

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "labs" / "quickstart" / "lab.yaml"
SERVER = "https://127.0.0.1:40123"


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _cert(subject: x509.Name, issuer: x509.Name, key: Any, signer: Any, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    return builder.sign(signer, hashes.SHA256())


def _b64(pem: bytes) -> str:
    return base64.b64encode(pem).decode("ascii")


@pytest.fixture(scope="module")
def pki() -> dict[str, str]:
    """A kubeadm-like CA and admin client certificate and key, base64'd PEM as admin.conf holds them."""
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = _cert(_name("kubernetes"), _name("kubernetes"), ca_key, ca_key, ca=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    client = _cert(_name("kubernetes-admin", "system:masters"), ca.subject, key, ca_key, ca=False)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    return {"ca": _b64(ca.public_bytes(serialization.Encoding.PEM)),
            "cert": _b64(client.public_bytes(serialization.Encoding.PEM)), "key": _b64(key_pem),
            "key_pem": key_pem.decode("ascii")}


@pytest.fixture(scope="module")
def admin_conf(pki: dict[str, str]) -> str:
    """/etc/kubernetes/admin.conf as kubeadm writes it (keys sorted, the node's own address)."""
    return f"""apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: {pki['ca']}
    server: https://10.20.0.10:6443
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: kubernetes-admin
  name: kubernetes-admin@kubernetes
current-context: kubernetes-admin@kubernetes
kind: Config
preferences: {{}}
users:
- name: kubernetes-admin
  user:
    client-certificate-data: {pki['cert']}
    client-key-data: {pki['key']}
"""


def _other_config() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Config", "preferences": {"colors": True},
            "clusters": [{"name": "prod", "cluster": {"server": "https://prod.example:6443",
                                                      "certificate-authority-data": "UFJPRA=="}},
                         {"name": "lab1", "cluster": {"server": "https://127.0.0.1:1",
                                                      "insecure-skip-tls-verify": True}}],
            "users": [{"name": "prod-admin", "user": {"token": "prod-token-value"}},
                      {"name": "lab1-admin", "user": {"token": "stale-token"}}],
            "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "prod-admin", "namespace": "ops"}},
                         {"name": "lab1", "context": {"cluster": "lab1", "user": "lab1-admin"}}],
            "current-context": "prod", "extensions": [{"name": "x", "extension": {"a": 1}}]}


# --- localize ------------------------------------------------------------------------------


def test_localize_renames_after_the_lab_and_rewrites_only_the_server(admin_conf: str, pki: dict[str, str]) -> None:
    doc = yaml.safe_load(kubeconfig.localize(admin_conf, "lab1", SERVER))
    assert doc["clusters"] == [{"name": "lab1", "cluster": {"certificate-authority-data": pki["ca"], "server": SERVER}}]
    assert doc["users"] == [{"name": "lab1-admin", "user": {"client-certificate-data": pki["cert"],
                                                            "client-key-data": pki["key"]}}]
    assert doc["contexts"] == [{"name": "lab1", "context": {"cluster": "lab1", "user": "lab1-admin"}}]
    assert doc["current-context"] == "lab1"
    assert "tls-server-name" not in doc["clusters"][0]["cluster"]


def test_localized_config_loads_in_the_kubernetes_client_with_tls_on(admin_conf: str, tmp_path: Path,
                                                                     pki: dict[str, str]) -> None:
    path = kubeconfig.write(tmp_path, kubeconfig.localize(admin_conf, "lab1", SERVER))
    client = kubernetes.config.new_client_from_config(config_file=str(path))
    conf = client.configuration
    assert conf.host == SERVER
    assert conf.verify_ssl is True
    assert Path(conf.ssl_ca_cert).read_bytes() == base64.b64decode(pki["ca"])
    assert Path(conf.key_file).read_bytes() == base64.b64decode(pki["key"])


def test_localize_masks_the_client_key_in_later_log_lines(admin_conf: str, pki: dict[str, str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = Redactor()  # not the process-wide one, which other tests have already taught this key
    monkeypatch.setattr(kubeconfig, "REDACTOR", fresh)
    kubeconfig.localize(admin_conf, "lab1", SERVER)
    assert fresh.redact_text(f"client-key-data: {pki['key']}") == "client-key-data: ***"
    one_line = pki["key_pem"].splitlines()[3]
    assert fresh.redact_text(f"oops {one_line}") == "oops ***"
    assert fresh.redact_text(pki["cert"]) == pki["cert"]  # the certificate is public: left alone
    assert pki["key"] not in redact_text(pki["key"])  # and the process-wide one masks it too


def test_merge_registers_the_key_it_copies(source: Path, tmp_path: Path, pki: dict[str, str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = Redactor()  # a new process running `deploy kubeconfig --merge` knows no secret yet
    monkeypatch.setattr(kubeconfig, "REDACTOR", fresh)
    kubeconfig.merge(source, tmp_path / "config", "lab1")
    assert fresh.redact_text(pki["key"]) == "***"


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda d: d["clusters"].append({"name": "b", "cluster": {"server": "x"}}), "it has 2 clusters"),
    (lambda d: d.update(users=[]), "it has 0 users"),
    (lambda d: d.update(kind="Pod"), "kind is 'Pod'"),
    (lambda d: d["clusters"][0]["cluster"].pop("server"), "no server"),
])
def test_localize_refuses_what_is_not_a_one_cluster_kubeconfig(admin_conf: str, edit: Any, expected: str) -> None:
    doc = yaml.safe_load(admin_conf)
    edit(doc)
    with pytest.raises(StageError) as info:
        kubeconfig.localize(yaml.safe_dump(doc), "lab1", SERVER)
    assert info.value.stage == "cluster"
    assert expected in info.value.message


def test_localize_yaml_error_names_the_position_never_the_text(admin_conf: str, pki: dict[str, str]) -> None:
    broken = admin_conf.replace(f"client-key-data: {pki['key']}", f"client-key-data: {pki['key']}\n  : [: -")
    with pytest.raises(StageError) as info:
        kubeconfig.localize(broken, "lab1", SERVER)
    assert "is not valid YAML at line" in info.value.message
    assert pki["key"][:20] not in info.value.message


def test_localize_refuses_a_server_that_is_not_https(admin_conf: str) -> None:
    with pytest.raises(StageError, match="https://HOST:PORT"):
        kubeconfig.localize(admin_conf, "lab1", "127.0.0.1:40123")


# --- write ---------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_is_0600_at_every_moment_whatever_the_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        seen.append(_mode(Path(src)))  # the temporary file, just before it takes the final name
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    old = os.umask(0)
    try:
        (tmp_path / "kubeconfig").write_text("old")
        (tmp_path / "kubeconfig").chmod(0o644)
        path = kubeconfig.write(tmp_path, "apiVersion: v1\n")
    finally:
        os.umask(old)
    assert path == kubeconfig.kubeconfig_path(tmp_path) == tmp_path / "kubeconfig"
    assert path.read_text() == "apiVersion: v1\n"
    assert seen == [0o600]
    assert _mode(path) == 0o600


# --- merge ---------------------------------------------------------------------------------


@pytest.fixture
def source(admin_conf: str, tmp_path: Path) -> Path:
    return kubeconfig.write(tmp_path / "state", kubeconfig.localize(admin_conf, "lab1", SERVER))


def test_merge_keeps_other_entries_and_replaces_the_stale_lab_entry(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "home" / "config"
    target.parent.mkdir()
    target.write_text(yaml.safe_dump(_other_config()))
    target.chmod(0o644)
    kubeconfig.merge(source, target, "lab1")
    doc, before, lab = yaml.safe_load(target.read_text()), _other_config(), yaml.safe_load(source.read_text())
    for key in ("clusters", "users", "contexts"):
        assert doc[key][0] == before[key][0]  # prod, untouched
        assert [e["name"] for e in doc[key]] == [e["name"] for e in before[key]]  # replaced in place, not added
        assert doc[key][1] == lab[key][0]
    assert doc["clusters"][1]["cluster"]["server"] == SERVER
    assert doc["current-context"] == "prod"  # the target had one: kept
    assert doc["preferences"] == {"colors": True}
    assert doc["extensions"] == before["extensions"]
    assert _mode(target) == 0o600


def test_a_second_merge_gives_identical_bytes(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "config"
    target.write_text(yaml.safe_dump(_other_config()))
    kubeconfig.merge(source, target, "lab1")
    first = target.read_bytes()
    kubeconfig.merge(source, target, "lab1")
    assert target.read_bytes() == first


def test_merge_creates_a_missing_target_private_and_makes_the_lab_current(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "home" / ".kube" / "config"
    kubeconfig.merge(source, target, "lab1")
    assert _mode(target.parent) == 0o700
    assert _mode(target) == 0o600
    doc = yaml.safe_load(target.read_text())
    assert doc["current-context"] == "lab1"
    client = kubernetes.config.new_client_from_config(config_file=str(target), context="lab1")
    assert client.configuration.host == SERVER


def test_merge_into_an_empty_file_treats_it_as_an_empty_config(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "config"
    target.write_text("")
    kubeconfig.merge(source, target, "lab1")
    assert yaml.safe_load(target.read_text())["current-context"] == "lab1"


@pytest.mark.parametrize(("text", "expected"), [
    ("clusters: [unclosed\n", "is not valid YAML at line"),
    ("- just\n- a list\n", "not a mapping"),
    ("kind: Config\nclusters: nope\n", "clusters is not a list"),
])
def test_merge_refuses_an_invalid_target_naming_it_and_leaves_it_alone(source: Path, tmp_path: Path,
                                                                       text: str, expected: str) -> None:
    target = tmp_path / "config"
    target.write_text(text)
    with pytest.raises(KubeconfigFileError) as info:
        kubeconfig.merge(source, target, "lab1")
    assert str(target) in info.value.message
    assert expected in info.value.message
    assert "--into" in info.value.hint
    assert target.read_text() == text


def test_merge_refuses_an_unreadable_target(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "config"
    target.mkdir()  # reading it fails even for root
    with pytest.raises(KubeconfigFileError, match=f"cannot read kubeconfig {target}"):
        kubeconfig.merge(source, target, "lab1")


# --- the CLI -------------------------------------------------------------------------------


def test_cli_without_a_kubeconfig_says_to_bootstrap_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kubeconfig", str(QUICKSTART), "--state-dir", str(tmp_path)]) == NoKubeconfig.exit_code == 7
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "has no kubeconfig yet" in captured.err
    assert f"`deploy up {QUICKSTART}` bootstraps the cluster first" in captured.err


def test_cli_prints_the_path_as_the_only_stdout_line(admin_conf: str, tmp_path: Path) -> None:
    path = kubeconfig.write(tmp_path, kubeconfig.localize(admin_conf, "quickstart", SERVER))
    done = subprocess.run([sys.executable, "-m", "deploy.cli", "kubeconfig", str(QUICKSTART), "--state-dir",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{path}\n"  # export KUBECONFIG=$(deploy kubeconfig lab.yaml)


def test_cli_merge_into_a_file(admin_conf: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = kubeconfig.write(tmp_path, kubeconfig.localize(admin_conf, "quickstart", SERVER))
    target = tmp_path / "merged"
    target.write_text(yaml.safe_dump(_other_config()))
    assert main(["kubeconfig", str(QUICKSTART), "--state-dir", str(tmp_path), "--merge", "--into", str(target)]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{path}\n"
    assert f"merged lab quickstart into {target} as context quickstart" in captured.err
    assert "current context stays prod" in captured.err
    doc = yaml.safe_load(target.read_text())
    assert [c["name"] for c in doc["contexts"]] == ["prod", "lab1", "quickstart"]
    assert _mode(target) == 0o600


def test_cli_merge_defaults_to_the_home_kube_config(admin_conf: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    kubeconfig.write(tmp_path / "state", kubeconfig.localize(admin_conf, "quickstart", SERVER))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert main(["kubeconfig", str(QUICKSTART), "--state-dir", str(tmp_path / "state"), "--merge"]) == 0
    target = tmp_path / "home" / ".kube" / "config"
    assert yaml.safe_load(target.read_text())["current-context"] == "quickstart"
    assert "it is the current context" in capsys.readouterr().err
