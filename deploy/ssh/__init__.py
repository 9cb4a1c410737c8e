"""SSH for the whole project (configure's pyinfra aside): endpoint, keys, host keys, transport.

    endpoint.py   SshEndpoint (where sshd is) and the one ``ssh ...`` command shown to users
    keys.py       the lab's key pair, loading private keys, fingerprints
    hostkeys.py   trust-on-first-use host keys by node name, and strict known_hosts exports
    transport.py  connect / wait_for_ssh (three phases, one deadline), run_command / run_on

Files it writes in a lab's state folder: ``id_ed25519`` and ``id_ed25519.pub`` (keys.py),
``known_hosts`` (hostkeys.py, OpenSSH format keyed by node name); the ``[host]:port`` export
``ssh_known_hosts`` is written by :meth:`HostKeyStore.export_known_hosts` for its caller.
"""

from __future__ import annotations

from deploy.ssh.endpoint import SshEndpoint
from deploy.ssh.hostkeys import HostKeyChanged, HostKeyStore, UnknownHostKey, known_hosts_name, known_hosts_path
from deploy.ssh.keys import check_private_key_mode, fingerprint, generate_keypair, load_private_key
from deploy.ssh.transport import (
    CommandResult,
    CommandTimeout,
    SshUnreachable,
    connect,
    run_command,
    run_on,
    wait_for_ssh,
)

__all__ = [
    "CommandResult",
    "CommandTimeout",
    "HostKeyChanged",
    "HostKeyStore",
    "SshEndpoint",
    "SshUnreachable",
    "UnknownHostKey",
    "check_private_key_mode",
    "connect",
    "fingerprint",
    "generate_keypair",
    "known_hosts_name",
    "known_hosts_path",
    "load_private_key",
    "run_command",
    "run_on",
    "wait_for_ssh",
]
