"""SSH transport: wait until a machine accepts the lab key, run commands on it.

Reaching a machine has three phases, each bounded by one deadline (socket and paramiko
timeouts are set from the time left, so nothing hangs past it):

1. ``TCP connect``       something accepts connections on host:port
2. ``SSH handshake``     an SSH server sends its banner and completes key exchange; its host
                         key is checked against the :class:`HostKeyStore` (trust on first use)
3. ``key authentication`` the server accepts the private key for the user

:func:`wait_for_ssh` retries every ``poll`` seconds (through :func:`deploy.retry.retry`) until
all three pass; when the deadline passes, its :class:`SshUnreachable` names the phase it was
still waiting for, the endpoint and the last error. A changed host key is never retried: its
:class:`~deploy.ssh.hostkeys.HostKeyChanged` fails at once.

:func:`run_command` connects and runs one command; :func:`run_on` runs a command on a transport
the caller keeps open (verify reuses one per node). Both read stdout and stderr together and
are bounded by one deadline.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko

from deploy.errors import ProviderError
from deploy.retry import Deadline, RetryTimeout, retry
from deploy.ssh.endpoint import SshEndpoint
from deploy.ssh.hostkeys import HostKeyStore
from deploy.ssh.keys import load_private_key

TCP, HANDSHAKE, AUTH = "TCP connect", "SSH handshake", "key authentication"
_HINTS = {
    TCP: "nothing accepts connections there: is the machine running, and are address and port "
    "(or the loopback port forward) right?",
    HANDSHAKE: "a listener accepts TCP but no SSH server completes the handshake: is sshd running "
    "on the machine, and is this its SSH port?",
    AUTH: "sshd refuses the key: does the machine's authorized_keys (cloud-init, ssh_key) hold "
    "the lab's public key for this user?",
}
_CHUNK = 65536

# paramiko logs failed attempts (tracebacks) from its threads; we report them as errors instead.
# Without this, Python's last-resort handler would print them to stderr.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


@dataclass(frozen=True)
class CommandResult:
    """The outcome of a remote command; a non-zero ``rc`` is a result, not an error."""

    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


class SshUnreachable(ProviderError):
    """Connecting stopped in ``phase`` (TCP connect, SSH handshake, key authentication)."""

    def __init__(self, message: str, *, hint: str, phase: str, retried: bool) -> None:
        super().__init__(message, hint=hint)
        self.phase = phase
        self.retried = retried


class CommandTimeout(ProviderError):
    """A remote command did not finish within its deadline."""


class _NotYet(Exception):
    """One connection attempt stopped in ``phase``; retried until the deadline."""

    def __init__(self, phase: str, cause: BaseException) -> None:
        super().__init__(f"{phase}: {cause}")
        self.phase = phase
        self.cause = cause


def wait_for_ssh(
    endpoint: SshEndpoint,
    *,
    known_hosts: HostKeyStore | Path,
    alias: str,
    timeout: float,
    poll: float = 0.5,
) -> None:
    """Wait until ``endpoint`` accepts its key, checking the host key of node ``alias``."""
    connect(endpoint, known_hosts=known_hosts, alias=alias, timeout=timeout, poll=poll).close()


def connect(
    endpoint: SshEndpoint,
    *,
    known_hosts: HostKeyStore | Path,
    alias: str,
    timeout: float,
    poll: float | None = None,
) -> paramiko.Transport:
    """An authenticated transport to ``endpoint``; the caller closes it.

    With ``poll`` set, failed attempts are retried every ``poll`` seconds until ``timeout``;
    without it, one attempt is made.
    """
    store = known_hosts if isinstance(known_hosts, HostKeyStore) else HostKeyStore(known_hosts)
    pkey = load_private_key(endpoint.key_path)
    deadline = Deadline.after(timeout)
    try:
        return retry(
            lambda: _attempt(endpoint, store, alias, pkey, deadline.at),
            describe=f"SSH on node {alias!r}",
            deadline=deadline,
            interval=poll or 0.0,
            attempts=None if poll is not None else 1,
            retry_on=(_NotYet,),
        )
    except RetryTimeout as timed_out:
        last = timed_out.last
        if not isinstance(last, _NotYet):  # only _NotYet is retried
            raise
        raise _unreachable(endpoint, alias, timeout, last, retried=poll is not None) from last.cause


def _attempt(
    endpoint: SshEndpoint, store: HostKeyStore, alias: str, pkey: paramiko.PKey, deadline: float
) -> paramiko.Transport:
    try:
        sock = socket.create_connection((endpoint.host, endpoint.port), timeout=_left(deadline))
    except OSError as exc:
        raise _NotYet(TCP, exc) from exc
    transport = paramiko.Transport(sock)
    try:
        _handshake(transport, endpoint, store, alias, deadline)
        _authenticate(transport, endpoint, pkey, deadline)
    except BaseException:
        transport.close()
        sock.close()
        raise
    return transport


def _handshake(
    transport: paramiko.Transport, endpoint: SshEndpoint, store: HostKeyStore, alias: str, deadline: float
) -> None:
    transport.banner_timeout = transport.handshake_timeout = _left(deadline)
    options = transport.get_security_options()
    options.key_types = _preferred_key_types(store.keys(alias), options.key_types)
    try:
        transport.start_client(timeout=_left(deadline))
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise _NotYet(HANDSHAKE, exc) from exc
    try:
        key = transport.get_remote_server_key()
    except paramiko.SSHException as exc:  # start_client returns unfinished at its timeout
        seen = "no key exchange" if transport.remote_version else "no SSH banner"
        raise _NotYet(HANDSHAKE, TimeoutError(f"{seen} before the deadline")) from exc
    store.verify(alias, key, where=f"{endpoint.host}:{endpoint.port}")


def _preferred_key_types(recorded: dict[str, paramiko.PKey], default: Sequence[str]) -> list[str]:
    """Ask the server for the recorded key type first, so a known host shows the known key."""
    first: list[str] = []
    for name in recorded:
        first += ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] if name == "ssh-rsa" else [name]
    return first + [name for name in default if name not in first]


def _authenticate(
    transport: paramiko.Transport, endpoint: SshEndpoint, pkey: paramiko.PKey, deadline: float
) -> None:
    transport.auth_timeout = _left(deadline)
    try:
        transport.auth_publickey(endpoint.user, pkey)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise _NotYet(AUTH, exc) from exc
    if not transport.is_authenticated():  # partial success: the server wants a second factor
        raise _NotYet(AUTH, paramiko.AuthenticationException("server asks for more than a key"))


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.05)


def _unreachable(
    endpoint: SshEndpoint, alias: str, timeout: float, exc: _NotYet, *, retried: bool
) -> SshUnreachable:
    where = f"{endpoint.user}@{endpoint.host}:{endpoint.port} (node {alias!r}, key {endpoint.key_path})"
    cause = f"{type(exc.cause).__name__}: {exc.cause}".rstrip(": ")
    head = f"timed out after {timeout:g}s waiting for {exc.phase}" if retried else f"{exc.phase} failed"
    return SshUnreachable(
        f"{head} to {where}; last error: {cause}", hint=_HINTS[exc.phase], phase=exc.phase, retried=retried
    )


def run_command(
    endpoint: SshEndpoint,
    command: str,
    *,
    known_hosts: HostKeyStore | Path,
    alias: str,
    timeout: float,
    stdin: bytes | None = None,
) -> CommandResult:
    """Run ``command`` on ``endpoint`` (one connection attempt) within ``timeout`` seconds; ``stdin`` is
    written to the command's standard input (secrets pass this way: never on a command line or on disk)."""
    deadline = time.monotonic() + timeout
    transport = connect(endpoint, known_hosts=known_hosts, alias=alias, timeout=timeout)
    try:
        return _run(transport, command, alias=alias, timeout=timeout, deadline=deadline, on_expire=transport.close,
                    stdin=stdin)
    finally:
        transport.close()


def run_on(transport: paramiko.Transport, command: str, *, alias: str, timeout: float) -> CommandResult:
    """Run ``command`` on an open ``transport`` within ``timeout`` seconds; the transport stays open.

    Raises :class:`CommandTimeout` at the deadline (the command's channel is closed, the
    transport is kept) and :class:`ProviderError` when the connection fails.
    """
    return _run(transport, command, alias=alias, timeout=timeout, deadline=time.monotonic() + timeout)


def _run(
    transport: paramiko.Transport,
    command: str,
    *,
    alias: str,
    timeout: float,
    deadline: float,
    on_expire: Callable[[], None] | None = None,
    stdin: bytes | None = None,
) -> CommandResult:
    expired = threading.Event()
    channel: paramiko.Channel | None = None

    def expire() -> None:  # closing at the deadline unblocks every paramiko wait
        expired.set()
        if channel is not None:
            # the connection may have died first: the command's own wait reports that, not this timer thread
            with contextlib.suppress(EOFError, OSError, paramiko.SSHException):
                channel.close()
        if on_expire is not None:
            on_expire()

    watchdog = threading.Timer(_left(deadline), expire)
    watchdog.start()
    try:
        channel = transport.open_session(timeout=_left(deadline))
        channel.exec_command(command)
        if stdin is not None:
            channel.sendall(stdin)
            channel.shutdown_write()
        out, err = _collect(channel, deadline)
        if not channel.status_event.wait(_left(deadline)) or expired.is_set():
            raise TimeoutError
        rc = channel.recv_exit_status()
        if rc == -1 and not transport.is_active():  # closed without an exit status: the connection went away
            raise ProviderError(f"the connection to node {alias!r} was lost while `{command}` ran",
                                hint="check that the node is up and its sshd running; the command may have run")
        return CommandResult(rc, _text(out), _text(err))
    except TimeoutError:
        raise _command_timeout(alias, command, timeout) from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        if expired.is_set():
            raise _command_timeout(alias, command, timeout) from None
        raise ProviderError(f"running a command on node {alias!r} failed: {exc}") from exc
    finally:
        watchdog.cancel()
        if channel is not None:
            channel.close()


def _collect(channel: paramiko.Channel, deadline: float) -> tuple[bytes, bytes]:
    """Read stdout and stderr together (reading one alone can stall the other) until EOF."""
    out, err = bytearray(), bytearray()
    while True:
        if channel.recv_ready():
            out += channel.recv(_CHUNK)
        elif channel.recv_stderr_ready():
            err += channel.recv_stderr(_CHUNK)
        elif channel.eof_received or channel.closed:
            return bytes(out), bytes(err)
        elif time.monotonic() >= deadline:
            raise TimeoutError
        else:
            select.select([channel], [], [], max(0.0, min(deadline - time.monotonic(), 1.0)))


def _command_timeout(alias: str, command: str, timeout: float) -> CommandTimeout:
    shown = command if len(command) <= 60 else command[:57] + "..."
    return CommandTimeout(
        f"command `{shown}` on node {alias!r} did not finish within {timeout:g}s",
        hint="raise the timeout, or check what the command waits for on the machine",
    )


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")
