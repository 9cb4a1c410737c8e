"""Container runtime installers: Debian packages where they exist; otherwise the bundle's files, or mirror
files with a sha256."""

from __future__ import annotations

from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt, files, server

from deploy.configure.catalog import MirrorFile, RuntimeSpec, runtime, uses_files
from deploy.configure.deploys import OpSink
from deploy.configure.settings import ConfigureSettings


def packages(settings: ConfigureSettings) -> list[str]:
    """Debian packages of every requested runtime (runc always: containerd's default) and the extras."""
    names = ("runc", *settings.runtimes)
    return sorted({pkg for name in names for pkg in runtime(name).packages} | set(settings.extra_packages))


def deploy(ops: OpSink, settings: ConfigureSettings) -> None:
    ops.apt_lists()
    ops.add("packages", apt.packages, packages=packages(settings), no_recommends=True)
    for name in ("runc", *(r for r in settings.runtimes if r != "runc")):
        spec = runtime(name)
        if spec.bundle and all(item.name in settings.bundle_files for item in spec.bundle):
            for item in spec.bundle:
                bundle_put(ops, settings, item, spec.name)
        elif name in settings.runtimes and uses_files(spec, settings.checksums()):
            _files(ops, settings, spec)


def bundle_put(ops: OpSink, settings: ConfigureSettings, item: MirrorFile, what: str) -> OperationMeta:
    """Upload the bundle's copy of ``item`` (unpacked where it says so); pyinfra compares checksums first,
    so a converged node uploads nothing."""
    path, _ = settings.bundle_files[item.name]
    put = ops.add(f"{what}: {item.name} from the bundle", files.put, src=path, dest=item.dest, mode=item.mode)
    if item.unpack_to:
        ops.add(f"{what}: unpack {item.name}", server.shell,
                commands=[f"mkdir -p {item.unpack_to} && tar -xf {item.dest} -C {item.unpack_to}"], _if=put.did_change)
    return put


def _files(ops: OpSink, settings: ConfigureSettings, spec: RuntimeSpec) -> None:
    for item in spec.files:
        fetched = _download(ops, settings, spec, item)
        if item.unpack_to:
            ops.add(
                f"{spec.name}: unpack {item.name}",
                server.shell,
                commands=[f"tar -xf {item.dest} -C {item.unpack_to}"],
                _if=fetched.did_change,
            )
    for link, target in spec.links:
        ops.add(f"{spec.name}: link {link}", files.link, path=link, target=target)


def _download(ops: OpSink, settings: ConfigureSettings, spec: RuntimeSpec, item: MirrorFile) -> OperationMeta:
    if item.name in settings.bundle_files:
        return _from_bundle(ops, settings, spec, item)
    mirror = (settings.mirrors_files or "").rstrip("/")
    parent = item.dest.rsplit("/", 1)[0]
    if item.unpack_to:  # a tarball kept in a cache folder of ours, which pyinfra's download does not make
        ops.add(f"{spec.name}: {parent}", files.directory, path=parent, present=True)
    return ops.add(
        f"{spec.name}: {item.name} from the files mirror",
        files.download,
        src=f"{mirror}/{item.name}",
        dest=item.dest,
        sha256sum=settings.file_checksums[item.name],
        mode=item.mode,
    )


def _from_bundle(ops: OpSink, settings: ConfigureSettings, spec: RuntimeSpec, item: MirrorFile) -> OperationMeta:
    path, _ = settings.bundle_files[item.name]
    return ops.add(f"{spec.name}: {item.name} from the bundle", files.put, src=path, dest=item.dest, mode=item.mode)
