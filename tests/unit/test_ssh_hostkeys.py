"""Trust-on-first-use host keys keyed by node name, and known_hosts export."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import paramiko
import pytest

from deploy.errors import ProviderError
from deploy.ssh.hostkeys import HostKeyStore
from deploy.ssh.keys import fingerprint, generate_keypair


def _key(directory: Path, name: str = "id_ed25519") -> paramiko.PKey:
    private, _ = generate_keypair(directory, name)
    return paramiko.PKey.from_path(private)


def _ecdsa_key() -> paramiko.PKey:
    return paramiko.ECDSAKey.generate()


@pytest.fixture
def store(tmp_path: Path) -> HostKeyStore:
    return HostKeyStore(tmp_path / "state" / "known_hosts")


def test_first_contact_records_and_later_contacts_verify(store: HostKeyStore, tmp_path: Path) -> None:
    key = _key(tmp_path)

    assert store.verify("control-1", key) is True
    assert store.verify("control-1", key) is False
    assert HostKeyStore(store.path).verify("control-1", key) is False  # persisted, not in memory
    assert store.path.read_text() == f"control-1 ssh-ed25519 {key.get_base64()}\n"


def test_store_is_keyed_by_node_name_not_address(store: HostKeyStore, tmp_path: Path) -> None:
    first, second = _key(tmp_path, "a"), _key(tmp_path, "b")
    store.verify("node-a", first)
    store.verify("node-b", second)

    assert store.keys("node-a") == {"ssh-ed25519": first}
    assert store.keys("node-b") == {"ssh-ed25519": second}
    assert store.keys("node-c") == {}


def test_changed_key_is_refused_with_both_fingerprints_and_the_fix(
    store: HostKeyStore, tmp_path: Path
) -> None:
    old, new = _key(tmp_path, "old"), _key(tmp_path, "new")
    store.verify("workers-1", old)

    with pytest.raises(ProviderError) as info:
        store.verify("workers-1", new, where="127.0.0.1:2201")

    message = info.value.message
    assert "'workers-1' at 127.0.0.1:2201 changed" in message
    assert fingerprint(old) in message
    assert fingerprint(new) in message
    assert fingerprint(old).startswith("SHA256:")
    assert "deploy destroy" in info.value.hint
    assert f"ssh-keygen -R workers-1 -f {store.path}" in info.value.hint
    assert store.keys("workers-1") == {"ssh-ed25519": old}  # the recorded key stays


def test_key_of_another_type_than_recorded_is_a_mismatch(store: HostKeyStore, tmp_path: Path) -> None:
    recorded = _ecdsa_key()
    store.verify("n1", recorded)

    with pytest.raises(ProviderError, match=r"recorded SHA256:\S+ \(ecdsa-sha2-nistp256\)"):
        store.verify("n1", _key(tmp_path))


def test_the_fix_in_the_hint_works(store: HostKeyStore, tmp_path: Path) -> None:
    old, new = _key(tmp_path, "old"), _key(tmp_path, "new")
    store.verify("n1", old)
    store.verify("n2", old)

    subprocess.run(["ssh-keygen", "-R", "n1", "-f", str(store.path)], check=True, capture_output=True)

    assert store.verify("n1", new) is True
    assert store.keys("n2") == {"ssh-ed25519": old}


def test_concurrent_first_contacts_are_all_recorded(store: HostKeyStore, tmp_path: Path) -> None:
    keys = {f"n{i}": _key(tmp_path, f"k{i}") for i in range(8)}
    threads = [threading.Thread(target=store.verify, args=item) for item in keys.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert {alias: store.keys(alias) for alias in keys} == {a: {"ssh-ed25519": k} for a, k in keys.items()}


def test_export_known_hosts_writes_openssh_entries(store: HostKeyStore, tmp_path: Path) -> None:
    forwarded, direct = _key(tmp_path, "f"), _key(tmp_path, "d")
    store.verify("vm", forwarded)
    store.verify("metal", direct)
    exported = tmp_path / "inventory" / "known_hosts"

    store.export_known_hosts(exported, {"vm": ("127.0.0.1", 2222), "metal": ("127.0.0.5", 22)})

    assert exported.read_text().splitlines() == [
        f"127.0.0.5 ssh-ed25519 {direct.get_base64()}",
        f"[127.0.0.1]:2222 ssh-ed25519 {forwarded.get_base64()}",
    ]
    found = subprocess.run(
        ["ssh-keygen", "-F", "[127.0.0.1]:2222", "-f", str(exported)],
        check=True,
        capture_output=True,
        text=True,
    )
    assert forwarded.get_base64() in found.stdout


def test_export_refuses_a_node_never_contacted(store: HostKeyStore, tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="no SSH host key recorded for node 'ghost'"):
        store.export_known_hosts(tmp_path / "kh", {"ghost": ("127.0.0.1", 2222)})
