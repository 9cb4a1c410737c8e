"""SSH key material: the lab's client key pair, loading private keys, fingerprints.

Private keys are written 0600 and must stay that way: a private key that other users can
read is refused (like OpenSSH does) rather than silently fixed, because the key may
already have leaked; the error says which ``chmod`` restores it.

Files written (in the lab's state folder): ``id_ed25519`` (0600) and ``id_ed25519.pub`` (0644),
both through :func:`deploy.state.atomic_write`.
"""

from __future__ import annotations

import stat
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deploy.errors import LabError, ProviderError, StateError
from deploy.state import atomic_write


def fingerprint(key: paramiko.PKey) -> str:
    """The OpenSSH SHA256 fingerprint of a public key, e.g. ``SHA256:abc...``."""
    return str(key.fingerprint)


def generate_keypair(directory: Path, name: str = "id_ed25519") -> tuple[Path, str]:
    """Create (or reuse) an ed25519 key pair in ``directory``.

    Returns the private key path and the public key line (``ssh-ed25519 AAAA... name``).
    An existing private key is reused; its ``.pub`` file is rewritten from it when missing
    or different. Raises :class:`StateError` when the existing key is group/world readable
    or cannot be read.
    """
    directory.mkdir(parents=True, exist_ok=True)
    private = directory / name
    if private.exists():
        check_private_key_mode(private, error=StateError)
        public_line = _public_line(load_private_key(private, error=StateError), name)
    else:
        public_line = _write_new_key(private, name)
    public = private.with_name(private.name + ".pub")
    if not public.exists() or public.read_text().strip() != public_line:
        atomic_write(public, (public_line + "\n").encode(), mode=0o644)
    return private, public_line


def _write_new_key(private: Path, comment: str) -> str:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    atomic_write(private, pem, mode=0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{public.decode()} {comment}"


def _public_line(key: paramiko.PKey, comment: str) -> str:
    return f"{key.get_name()} {key.get_base64()} {comment}"


def check_private_key_mode(path: Path, *, error: type[LabError] = ProviderError) -> None:
    """Raise ``error`` when ``path`` is missing or readable/writable by group or others."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise error(
            f"SSH private key {path} cannot be read: {exc.strerror}",
            hint="give an existing key file (ssh_key) or let labdeploy create the lab key",
        ) from exc
    if mode & 0o077:
        raise error(
            f"SSH private key {path} has mode {mode:04o}; expected it readable by its owner only (0600)",
            hint=f"run `chmod 600 {path}` (and replace the key if others may have copied it)",
        )


def load_private_key(path: Path, *, error: type[LabError] = ProviderError) -> paramiko.PKey:
    """Load an unencrypted OpenSSH/PEM private key (ed25519, ECDSA or RSA)."""
    try:
        return paramiko.PKey.from_path(path)
    except OSError as exc:
        raise error(f"SSH private key {path} cannot be read: {exc.strerror}") from exc
    except TypeError as exc:  # cryptography: "Password was not given but private key is encrypted"
        raise error(
            f"SSH private key {path} is encrypted; labdeploy needs a key without a passphrase",
            hint="use a dedicated unencrypted lab key, e.g. `ssh-keygen -t ed25519 -N '' -f <file>`",
        ) from exc
    except (ValueError, paramiko.SSHException, paramiko.pkey.UnknownKeyType) as exc:
        raise error(
            f"{path} is not a usable SSH private key (expected OpenSSH or PEM ed25519/ECDSA/RSA): {exc}",
        ) from exc
