"""The lab key pair: ed25519, OpenSSH format, 0600, reused on later runs."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import paramiko
import pytest

from deploy.errors import ProviderError, StateError
from deploy.ssh.keys import fingerprint, generate_keypair, load_private_key


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generate_keypair_writes_private_key_0600_and_public_line(tmp_path: Path) -> None:
    old = os.umask(0)  # even a permissive umask must not widen the key
    try:
        private, line = generate_keypair(tmp_path / "keys")
    finally:
        os.umask(old)

    assert private == tmp_path / "keys" / "id_ed25519"
    assert _mode(private) == 0o600
    assert private.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert line.startswith("ssh-ed25519 ")
    assert (tmp_path / "keys" / "id_ed25519.pub").read_text() == line + "\n"


def test_generated_key_is_readable_by_openssh(tmp_path: Path) -> None:
    private, line = generate_keypair(tmp_path)

    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(private)], check=True, capture_output=True, text=True
    ).stdout.split()
    assert derived[:2] == line.split()[:2]


def test_generate_keypair_reuses_existing_key(tmp_path: Path) -> None:
    private, line = generate_keypair(tmp_path, "lab")
    content = private.read_bytes()

    again_path, again_line = generate_keypair(tmp_path, "lab")

    assert (again_path, again_line) == (private, line)
    assert private.read_bytes() == content


def test_generate_keypair_restores_missing_or_wrong_public_file(tmp_path: Path) -> None:
    _, line = generate_keypair(tmp_path)
    public = tmp_path / "id_ed25519.pub"
    public.unlink()
    assert generate_keypair(tmp_path)[1] == line
    public.write_text("ssh-ed25519 AAAAgarbage other\n")
    assert generate_keypair(tmp_path)[1] == line
    assert public.read_text() == line + "\n"


def test_generate_keypair_refuses_a_key_others_can_read(tmp_path: Path) -> None:
    private, _ = generate_keypair(tmp_path)
    private.chmod(0o644)

    with pytest.raises(StateError) as info:
        generate_keypair(tmp_path)

    assert "0644" in info.value.message
    assert str(private) in info.value.message
    assert f"chmod 600 {private}" in info.value.hint
    assert _mode(private) == 0o644  # not silently changed


def test_load_private_key_rejects_encrypted_key(tmp_path: Path) -> None:
    key = tmp_path / "enc"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret-pass", "-f", str(key)],
        check=True,
        capture_output=True,
    )
    with pytest.raises(ProviderError, match="is encrypted"):
        load_private_key(key)


def test_load_private_key_rejects_non_key_file(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus"
    bogus.write_text("not a key\n")
    with pytest.raises(ProviderError, match="not a usable SSH private key"):
        load_private_key(bogus)
    with pytest.raises(ProviderError, match="cannot be read"):
        load_private_key(tmp_path / "missing")


def test_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    private, _ = generate_keypair(tmp_path)
    expected = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(private) + ".pub"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[1]

    assert fingerprint(paramiko.PKey.from_path(private)) == expected
