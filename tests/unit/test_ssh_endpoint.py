"""The one printed ``ssh`` command line: strict host keys, quoted paths, state round trip."""

from __future__ import annotations

import shlex
from pathlib import Path

from deploy.providers.base import SshEndpoint as FromBase
from deploy.ssh import SshEndpoint


def test_command_checks_host_keys_strictly_under_the_node_alias() -> None:
    ep = SshEndpoint("127.0.0.1", 2201, "root", Path("/labs/my lab/.labdeploy/id_ed25519"))
    line = ep.command(known_hosts=Path("/labs/my lab/.labdeploy/known_hosts"), alias="cp-1")
    assert shlex.split(line) == [
        "ssh", "-i", "/labs/my lab/.labdeploy/id_ed25519", "-p", "2201", "-o", "IdentitiesOnly=yes",
        "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=/labs/my lab/.labdeploy/known_hosts",
        "-o", "HostKeyAlias=cp-1", "root@127.0.0.1",
    ]
    assert "StrictHostKeyChecking=no" not in line


def test_command_with_a_remote_command_quotes_it_as_one_word() -> None:
    ep = SshEndpoint("10.0.0.5", 22, "debian", Path("/k"))
    words = shlex.split(ep.command(known_hosts=Path("/kh"), remote="echo 'a b' | wc -c"))
    assert words[-2:] == ["debian@10.0.0.5", "echo 'a b' | wc -c"]
    assert not any(w.startswith("HostKeyAlias") for w in words)


def test_outputs_round_trip_and_providers_base_reexports_the_same_class() -> None:
    ep = SshEndpoint("127.0.0.1", 2222, "root", Path("/k"))
    assert SshEndpoint.from_outputs(ep.to_outputs()) == ep
    assert FromBase is SshEndpoint
