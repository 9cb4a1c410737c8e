"""The NoCloud seed ISO: read back with pycdlib, deterministic, validated input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pycdlib
import pytest

from deploy.errors import ConfigError
from deploy.images import build_seed_iso

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBr2d5T9kz9v8x8Gd2m8oHk1C7S2Jbq7hE7bKZ0Q4J5K test@lab"


def read_iso(path: Path) -> tuple[str, dict[str, str]]:
    """The volume identifier and the files (by Rock Ridge name) of an ISO."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        label = iso.pvd.volume_identifier.decode().strip()
        files: dict[str, str] = {}
        for child in iso.list_children(rr_path="/"):
            if child.is_file():
                name = child.rock_ridge.name().decode()
                out = io.BytesIO()
                iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
                files[name] = out.getvalue().decode()
        joliet = sorted(
            c.file_identifier().decode("utf-16-be") for c in iso.list_children(joliet_path="/") if c.is_file()
        )
    finally:
        iso.close()
    files["__joliet__"] = ",".join(joliet)
    return label, files


def test_seed_has_cidata_label_and_nocloud_files(tmp_path: Path) -> None:
    iso = build_seed_iso(tmp_path / "seed.iso", hostname="node1.lab.test", ssh_public_key=KEY, instance_id="i-42")
    label, files = read_iso(iso)
    assert label == "cidata"
    assert files["__joliet__"] == "meta-data,user-data"
    assert json.loads(files["meta-data"]) == {"instance-id": "i-42", "local-hostname": "node1.lab.test"}
    assert files["user-data"].startswith("#cloud-config\n")
    config = json.loads(files["user-data"].removeprefix("#cloud-config\n"))
    assert config["hostname"] == "node1"
    assert config["fqdn"] == "node1.lab.test"
    assert config["ssh_authorized_keys"] == [KEY]
    assert config["disable_root"] is False
    assert config["ssh_pwauth"] is False
    assert "users" not in config  # root and the image's default user get the top-level keys


def test_seed_for_a_named_user_creates_it_with_the_key(tmp_path: Path) -> None:
    iso = build_seed_iso(tmp_path / "s.iso", hostname="w1", ssh_public_key=KEY + "\n", instance_id="i", user="lab")
    config = json.loads(read_iso(iso)[1]["user-data"].removeprefix("#cloud-config\n"))
    assert config["users"][0] == "default"
    assert config["users"][1]["name"] == "lab"
    assert config["users"][1]["ssh_authorized_keys"] == [KEY]
    assert config["users"][1]["lock_passwd"] is True


def test_seed_carries_optional_network_config(tmp_path: Path) -> None:
    network = "version: 2\nethernets:\n  ens3: {dhcp4: true}\n"
    iso = build_seed_iso(tmp_path / "s.iso", hostname="h", ssh_public_key=KEY, instance_id="i", network_config=network)
    files = read_iso(iso)[1]
    assert files["network-config"] == network
    assert files["__joliet__"] == "meta-data,network-config,user-data"


def test_seed_is_byte_identical_for_the_same_input(tmp_path: Path) -> None:
    first = build_seed_iso(tmp_path / "a.iso", hostname="h", ssh_public_key=KEY, instance_id="i").read_bytes()
    second = build_seed_iso(tmp_path / "b.iso", hostname="h", ssh_public_key=KEY, instance_id="i").read_bytes()
    other = build_seed_iso(tmp_path / "c.iso", hostname="h2", ssh_public_key=KEY, instance_id="i").read_bytes()
    assert first == second
    assert first != other


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"hostname": "bad name"}, "not a valid host name"),
        ({"instance_id": ""}, "instance_id is empty"),
        ({"ssh_public_key": "-----BEGIN OPENSSH PRIVATE KEY-----"}, "not an OpenSSH public key"),
    ],
)
def test_seed_rejects_bad_input(tmp_path: Path, kwargs: dict[str, str], needle: str) -> None:
    args = {"hostname": "h", "ssh_public_key": KEY, "instance_id": "i", **kwargs}
    with pytest.raises(ConfigError, match=needle):
        build_seed_iso(tmp_path / "s.iso", **args)
    assert not (tmp_path / "s.iso").exists()
