"""Remove expired or orphaned lab resources from a hypervisor, whatever lab file made them."""

from __future__ import annotations

from datetime import timedelta

from deploy.providers.base import TaggedResource


def reap_libvirt(uri: str, *, pool: str, older_than_seconds: int, dry_run: bool,
                 lab: str | None = None) -> list[TaggedResource]:
    """Resources tagged by labdeploy on ``uri`` that expired or are older than the cutoff."""
    import libvirt

    from deploy.errors import ProviderError
    from deploy.providers.libvirt import reap

    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise ProviderError(f"cannot connect to libvirt at {uri}: {exc}",
                            hint="start libvirtd (`libvirtd -d` where no init system runs)") from None
    try:
        return reap(conn, timedelta(seconds=older_than_seconds), dry_run, pool=pool, lab=lab)
    finally:
        conn.close()
