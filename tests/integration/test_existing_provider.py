"""SSH plumbing and the ``existing`` provider against a real OpenSSH server on loopback."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from deploy.errors import ProviderError
from deploy.model.resolved import ResolvedNode
from deploy.model.schema import ExistingProviderSpec
from deploy.providers.base import ProviderContext, SshEndpoint, Tags
from deploy.providers.existing import ExistingProvider
from deploy.providers.registry import provider_class
from deploy.ssh import HostKeyStore, run_command, wait_for_ssh
from deploy.ssh.keys import generate_keypair
from tests.integration.sshd_fixtures import SshServer, free_port, ssh_keygen

pytestmark = pytest.mark.integration

TAGS = Tags(lab="t", run_id="r1", created=datetime.now(UTC))


@pytest.fixture
def store(tmp_path: Path) -> HostKeyStore:
    return HostKeyStore(tmp_path / "known_hosts")


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that accepts TCP (the kernel completes handshakes) but never speaks SSH."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


def _timed_failure(call: Callable[[], object]) -> tuple[ProviderError, float]:
    start = time.monotonic()
    with pytest.raises(ProviderError) as info:
        call()
    return info.value, time.monotonic() - start


def test_wait_for_ssh_reaches_sshd_and_records_its_host_key(sshd: SshServer, store: HostKeyStore) -> None:
    wait_for_ssh(sshd.endpoint(), known_hosts=store, alias="n1", timeout=10)

    recorded = store.keys("n1")["ssh-ed25519"]
    assert recorded.fingerprint == sshd.host_key_fingerprint
    wait_for_ssh(sshd.endpoint(), known_hosts=store.path, alias="n1", timeout=10)  # verified now


def test_wait_for_ssh_names_tcp_on_a_closed_port(store: HostKeyStore, tmp_path: Path) -> None:
    port = free_port()
    endpoint = SshEndpoint("127.0.0.1", port, "root", generate_keypair(tmp_path)[0])

    error, elapsed = _timed_failure(
        lambda: wait_for_ssh(endpoint, known_hosts=store, alias="n1", timeout=1.5, poll=0.2)
    )

    assert "timed out after 1.5s waiting for TCP connect" in error.message
    assert f"root@127.0.0.1:{port}" in error.message
    assert "ConnectionRefusedError" in error.message
    assert 1.4 <= elapsed < 6.5  # the deadline holds (generous upper bound for a loaded CI host)


def test_wait_for_ssh_names_the_handshake_when_nothing_speaks_ssh(
    silent_listener: int, store: HostKeyStore, tmp_path: Path
) -> None:
    endpoint = SshEndpoint("127.0.0.1", silent_listener, "root", generate_keypair(tmp_path)[0])

    error, elapsed = _timed_failure(lambda: wait_for_ssh(endpoint, known_hosts=store, alias="n1", timeout=1.5))

    assert "waiting for SSH handshake" in error.message
    assert f"127.0.0.1:{silent_listener}" in error.message
    assert "sshd" in error.hint
    assert elapsed < 6.5
    assert store.keys("n1") == {}


def test_wait_for_ssh_names_the_handshake_when_the_port_closes_at_once(store: HostKeyStore, tmp_path: Path) -> None:
    """What a user-mode port forward does while the guest's sshd is not up yet."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        stop = threading.Event()
        threading.Thread(target=_accept_and_close, args=(listener, stop), daemon=True).start()
        endpoint = SshEndpoint("127.0.0.1", listener.getsockname()[1], "root", generate_keypair(tmp_path)[0])

        error, elapsed = _timed_failure(
            lambda: wait_for_ssh(endpoint, known_hosts=store, alias="n1", timeout=1.5, poll=0.2)
        )
        stop.set()

    assert "waiting for SSH handshake" in error.message
    assert "Error reading SSH protocol banner" in error.message
    assert elapsed < 6.5


def _accept_and_close(listener: socket.socket, stop: threading.Event) -> None:
    listener.settimeout(0.1)
    while not stop.is_set():
        try:
            listener.accept()[0].close()
        except OSError:
            continue


def test_wait_for_ssh_returns_once_a_late_sshd_comes_up(store: HostKeyStore, tmp_path: Path) -> None:
    server = SshServer(tmp_path / "late", authorized_keys=[])
    server.directory.mkdir()
    ssh_keygen(server.key_path)  # the client key exists before the server does
    timer = threading.Timer(1.0, server.start)
    timer.start()
    try:
        start = time.monotonic()
        wait_for_ssh(server.endpoint(), known_hosts=store, alias="late", timeout=15, poll=0.2)
        assert 0.9 <= time.monotonic() - start < 10
    finally:
        timer.join()
        server.stop()


def test_wait_for_ssh_names_authentication_for_a_wrong_key(
    sshd: SshServer, store: HostKeyStore, tmp_path: Path
) -> None:
    stranger, _ = generate_keypair(tmp_path)

    error, elapsed = _timed_failure(
        lambda: wait_for_ssh(sshd.endpoint(stranger), known_hosts=store, alias="n1", timeout=1.5)
    )

    assert "waiting for key authentication" in error.message
    assert f"key {stranger}" in error.message
    assert "authorized_keys" in error.hint
    assert elapsed < 6.5


def test_changed_host_key_fails_at_once_naming_both_fingerprints(
    sshd_factory: Callable[..., SshServer], store: HostKeyStore
) -> None:
    server = sshd_factory()
    wait_for_ssh(server.endpoint(), known_hosts=store, alias="db-1", timeout=10)
    old = server.host_key_fingerprint
    server.restart(new_host_key=True)

    error, elapsed = _timed_failure(
        lambda: wait_for_ssh(server.endpoint(), known_hosts=store, alias="db-1", timeout=10)
    )

    assert "'db-1'" in error.message
    assert old in error.message
    assert server.host_key_fingerprint in error.message
    assert old != server.host_key_fingerprint
    assert f"ssh-keygen -R db-1 -f {store.path}" in error.hint
    assert elapsed < 5  # not retried until the deadline


def test_lab_key_from_generate_keypair_logs_in(
    sshd_factory: Callable[..., SshServer], store: HostKeyStore, tmp_path: Path
) -> None:
    key, public_line = generate_keypair(tmp_path / "lab")
    server = sshd_factory(authorized_keys=[public_line])

    result = run_command(server.endpoint(key), "id -un", known_hosts=store, alias="n1", timeout=10)

    assert result.stdout == "root\n"


def test_run_command_returns_rc_stdout_and_stderr(sshd: SshServer, store: HostKeyStore) -> None:
    result = run_command(sshd.endpoint(), "echo out; echo err >&2; exit 3", known_hosts=store, alias="n1", timeout=10)

    assert (result.rc, result.stdout, result.stderr, result.ok) == (3, "out\n", "err\n", False)


def test_run_command_reads_large_stdout_and_stderr_together(sshd: SshServer, store: HostKeyStore) -> None:
    command = "head -c 3000000 /dev/zero | tr '\\0' e >&2; head -c 3000000 /dev/zero | tr '\\0' o"

    result = run_command(sshd.endpoint(), command, known_hosts=store, alias="n1", timeout=20)

    assert (result.rc, len(result.stdout), len(result.stderr)) == (0, 3_000_000, 3_000_000)


def test_run_command_stops_at_its_deadline(sshd: SshServer, store: HostKeyStore) -> None:
    error, elapsed = _timed_failure(
        lambda: run_command(sshd.endpoint(), "sleep 30", known_hosts=store, alias="n1", timeout=1.5)
    )

    assert "`sleep 30` on node 'n1' did not finish within 1.5s" in error.message
    assert elapsed < 8


def test_exported_known_hosts_lets_openssh_check_strictly(sshd: SshServer, store: HostKeyStore, tmp_path: Path) -> None:
    wait_for_ssh(sshd.endpoint(), known_hosts=store, alias="n1", timeout=10)
    exported = tmp_path / "inventory_known_hosts"
    store.export_known_hosts(exported, {"n1": (sshd.host, sshd.port)})

    result = _openssh(sshd, exported)
    assert (result.returncode, result.stdout) == (0, "strict ok\n")

    other = ssh_keygen(tmp_path / "other_host_key")
    exported.write_text(f"[{sshd.host}]:{sshd.port} {Path(str(other) + '.pub').read_text()}")
    assert _openssh(sshd, exported).returncode == 255  # the check is real: a wrong key fails


def _openssh(server: SshServer, known_hosts: Path) -> subprocess.CompletedProcess[str]:
    options = ["BatchMode=yes", "StrictHostKeyChecking=yes", f"UserKnownHostsFile={known_hosts}"]
    return subprocess.run(
        [
            "ssh",
            "-F",
            "/dev/null",
            *(arg for o in options for arg in ("-o", o)),
            "-i",
            str(server.key_path),
            "-p",
            str(server.port),
            f"{server.user}@{server.host}",
            "echo strict ok",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=20,
    )


def _provider(tmp_path: Path, **spec: object) -> ExistingProvider:
    ctx = ProviderContext(lab="t", state_dir=tmp_path / "state")
    return ExistingProvider("hosts", ExistingProviderSpec.model_validate({"kind": "existing", **spec}), ctx)


def _node(name: str, address: str | None, port: int, key: Path | None) -> ResolvedNode:
    return ResolvedNode(
        name=name, group=None, index=0, provider="hosts", image="", cpus=1, memory_mib=512, disk_gib=1,
        nics=(), address=address, ssh_port=port, ssh_key=str(key) if key else None,
    )  # fmt: skip


def test_existing_provider_is_registered() -> None:
    assert provider_class("existing") is ExistingProvider


def test_create_machine_reports_a_reachable_host_running(sshd: SshServer, tmp_path: Path) -> None:
    provider = _provider(tmp_path, connect_timeout=10)

    info = provider.create_machine(_node("metal-1", sshd.host, sshd.port, sshd.key_path), TAGS)

    assert info.state == "running"
    assert info.ssh == sshd.endpoint()
    assert provider.status("metal-1").state == "running"
    assert provider.known_hosts.keys("metal-1")["ssh-ed25519"].fingerprint == sshd.host_key_fingerprint
    assert provider.find_resources("t") == []
    assert provider.create_network(SimpleNamespace(name="mgmt"), TAGS) == {}  # type: ignore[arg-type]


def test_create_machine_falls_back_to_the_lab_key(sshd: SshServer, tmp_path: Path) -> None:
    provider = _provider(tmp_path)
    provider.ctx.ssh_private_key = sshd.key_path

    info = provider.create_machine(_node("metal-2", sshd.host, sshd.port, None), TAGS)

    assert info.ssh is not None
    assert info.ssh.key_path == sshd.key_path


def test_create_machine_fails_for_an_unreachable_host(tmp_path: Path) -> None:
    provider = _provider(tmp_path, connect_timeout=1)
    key, _ = generate_keypair(tmp_path)
    port = free_port()

    error, elapsed = _timed_failure(lambda: provider.create_machine(_node("gone", "127.0.0.1", port, key), TAGS))

    assert "TCP connect" in error.message
    assert "node 'gone'" in error.message
    assert elapsed < 6.5
    assert provider.status("gone").state == "unknown"


def test_delete_machine_leaves_the_host_alone(sshd: SshServer, tmp_path: Path) -> None:
    provider = _provider(tmp_path, connect_timeout=10)
    provider.create_machine(_node("metal-3", sshd.host, sshd.port, sshd.key_path), TAGS)

    provider.delete_machine("metal-3")
    provider.delete_network("mgmt")

    assert sshd.process is not None
    assert sshd.process.poll() is None
    info = provider.create_machine(_node("metal-3", sshd.host, sshd.port, sshd.key_path), TAGS)
    assert info.state == "running"


def test_create_machine_requires_an_address_and_a_private_key_file(sshd: SshServer, tmp_path: Path) -> None:
    provider = _provider(tmp_path)
    with pytest.raises(ProviderError, match="has no address"):
        provider.create_machine(_node("x", None, 22, sshd.key_path), TAGS)

    open_key, _ = generate_keypair(tmp_path / "k")
    open_key.chmod(0o640)
    with pytest.raises(ProviderError, match="mode 0640"):
        provider.create_machine(_node("x", sshd.host, sshd.port, open_key), TAGS)
