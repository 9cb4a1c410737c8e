"""Finding and removing labdeploy resources on a libvirt connection by their metadata.

Works from the hypervisor alone (no local state): domains and networks carry ``<ld:lab>``
metadata; machine volumes carry their lab and node in their names and are listed in their
domain's metadata. ``reap`` removes what expired or is older than a cutoff.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import libvirt

from deploy.errors import ProviderError
from deploy.providers.base import TaggedResource, Tags
from deploy.providers.libvirt_net import lookup_network, remove_network
from deploy.providers.libvirt_storage import delete_volume, lookup_volume, volume_owner
from deploy.providers.libvirt_xml import LabMeta, parse_meta

UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
)
KIND_ORDER = {"machine": 0, "network": 1, "volume": 2}


def lookup_domain(conn: libvirt.virConnect, name: str) -> libvirt.virDomain | None:
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise ProviderError(f"cannot look up libvirt domain {name}: {exc}") from exc


def domain_meta(dom: libvirt.virDomain) -> LabMeta | None:
    try:
        return parse_meta(dom.XMLDesc(0))
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None  # deleted meanwhile (another thread or run)
        raise ProviderError(f"cannot read libvirt domain {dom.name()}: {exc}") from exc


def lookup_pool(conn: libvirt.virConnect, pool_name: str) -> libvirt.virStoragePool | None:
    try:
        pool = conn.storagePoolLookupByName(pool_name)
    except libvirt.libvirtError:
        return None
    return pool if pool.isActive() else None


def find_tagged(conn: libvirt.virConnect, pool_name: str, provider: str, lab: str | None) -> list[TaggedResource]:
    """Every labdeploy domain, network and machine volume (of ``lab``, or of every lab)."""
    found: list[TaggedResource] = []
    owners: dict[tuple[str, str], Tags] = {}
    for dom in conn.listAllDomains(0):
        meta = domain_meta(dom)
        if meta and meta.tags.lab and lab in (None, meta.tags.lab):
            found.append(TaggedResource("machine", dom.name(), meta.tags, provider))
            owners[(meta.tags.lab, meta.node)] = meta.tags
    for net in conn.listAllNetworks(0):
        meta = parse_meta(net.XMLDesc(0))
        if meta and meta.tags.lab and lab in (None, meta.tags.lab):
            found.append(TaggedResource("network", net.name(), meta.tags, provider))
    found.extend(_tagged_volumes(conn, pool_name, provider, lab, owners))
    return found


def _tagged_volumes(
    conn: libvirt.virConnect,
    pool_name: str,
    provider: str,
    lab: str | None,
    owners: dict[tuple[str, str], Tags],
) -> list[TaggedResource]:
    pool = lookup_pool(conn, pool_name)
    if pool is None:
        return []
    found = []
    for vol in pool.listAllVolumes(0):
        owner = volume_owner(vol.name())
        if owner is None or lab not in (None, owner[0]):
            continue
        tags = owners.get(owner) or Tags(owner[0], "", _volume_time(vol), None)
        found.append(TaggedResource("volume", vol.name(), tags, provider))
    return found


def _volume_time(vol: libvirt.virStorageVol) -> datetime:
    """When an orphaned volume was last changed (its only age marker)."""
    stamps = ET.fromstring(vol.XMLDesc(0)).find("target/timestamps")
    for tag in ("mtime", "ctime"):
        node = stamps.find(tag) if stamps is not None else None
        if node is not None and node.text:
            return datetime.fromtimestamp(float(node.text), UTC)
    return datetime.now(UTC)


def unused_bases(conn: libvirt.virConnect, pool_name: str, provider: str, cutoff: datetime) -> list[TaggedResource]:
    """Base image volumes that back no volume and were written before ``cutoff`` (any lab's)."""
    pool = lookup_pool(conn, pool_name)
    if pool is None:
        return []
    volumes = pool.listAllVolumes(0)
    backing = {ET.fromstring(v.XMLDesc(0)).findtext("backingStore/path") for v in volumes}
    found = []
    for vol in volumes:
        written = _volume_time(vol)
        if vol.name().startswith("base-") and vol.path() not in backing and written <= cutoff:
            found.append(TaggedResource("volume", vol.name(), Tags("", "", written, None), provider))
    return found


def remove_domain(conn: libvirt.virConnect, pool_name: str, dom: libvirt.virDomain) -> None:
    """Power off, undefine and delete the machine volumes of ``dom``."""
    meta = domain_meta(dom)
    try:
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(UNDEFINE_FLAGS)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise ProviderError(f"cannot delete libvirt domain {dom.name()}: {exc}") from exc
    if meta is not None:
        remove_node_volumes(conn, pool_name, meta.tags.lab, meta.node, meta.volumes)


def remove_node_volumes(
    conn: libvirt.virConnect, pool_name: str, lab: str, node: str, listed: tuple[str, ...] = ()
) -> None:
    """Delete the volumes listed for a node plus any volume named after (lab, node)."""
    pool = lookup_pool(conn, pool_name)
    if pool is None:
        return
    names = set(listed) | {v.name() for v in pool.listAllVolumes(0) if volume_owner(v.name()) == (lab, node)}
    for name in sorted(names):
        delete_volume(pool, name)


def remove_resource(conn: libvirt.virConnect, pool_name: str, res: TaggedResource) -> None:
    if res.kind == "machine":
        dom = lookup_domain(conn, res.name)
        if dom is not None:
            remove_domain(conn, pool_name, dom)
    elif res.kind == "network":
        net = lookup_network(conn, res.name)
        if net is not None:
            remove_network(net)
    else:
        pool = lookup_pool(conn, pool_name)
        if pool is not None and lookup_volume(pool, res.name) is not None:
            delete_volume(pool, res.name)


def is_stale(tags: Tags, cutoff: datetime, now: datetime) -> bool:
    """Expired, or created before ``cutoff`` (naive timestamps are taken as UTC)."""

    def aware(value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    if tags.expires is not None and aware(tags.expires) <= now:
        return True
    return aware(tags.created) <= cutoff


def reap_connection(
    conn: libvirt.virConnect,
    pool_name: str,
    provider: str,
    older_than: timedelta,
    *,
    dry_run: bool,
    now: datetime | None = None,
    lab: str | None = None,
) -> list[TaggedResource]:
    """Remove (unless ``dry_run``) every expired or too-old resource (of ``lab`` or all labs)."""
    now = now or datetime.now(UTC)
    stale = [r for r in find_tagged(conn, pool_name, provider, lab) if is_stale(r.tags, now - older_than, now)]
    if lab is None:  # shared base images are nobody's: pruned only in a reap of every lab
        stale += unused_bases(conn, pool_name, provider, now - older_than)
    stale.sort(key=lambda r: KIND_ORDER.get(r.kind, 9))
    if not dry_run:
        for res in stale:
            remove_resource(conn, pool_name, res)
    return stale
