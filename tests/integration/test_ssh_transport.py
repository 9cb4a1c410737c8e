"""deploy.ssh against a real sshd on loopback: the printed command, run_on, typed errors."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from deploy.errors import ProviderError
from deploy.ssh import (
    CommandTimeout,
    HostKeyChanged,
    HostKeyStore,
    SshUnreachable,
    UnknownHostKey,
    connect,
    known_hosts_name,
    run_on,
    wait_for_ssh,
)
from tests.integration.sshd_fixtures import SshServer, free_port

pytestmark = pytest.mark.integration


def test_printed_command_logs_in_with_openssh_against_the_lab_store(sshd: SshServer, tmp_path: Path) -> None:
    store = HostKeyStore(tmp_path / "known_hosts")
    wait_for_ssh(sshd.endpoint(), known_hosts=store, alias="cp-1", timeout=10)  # records the key under "cp-1"
    words = shlex.split(sshd.endpoint().command(known_hosts=store.path, alias="cp-1", remote="echo via-alias"))
    done = subprocess.run([words[0], "-o", "BatchMode=yes", *words[1:]],
                          check=False, capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (0, "via-alias\n"), done.stderr


def test_run_on_keeps_the_transport_across_commands_and_timeouts(sshd: SshServer, tmp_path: Path) -> None:
    transport = connect(sshd.endpoint(), known_hosts=tmp_path / "kh", alias="n1", timeout=10)
    try:
        assert run_on(transport, "echo one; echo two >&2; exit 4", alias="n1", timeout=10).rc == 4
        with pytest.raises(CommandTimeout, match=r"`sleep 30` on node 'n1' did not finish within 1s"):
            run_on(transport, "sleep 30", alias="n1", timeout=1)
        assert transport.is_active()
        result = run_on(transport, "echo three", alias="n1", timeout=10)
        assert (result.rc, result.stdout, result.stderr) == (0, "three\n", "")
    finally:
        transport.close()


def test_unreachable_error_names_its_phase(tmp_path: Path, sshd: SshServer) -> None:
    endpoint = sshd.endpoint()
    closed = type(endpoint)(endpoint.host, free_port(), endpoint.user, endpoint.key_path)
    with pytest.raises(SshUnreachable) as error:
        connect(closed, known_hosts=tmp_path / "kh", alias="n1", timeout=2)
    assert (error.value.phase, error.value.retried) == ("TCP connect", False)
    assert error.value.message.startswith("TCP connect failed to ")


def test_strict_store_refuses_unknown_and_changed_keys(
    sshd_factory: Callable[..., SshServer], tmp_path: Path
) -> None:
    server = sshd_factory()
    export = tmp_path / "export"
    learned = HostKeyStore(tmp_path / "known_hosts")
    wait_for_ssh(server.endpoint(), known_hosts=learned, alias="n1", timeout=10)
    learned.export_known_hosts(export, {"n1": (server.host, server.port)})
    name = known_hosts_name(server.host, server.port)
    strict = HostKeyStore(export, record_new=False)
    connect(server.endpoint(), known_hosts=strict, alias=name, timeout=10).close()
    with pytest.raises(UnknownHostKey, match="not found in known_hosts"):
        connect(server.endpoint(), known_hosts=strict, alias="[127.0.0.1]:1", timeout=10)
    assert export.read_text().count("\n") == 1  # the strict store recorded nothing
    server.restart(new_host_key=True)
    with pytest.raises(HostKeyChanged) as changed:
        connect(server.endpoint(), known_hosts=strict, alias=name, timeout=10)
    assert changed.value.offered.get_name() == "ssh-ed25519"
    assert not list(tmp_path.glob("*.tmp"))
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_connection_lost_mid_command_is_an_error_not_exit_status_minus_one(
        sshd: SshServer, tmp_path: Path) -> None:
    """paramiko reports -1 for a channel closed without an exit status; that is a lost node, not a result."""
    import threading

    transport = connect(sshd.endpoint(), known_hosts=tmp_path / "kh", alias="n1", timeout=10)
    cut = threading.Timer(0.5, transport.sock.close)  # the network goes away under the command
    cut.start()
    try:
        with pytest.raises(ProviderError, match=r"connection to node 'n1' was lost while `sleep 30` ran"):
            run_on(transport, "sleep 30", alias="n1", timeout=5)
    finally:
        cut.join()
        transport.close()
