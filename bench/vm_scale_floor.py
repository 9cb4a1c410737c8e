"""The floor: the least libvirt-python code that boots N VMs to SSH-ready.

Per VM: a qcow2 overlay on the cached base image (qemu-img), a NoCloud seed ISO
(deploy.images.build_seed_iso), a domain with file disks and a SLIRP NIC whose SSH is
forwarded to a loopback port through <qemu:commandline>; defineXML + create, then wait for
the SSH banner and key auth. No metadata, no state, no checks: what any tool must at least do.
"""

from __future__ import annotations

import shutil
import time
from functools import partial
from pathlib import Path

import libvirt
from vm_scale_common import CPUS, DISK_GIB, MEMORY_MIB, Bench, free_ports, parallel, run, wait_all

from deploy.images import build_seed_iso

URI = "qemu:///system"
DOMAIN = """<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name><memory unit='MiB'>{mem}</memory><vcpu>{cpus}</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/><apic/></features><on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='{disk}'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>
      <source file='{seed}'/><target dev='hdc' bus='ide'/><readonly/></disk>
    <serial type='file'><source path='{log}'/><target port='0'/></serial>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-netdev'/><qemu:arg value='user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22'/>
    <qemu:arg value='-device'/><qemu:arg value='virtio-net-pci,netdev=n0,bus=pci.0,addr=0x1e'/>
  </qemu:commandline>
</domain>"""


def _dir(bench: Bench) -> Path:
    return Path("/var/lib/libvirt/images") / f"{bench.tag}-floor"


def _base(bench: Bench) -> Path:
    """The base image where QEMU (user libvirt-qemu) may read it; copied once, untimed.

    labdeploy keeps the same copy in its pool (base-<sha>.qcow2), made once per image.
    """
    base = _dir(bench) / "base.qcow2"
    if not base.exists():
        _dir(bench).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bench.image, base)
    return base


def _start(conn: libvirt.virConnect, bench: Bench, name: str, port: int) -> None:
    folder = _dir(bench)
    disk, seed = folder / f"{name}.qcow2", folder / f"{name}-seed.iso"
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(_base(bench)), str(disk),
         f"{DISK_GIB}G"], 60)
    build_seed_iso(seed, hostname=name, ssh_public_key=bench.pubkey, instance_id=f"{name}-{time.time_ns()}")
    xml = DOMAIN.format(name=name, mem=MEMORY_MIB, cpus=CPUS, disk=disk, seed=seed, port=port,
                        log=folder / f"{name}.log")
    conn.defineXML(xml).create()


def measure(bench: Bench, n: int) -> float:
    """Seconds from 'create N VMs' to all N accepting SSH; everything removed afterwards."""
    conn = libvirt.open(URI)
    names = [f"{bench.tag}-floor-{i}" for i in range(n)]
    try:
        _base(bench)
        ports = free_ports(n)
        start = time.monotonic()
        parallel([partial(_start, conn, bench, nm, p) for nm, p in zip(names, ports, strict=True)])
        missing = [nm for nm in names if nm not in conn.listDefinedDomains() + _active(conn)]
        if missing:
            raise RuntimeError(f"floor: domains {missing} were not created (see errors above)")
        return wait_all(ports, bench.key, start + bench.deadline) - start
    finally:
        cleanup(conn, bench)
        conn.close()


def _active(conn: libvirt.virConnect) -> list[str]:
    return [d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)]


def cleanup(conn: libvirt.virConnect, bench: Bench, keep_base: bool = True) -> None:
    """Remove every floor domain of this benchmark process and its files (the base at the end)."""
    for dom in conn.listAllDomains():
        if dom.name().startswith(f"{bench.tag}-floor-"):
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    if not keep_base:
        shutil.rmtree(_dir(bench), ignore_errors=True)
        return
    for path in _dir(bench).glob(f"{bench.tag}-floor-*"):
        path.unlink()


def cleanup_all(bench: Bench) -> None:
    conn = libvirt.open(URI)
    try:
        cleanup(conn, bench, keep_base=False)
    finally:
        conn.close()
