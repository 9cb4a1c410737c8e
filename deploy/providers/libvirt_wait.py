"""Waiting for a libvirt machine to become reachable over its loopback SSH forward.

Three things are awaited in order under one deadline: the domain is running, the forwarded
TCP port answers with an SSH server, and the lab key is accepted (both through
:func:`deploy.ssh.wait_for_ssh`). The wait is cut into slices (retried by
:func:`deploy.retry.retry`) so that a domain that dies while booting fails at once, with the
tail of its serial console in the message.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from deploy.errors import ProviderError
from deploy.providers.base import MachineInfo
from deploy.providers.libvirt_inventory import lookup_domain
from deploy.retry import Deadline, RetryTimeout, retry
from deploy.ssh import SshUnreachable, known_hosts_path, wait_for_ssh

if TYPE_CHECKING:
    from deploy.providers.libvirt import LibvirtProvider

SLICE = 10.0


def console_tail(path: str, lines: int = 15) -> str:
    """The last ``lines`` of a serial console log (empty when there is none)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.replace("\r", "").splitlines()[-lines:])


def _died(provider: LibvirtProvider, info: MachineInfo) -> ProviderError:
    tail = console_tail(str(info.extra.get("serial_log", "")))
    return ProviderError(
        f"machine {info.name} (domain {info.extra.get('domain')}) stopped while waiting for SSH"
        + (f"; last console lines:\n{tail}" if tail else ""),
        hint=f"see the console log {info.extra.get('serial_log')} and `virsh -c {provider.uri} dominfo`",
    )


def _timed_out(info: MachineInfo, timeout: float, last: ProviderError | None) -> ProviderError:
    tail = console_tail(str(info.extra.get("serial_log", "")), 5)
    attempt = f"; last attempt: {last.message}" if last else ""
    return ProviderError(
        f"machine {info.name} was not reachable over SSH within {timeout:.0f}s{attempt}"
        + (f"\nlast console lines:\n{tail}" if tail else ""),
        hint=(last.hint if last else "") or "check the console log and that the image runs sshd with DHCP on its NIC",
    )


def wait_machine(provider: LibvirtProvider, info: MachineInfo, timeout: float) -> float:
    """Block until ``info``'s sshd accepts the lab key; return the seconds it took."""
    ssh = info.ssh
    if ssh is None:
        raise ProviderError(f"machine {info.name} has no SSH forward to wait for (no user-mode NIC or no lab key)")
    start = time.monotonic()
    deadline = Deadline.after(timeout)
    store = known_hosts_path(provider.ctx.state_dir)

    def one_slice() -> None:
        dom = lookup_domain(provider.conn, str(info.extra.get("domain", "")))
        if dom is None or not dom.isActive():
            raise _died(provider, info)
        wait_for_ssh(ssh, known_hosts=store, alias=info.name, timeout=max(min(SLICE, deadline.left()), 0.0))

    try:  # a changed host key or the like is no SshUnreachable: retrying cannot help
        retry(one_slice, describe=f"SSH on machine {info.name}", deadline=deadline, interval=0.0,
              retry_on=(SshUnreachable,))
    except RetryTimeout as timed_out:
        last = timed_out.last
        raise _timed_out(info, timeout, last if isinstance(last, ProviderError) else None) from None
    return time.monotonic() - start
