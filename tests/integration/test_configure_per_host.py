"""One host's failure fails that host alone: three real hosts in one configure batch.

``chroot_host`` is a healthy trixie chroot behind its own sshd; ``broken`` is another whose
``apt-get`` exits 100 (so its first apt operation fails on the host, as a full disk or a bad
mirror would make it); ``gone`` is a port nothing listens on (an SSH connect error).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.configure.driver import HostTarget, configure
from deploy.configure.settings import ConfigureSettings
from deploy.errors import StageError
from deploy.providers.base import SshEndpoint
from tests.integration.configure_fixtures import (
    ChrootHost,
    chroot_host,
    free_port,
    start_chroot_host,
    stop_chroot_host,
)

pytestmark = pytest.mark.integration
__all__ = ["chroot_host"]

SETTINGS = ConfigureSettings(runtimes=("runc",))
BROKEN_APT = "#!/bin/sh\necho 'apt-get is broken on this host' >&2\nexit 100\n"


@pytest.fixture
def broken(tmp_path: Path) -> Iterator[ChrootHost]:
    host = start_chroot_host(tmp_path / "broken", name="broken")
    apt_get = host.root / "usr/bin/apt-get"
    apt_get.unlink()
    apt_get.write_text(BROKEN_APT)
    apt_get.chmod(0o755)
    yield host
    stop_chroot_host(host)


@pytest.mark.timeout(900)
def test_a_failed_host_fails_alone(chroot_host: ChrootHost, broken: ChrootHost, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(chroot_host.known_hosts.read_text() + broken.known_hosts.read_text())
    ssh = chroot_host.target.ssh
    gone = HostTarget("gone", SshEndpoint("127.0.0.1", free_port(), "root", ssh.key_path), roles=("runtimes",))
    events: list[dict[str, Any]] = []

    result = configure(
        [chroot_host.target, broken.target, gone], SETTINGS, known_hosts=known_hosts, on_event=events.append
    )

    good = result.hosts[chroot_host.target.name]
    assert good.error is None, good.error
    assert all(op.ok for op in good.ops)
    status, out, _ = chroot_host.run("dpkg-query -W -f '${Status}' runc")
    assert (status, out) == (0, "install ok installed")

    assert set(result.failed) == {"broken", "gone"}
    failure = result.hosts["broken"].error
    assert failure is not None
    assert (failure.stage, failure.host) == ("configure", "broken")
    assert "operation 'apt package lists' failed on broken" in failure.message
    assert "apt-get is broken on this host" in failure.message
    assert [op.error for op in result.hosts["broken"].ops[1:]] == ["not run"] * (len(result.hosts["broken"].ops) - 1)
    unreachable = result.hosts["gone"].error
    assert unreachable is not None
    assert unreachable.host == "gone"
    assert f"cannot reach over ssh: gone (root@127.0.0.1:{gone.ssh.port})" in unreachable.message

    passes = [e for e in events if e["event"] == "pass"]
    assert passes[0]["failed"] == ["broken", "gone"]
    # only a host that changed and succeeded is checked again
    assert all(p["hosts"] == [chroot_host.target.name] for p in passes[1:])

    with pytest.raises(StageError) as caught:
        result.check()
    assert caught.value.message.startswith("configure on broken: 2 hosts failed:")
    assert "cannot reach over ssh" in caught.value.message
