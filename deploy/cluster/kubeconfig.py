"""The lab's admin kubeconfig: kubeadm's ``admin.conf`` made usable from the host, kept 0600.

    localize(admin_conf, lab, server)   admin.conf renamed after the lab (cluster ``<lab>``, user
                                        ``<lab>-admin``, context ``<lab>``), server set to the host's
                                        loopback forward of the API server
    kubeconfig_path(state_dir)          where the lab keeps it: ``<state_dir>/kubeconfig``
    write(state_dir, text)              atomic, mode 0600 from the first byte
    merge(source, target, name)         add or replace the lab's cluster, user and context in another
                                        kubeconfig (``~/.kube/config``), every other entry untouched
    require(state_dir, lab_file)        the path, or :class:`NoKubeconfig` when the cluster is not up yet

TLS verification stays on: the API server certificate carries 127.0.0.1 in its SANs (the kubeadm
render adds it), so the loopback server name needs no ``tls-server-name`` and no insecure flag.

Secrets: the client key (and a token, if a kubeconfig carries one) is registered with
:data:`deploy.secrets.REDACTOR` as soon as it is read, and no error message here quotes a
document: YAML errors are reported by line and column only.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
from pathlib import Path
from typing import Any

import yaml

from deploy.atomic import atomic_write
from deploy.errors import ConfigError, StageError, StateError
from deploy.secrets import REDACTOR

FILE_NAME = "kubeconfig"
SECRET_FIELDS = ("client-key-data", "token")
_LISTS = ("clusters", "users", "contexts")


class NoKubeconfig(StateError):
    """The lab has no admin kubeconfig yet: its cluster has not been bootstrapped."""


class KubeconfigFileError(ConfigError):
    """A kubeconfig to merge into (``~/.kube/config``, ``--into``) cannot be read or is not one."""


def kubeconfig_path(state_dir: Path) -> Path:
    """Where the lab's admin kubeconfig lives (``deploy verify`` reads it from here)."""
    return state_dir / FILE_NAME


def default_target() -> Path:
    """The kubeconfig ``--merge`` writes to when none is named: ``~/.kube/config``."""
    return Path.home() / ".kube" / "config"


def localize(admin_conf: str, lab: str, server: str) -> str:
    """kubeadm's admin.conf with cluster, user and context named after ``lab`` and ``server`` set.

    Certificate authority data and client certificate/key are kept byte for byte; the key is
    registered for redaction before anything else can fail.
    """
    doc = _parse(admin_conf, lambda msg: StageError("cluster", f"admin.conf from kubeadm {msg}"))
    problem = _single_problem(doc)
    if problem:
        raise StageError("cluster", f"admin.conf from kubeadm is not a kubeconfig with exactly one cluster and "
                                    f"one user: {problem}",
                         hint="check /etc/kubernetes/admin.conf on the first control-plane node")
    if not server.startswith("https://"):
        raise StageError("cluster", f"the API server address for the kubeconfig must be https://HOST:PORT, "
                                    f"not {server!r}")
    cluster = dict(doc["clusters"][0]["cluster"])
    user = dict(doc["users"][0]["user"])
    _register(user)
    cluster["server"] = server
    out = {"apiVersion": "v1", "kind": "Config", "preferences": {},
           "clusters": [{"name": lab, "cluster": cluster}],
           "users": [{"name": f"{lab}-admin", "user": user}],
           "contexts": [{"name": lab, "context": {"cluster": lab, "user": f"{lab}-admin"}}],
           "current-context": lab}
    return _dump(out)


def write(state_dir: Path, text: str) -> Path:
    """Write the lab's kubeconfig atomically, mode 0600 (never readable by others, not even briefly)."""
    path = kubeconfig_path(state_dir)
    atomic_write(path, text.encode("utf-8"), 0o600)
    return path


def require(state_dir: Path, lab_file: Path) -> Path:
    """The lab's kubeconfig path, or :class:`NoKubeconfig` saying how to make one."""
    path = kubeconfig_path(state_dir)
    if not path.is_file():
        raise NoKubeconfig(f"lab {lab_file} has no kubeconfig yet ({path} does not exist)",
                           hint=f"`deploy up {lab_file}` bootstraps the cluster first")
    return path


def merge(source: Path, target: Path, name: str) -> None:
    """Add (or replace) the cluster, user and context of lab ``name`` from ``source`` into ``target``.

    Every other entry and key of ``target`` is kept as it was; its current context is set to the
    lab only when it had none. A missing target is created (folder 0700, file 0600); an unreadable
    or invalid one is an error naming it, never overwritten.
    """
    entries = _lab_entries(source, name)
    target = target.resolve() if target.is_symlink() else target
    doc = _read_target(target)
    for key, entry in zip(_LISTS, entries, strict=True):
        _put(doc.setdefault(key, []), entry)
    if not doc.get("current-context"):
        doc["current-context"] = name
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(target, _dump(doc).encode("utf-8"), 0o600)


def current_context(target: Path) -> str:
    """The current context of a kubeconfig that :func:`merge` wrote (for the CLI's message)."""
    return str(_read_target(target).get("current-context") or "")


# --- helpers -------------------------------------------------------------------------------


def _parse(text: str, error: Any) -> Any:
    """YAML to data; on a syntax error only the position is told (the text holds a private key)."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise error(f"is not valid YAML{where}") from None
    except yaml.YAMLError:
        raise error("is not valid YAML") from None


def _single_problem(doc: Any) -> str:
    """Why ``doc`` is not a kubeconfig with exactly one cluster and one user ('' when it is)."""
    if not isinstance(doc, dict):
        return "the document is not a mapping"
    if doc.get("kind") != "Config":
        return f"kind is {doc.get('kind')!r}, not 'Config'"
    for key, inner in (("clusters", "cluster"), ("users", "user")):
        items = doc.get(key)
        if not isinstance(items, list) or len(items) != 1:
            count = len(items) if isinstance(items, list) else 0
            return f"it has {count} {key}"
        if not isinstance(items[0], dict) or not isinstance(items[0].get(inner), dict):
            return f"its {key} entry has no {inner!r} mapping"
    if "server" not in doc["clusters"][0]["cluster"]:
        return "its cluster has no server"
    return ""


def _register(user: dict[str, Any]) -> None:
    """Mask the user's secrets in every later log line: as written (base64) and decoded."""
    for field in SECRET_FIELDS:
        value = user.get(field)
        if not isinstance(value, str) or not value:
            continue
        REDACTOR.add(value)
        if field.endswith("-data"):
            with contextlib.suppress(binascii.Error, UnicodeDecodeError):
                REDACTOR.add(base64.b64decode(value, validate=True).decode("utf-8"))


def _lab_entries(source: Path, name: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The lab's cluster, user and context entries of ``source`` (a file :func:`write` made)."""
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise StateError(f"cannot read the lab's kubeconfig {source}: {exc.strerror}") from None
    doc = _parse(text, lambda msg: StateError(f"the lab's kubeconfig {source} {msg}"))
    context = _named(doc, "contexts", name)
    ref = context.get("context") if context else None
    cluster = _named(doc, "clusters", ref.get("cluster")) if isinstance(ref, dict) else None
    user = _named(doc, "users", ref.get("user")) if isinstance(ref, dict) else None
    if not (cluster and user and context):
        raise StateError(f"the lab's kubeconfig {source} has no complete context {name!r} (cluster, user)",
                         hint="`deploy up` fetches it again from the cluster")
    if isinstance(user.get("user"), dict):
        _register(user["user"])
    return copy.deepcopy(cluster), copy.deepcopy(user), copy.deepcopy(context)


def _named(doc: Any, key: str, name: Any) -> dict[str, Any] | None:
    items = doc.get(key) if isinstance(doc, dict) else None
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get("name") == name:
            return item
    return None


def _read_target(target: Path) -> dict[str, Any]:
    """The kubeconfig to merge into (empty when it does not exist); an error naming it if it is bad."""
    fix = f"repair or move {target} aside (or merge elsewhere with --into PATH)"
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        return _empty()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise KubeconfigFileError(f"cannot read kubeconfig {target}: {reason}", hint=fix) from None
    doc = _parse(text, lambda msg: KubeconfigFileError(f"kubeconfig {target} {msg}", hint=fix))
    if doc is None:  # an empty file is an empty kubeconfig (as kubectl reads it)
        return _empty()
    bad = _target_problem(doc)
    if bad:
        raise KubeconfigFileError(f"kubeconfig {target} is not a kubeconfig: {bad}", hint=fix)
    assert isinstance(doc, dict)
    return doc


def _empty() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Config", "preferences": {}, "clusters": [], "users": [],
            "contexts": [], "current-context": ""}


def _target_problem(doc: Any) -> str:
    if not isinstance(doc, dict):
        return "the document is not a mapping"
    if doc.get("kind", "Config") != "Config":
        return f"kind is {doc.get('kind')!r}, not 'Config'"
    for key in _LISTS:
        items = doc.get(key)
        if items is not None and not (isinstance(items, list) and all(isinstance(i, dict) for i in items)):
            return f"{key} is not a list of entries"
    return ""


def _put(items: list[Any], entry: dict[str, Any]) -> None:
    """Replace the entry of the same name in place (order kept), or append it."""
    for i, item in enumerate(items):
        if item.get("name") == entry["name"]:
            items[i] = entry
            return
    items.append(entry)


def _dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
