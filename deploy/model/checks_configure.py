"""Checks of what the configure stage will need: known roles, the Kubernetes apt repository,
runtime files and their sha256, mirror URLs and the ``system:`` settings.

They read the same tables as the deploys (:mod:`deploy.configure.catalog`, pure data), so a
lab that passes them does not stop halfway through configure.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterator
from functools import cache

from deploy.configure.catalog import ROLES, known_roles, mirror_file_names, needed_files, steps_for_roles
from deploy.errors import Problem
from deploy.model.load import LoadedLab, PathKey, did_you_mean, format_path, unknown_name
from deploy.model.problems import field_path, first_written, node_layers, problem
from deploy.model.resolve import ResolvedLab

_URL = re.compile(r"^https?://[^\s/]+")
_HOST_PORT = re.compile(r"^([a-z][a-z0-9+.-]*://)?[A-Za-z0-9.-]+(:\d{1,5})?$")
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(=\S+)?$")
_DOMAIN = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9.:-]+$")
_APT_HINT = ("add kubernetes: {apt: {repo: 'https://pkgs.k8s.io/core:/stable:/v{version}/deb/ /', "
             "key: 'https://pkgs.k8s.io/core:/stable:/v{version}/deb/Release.key'}} (or your mirror of it)")


def _line(loaded: LoadedLab, path: PathKey) -> str:
    line = loaded.positions.locate(path).line
    return f" (line {line})" if line else ""


def check_roles(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    """Every role a node names is one the engine knows; k8s roles need a kubernetes: section."""
    known = known_roles()
    for path, roles in node_layers(resolved, "roles"):
        for index, role in enumerate(roles):
            where = (*path, index)
            if role not in ROLES:
                yield problem(loaded, where, unknown_name("role", role, where, loaded.positions)
                              + did_you_mean(role, known), f"known roles: {', '.join(known)}")
            elif ROLES[role].needs_kubernetes and resolved.lab.kubernetes is None:
                yield problem(loaded, where, f"role {role!r} at {format_path(path)}{_line(loaded, where)} "
                              "needs a kubernetes: section",
                              "add kubernetes: {version: '1.36', control_plane: <group>, apt: {repo: ...}}, "
                              "or drop the role")


def check_ssh_less(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    """A node with ``ssh: false`` has no role that configure or the cluster reach over SSH."""
    for node in resolved.nodes.values():
        over_ssh = [r for r in node.roles if r in ROLES and (ROLES[r].steps or ROLES[r].needs_kubernetes)]
        if node.ssh or not over_ssh:
            continue
        yield problem(loaded, field_path(loaded, resolved, node.name, "ssh"),
                      f"node {node.name}: ssh: false, but role {over_ssh[0]!r} is applied over SSH",
                      f"drop ssh: false, or drop the role{'s' * (len(over_ssh) > 1)} {', '.join(over_ssh)}")


def check_esxi_join(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    """``join:`` is for esxi-host nodes, and names a vsphere provider (its vCenter adds the host)."""
    for node in resolved.nodes.values():
        if node.join is None:
            continue
        where = field_path(loaded, resolved, node.name, "join")
        provider = node.join.provider or node.provider
        spec = resolved.providers.get(provider)
        if "esxi-host" not in node.roles:
            yield problem(loaded, where, f"node {node.name}: join: adds an ESXi host to a cluster, but the node "
                          "has no esxi-host role", "add roles: [esxi-host], or drop join:")
        elif spec is None or spec.kind != "vsphere":
            kinds = ", ".join(sorted(n for n, p in resolved.providers.items() if p.kind == "vsphere")) or "none"
            yield problem(loaded, where, f"node {node.name}: join: provider {provider!r} is not a vsphere provider",
                          f"set join.provider to one of the vsphere providers: {kinds}")


def _steps(resolved: ResolvedLab) -> set[str]:
    return {step for node in resolved.nodes.values() for step in steps_for_roles(node.roles)}


def check_kubernetes_apt(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    k8s = resolved.lab.kubernetes
    if k8s is None or k8s.apt.repo or "k8s_node" not in _steps(resolved):
        return
    from deploy.bundle.provides import supplied_files

    if "kubelet" in supplied_files(resolved):  # bundle.source build|offline: the bundle's binaries
        return
    with_role = sorted(n.name for n in resolved.nodes.values() if "k8s_node" in steps_for_roles(n.roles))
    yield problem(loaded, first_written(loaded, ("kubernetes", "apt"), ("kubernetes",)),
                  f"nodes with a k8s-* role ({', '.join(with_role)}) install kubeadm, kubelet and kubectl "
                  "from an apt repository, but kubernetes.apt.repo is not set", _APT_HINT +
                  " or let the bundle supply them: bundle: {source: build}")


def _runtimes(resolved: ResolvedLab) -> tuple[list[str], PathKey]:
    lab = resolved.lab
    if lab.runtimes is not None:
        return list(lab.runtimes), ("runtimes",)
    return (list(lab.kubernetes.runtimes) if lab.kubernetes else []), ("kubernetes", "runtimes")  # no runc default


def check_runtime_files(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    """Runtimes without a Debian package need mirrors.files and a sha256 of each of their files."""
    mirrors = resolved.lab.mirrors
    runtimes, path = _runtimes(resolved)
    from deploy.bundle.provides import supplied_files  # the bundle imports the model: late, to avoid a cycle

    supplied = supplied_files(resolved)
    needed = [(runtime, item) for runtime, item in needed_files(runtimes, mirrors.checksums)
              if item.name not in supplied]
    which = ", ".join(sorted({name for name, _ in needed}))
    files = [item.name for _, item in needed]
    if needed and not mirrors.files:
        yield problem(loaded, path, f"runtimes {which} have no Debian package: their files "
                      f"({', '.join(files)}) come from mirrors.files, which is not set",
                      f"set mirrors: {{files: http://your-file-mirror/, checksums: {{{files[0]}: <sha256>, ...}}}}")
    missing = [name for name in files if name not in mirrors.checksums]
    if needed and mirrors.files and missing:
        yield problem(loaded, first_written(loaded, ("mirrors", "checksums"), ("mirrors",)),
                      f"mirrors.checksums has no sha256 for {', '.join(missing)} (needed by runtimes {which})",
                      "add mirrors: {checksums: {" + ", ".join(f"{m}: <sha256>" for m in missing)
                      + "}}; `sha256sum FILE` of the mirror's copy gives each")
    yield from _unknown_checksums(loaded, resolved)


def _unknown_checksums(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    valid = mirror_file_names()
    for name in resolved.lab.mirrors.checksums:
        if name not in valid:
            where = ("mirrors", "checksums", name)
            yield problem(loaded, where, unknown_name("mirror file", name, where, loaded.positions)
                          + did_you_mean(name, valid), f"runtimes fetch these files: {', '.join(valid)}")


def check_mirrors(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    mirrors = resolved.lab.mirrors
    for key in ("apt", "files"):
        value = getattr(mirrors, key)
        if value is not None and not _URL.match(value):
            yield problem(loaded, ("mirrors", key), f"mirrors.{key} must be an http(s) URL, got {value!r}",
                          f"write it as http://mirror.internal/{'debian' if key == 'apt' else 'files/'}")
    registry = mirrors.registry
    if registry is not None and not _HOST_PORT.match(registry):
        yield problem(loaded, ("mirrors", "registry"), f"mirrors.registry must be host[:port], got {registry!r}",
                      "write it as registry.internal:5000 (no path)")


@cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def check_system(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    """``system:`` values are well-formed and some node has a role that applies each one."""
    system = resolved.lab.system
    if system.timezone and _zones() and system.timezone not in _zones():
        yield problem(loaded, ("system", "timezone"), f"unknown time zone {system.timezone!r}"
                      + did_you_mean(system.timezone, _zones()), "use an IANA name such as Europe/Berlin or UTC")
    yield from _bad_items(loaded, "ntp", system.ntp, _HOSTNAME, "an NTP server is a host name or address")
    yield from _bad_items(loaded, "packages", system.packages, _PACKAGE,
                          "a Debian package name (optionally name=version), such as jq or curl")
    if system.domain and not _DOMAIN.match(system.domain):
        yield problem(loaded, ("system", "domain"), f"{system.domain!r} is not a DNS domain",
                      "use lower-case labels separated by dots, such as lab.internal")
    yield from _unapplied(loaded, resolved)


def _bad_items(loaded: LoadedLab, key: str, values: list[str], form: re.Pattern[str],
               hint: str) -> Iterator[Problem]:
    for index, value in enumerate(values):
        if not form.match(value):
            yield problem(loaded, ("system", key, index), f"system.{key}[{index}] {value!r} has the wrong form", hint)


def _unapplied(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    system, steps = resolved.lab.system, _steps(resolved)
    wanted = [("timezone", bool(system.timezone), "base", "base, kvm-host or k8s-*", "base"),
              ("ntp", bool(system.ntp), "base", "base, kvm-host or k8s-*", "base"),
              ("packages", bool(system.packages), "runtimes", "containerd, runtimes or k8s-*", "containerd")]
    for key, is_set, step, roles, example in wanted:
        if is_set and step not in steps:
            yield problem(loaded, ("system", key), f"system.{key} is set, but no node has a role that applies it",
                          f"give the nodes one of the roles {roles} (e.g. defaults: {{roles: [{example}]}})")

