"""kcli (PyPI `kcli`) on the same libvirt (qemu:///system): N parallel `kcli create vm`.

kcli boots images that sit in a libvirt pool, so the cached bookworm image is copied once
(untimed) into a pool of this benchmark. kcli's own `usermode` switches to qemu:///session and
forwards SSH on every interface, so instead the VM gets no libvirt NIC (`nets=[]`) and a SLIRP
NIC with a loopback SSH forward through kcli's `qemuextra` (QEMU args): the same NIC as the
floor's. kcli writes its own cloud-init seed with the benchmark key (`keys`); root accepts it.
kcli picks KVM whenever libvirt offers it, and KVM hangs guests on this kind of host, so the
VM is forced to TCG like the others (`virttype=qemu`, `cpumodel=qemu64`, `nested=false`); `rng=true`
gives it the virtio-rng the floor and labdeploy guests have. kcli attaches its cloud-init ISO on
SATA only (not configurable on x86), which the image's cloud kernel does not see (the guest
boots with no seed: hostname `debian`, key refused); the same ISO kcli wrote is therefore also
attached as an IDE CD-ROM through `qemuextra`, as the floor attaches its seed.
Timed: from the `kcli create vm` calls to every VM accepting the key over SSH.
"""

from __future__ import annotations

import os
import shutil
import time
from functools import partial
from pathlib import Path

import libvirt
import peers
from vm_scale_common import CPUS, DISK_GIB, MEMORY_MIB, Bench, Skip, free_ports, parallel, run, wait_all

KCLI = str(peers.KCLI.path() or peers.VENV_BIN / "kcli")
URI = "qemu:///system"
IMAGE = "ldbench-debian12.qcow2"
errors: list[str] = []


def _pool(bench: Bench) -> str:
    return f"{bench.tag}-kcli"


def _home(bench: Bench) -> Path:
    return bench.workdir / "kcli-home"


def available(_bench: Bench) -> None:
    problem = peers.KCLI.missing()
    if problem:
        raise Skip(problem)
    if not shutil.which("xorrisofs") and not shutil.which("genisoimage") and not shutil.which("mkisofs"):
        raise Skip("kcli needs xorrisofs, genisoimage or mkisofs to write its cloud-init ISO")


def _env(bench: Bench) -> dict[str, str]:
    home = _home(bench)
    if not (home / ".kcli" / "config.yml").exists():
        (home / ".kcli").mkdir(parents=True, exist_ok=True)
        (home / ".kcli" / "config.yml").write_text(
            f"default: {{client: local}}\nlocal: {{type: kvm, host: 127.0.0.1, pool: {_pool(bench)}}}\n")
    return {**os.environ, "HOME": str(home)}


def _ensure_pool(bench: Bench) -> None:
    """A dir pool holding the image (copied once, untimed): what kcli needs to boot it."""
    path = Path("/var/lib/libvirt/images") / _pool(bench)
    conn = libvirt.open(URI)
    try:
        if _pool(bench) in conn.listStoragePools():
            return
        path.mkdir(exist_ok=True)
        shutil.copyfile(bench.image, path / IMAGE)
        pool = conn.storagePoolDefineXML(f"<pool type='dir'><name>{_pool(bench)}</name>"
                                         f"<target><path>{path}</path></target></pool>")
        pool.create()
        pool.refresh()
    finally:
        conn.close()


def _create(bench: Bench, name: str, port: int) -> None:
    seed = Path("/var/lib/libvirt/images") / _pool(bench) / f"{name}.ISO"  # kcli's own cloud-init ISO
    extra = (f"-netdev user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22 -device virtio-net-pci,netdev=n0,addr=0x1e "
             f"-drive file={seed},media=cdrom,readonly=on,if=none,id=ci0 -device ide-cd,drive=ci0,bus=ide.1")
    cmd = [KCLI, "create", "vm", "-i", IMAGE, "-P", f"numcpus={CPUS}", "-P", f"memory={MEMORY_MIB}",
           "-P", f"disks=[{DISK_GIB}]", "-P", "nets=[]", "-P", f"qemuextra={extra}",
           "-P", f"keys=[{bench.key}.pub]", "-P", "virttype=qemu", "-P", "cpumodel=qemu64", "-P", "nested=false",
           "-P", "rng=true",
           "-P", "start=true", name]
    try:
        run(cmd, bench.deadline, env=_env(bench))
    except Exception as exc:
        errors.append(f"{name}: {exc}")


def measure(bench: Bench, n: int) -> float:
    _ensure_pool(bench)
    _env(bench)
    names = [f"{bench.tag}-kcli{n}-{i}" for i in range(n)]
    ports = free_ports(n)
    errors.clear()
    try:
        start = time.monotonic()
        parallel([partial(_create, bench, nm, p) for nm, p in zip(names, ports, strict=True)])
        if errors:
            raise RuntimeError("kcli create failed: " + "; ".join(errors)[-1200:])
        return wait_all(ports, bench.key, start + bench.deadline) - start
    finally:
        _delete(bench, names)


def _delete(bench: Bench, names: list[str]) -> None:
    for name in names:
        run([KCLI, "delete", "vm", "-y", name], 120, env=_env(bench), check=False)
    _purge(bench, keep_pool=True)


def _purge(bench: Bench, keep_pool: bool) -> None:
    """Whatever kcli left: domains named after this benchmark, volumes of its pool."""
    conn = libvirt.open(URI)
    try:
        for dom in conn.listAllDomains():
            if dom.name().startswith(f"{bench.tag}-kcli"):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        if _pool(bench) in conn.listStoragePools() + conn.listDefinedStoragePools():
            _purge_pool(conn.storagePoolLookupByName(_pool(bench)), keep_pool)
    finally:
        conn.close()


def _purge_pool(pool: libvirt.virStoragePool, keep_pool: bool) -> None:
    if pool.isActive():
        pool.refresh()
        for vol in pool.listAllVolumes():
            if not keep_pool or vol.name() != IMAGE:
                vol.delete()
    if not keep_pool:
        if pool.isActive():
            pool.destroy()
        pool.undefine()


def cleanup_all(bench: Bench) -> None:
    _purge(bench, keep_pool=False)
    shutil.rmtree(Path("/var/lib/libvirt/images") / _pool(bench), ignore_errors=True)
