"""Downloading an upstream Release for the bundle store: a Producer that verifies before it returns.

    fetcher = Fetcher(mirror_base=mirror_layout("http://files.internal/"))   # or {} for upstream only
    store.ensure(rel.key, fetcher.producer(rel))   # Source("upstream", <the URL it came from>)
    fetcher.fetch(rel, out)                        # the same by hand: writes ``out`` or nothing
    fetcher_for("auto", files="http://files.internal/")   # the lab's bundle.source and mirrors.files
    ensure_release(store, key, fetcher)            # (Artifact, "built" | "cached"), None when no release is known

Sources, in order: the mirror of the release's host (when ``mirror_base`` maps that host, i.e. the
URL's ``host[:port]``, to a base URL: the upstream path is appended to it), then upstream itself
(unless ``upstream=False``). From each source the checksum file comes first, then the download,
both from the same place. The download streams to a ``.part`` file next to ``out`` while it is
hashed, bounded by ``timeout_s`` per socket operation, ``deadline_s`` in all and ``max_bytes``.

Failures (a :class:`FetchError`, or upstream.ChecksumError for a malformed checksum file; both
BundleErrors, exit 4, with the URL and what to do):

- connection refused/reset, timeouts, a cut-off body, HTTP 408/429/5xx: retried with
  :func:`deploy.retry.retry` up to ``attempts`` tries, then the next source;
- another HTTP error (404, 403 ...): the next source at once;
- a checksum mismatch, a download over ``max_bytes``, an archive member that is absolute or
  climbs out with ``..``, a malformed checksum file: final, whatever sources remain.

Nothing is left at ``out`` (nor the ``.part`` file) unless the digest matched the published one;
a ``member`` is then streamed out of the .tar.gz into ``out``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import urlsplit

from deploy.bundle import Artifact, ArtifactKey, BundleError, BundleStore, Outcome, Producer, Source, upstream
from deploy.bundle.upstream import Release
from deploy.retry import Deadline, Interval, RetryTimeout, backoff, retry

__all__ = ["FetchError", "Fetcher", "ensure_release", "fetcher_for", "mirror_layout", "mirror_url"]

MiB = 2**20
CHECKSUM_CAP = MiB  # a checksum file larger than this is not one
_CHUNK = 256 * 1024
_RETRY_STATUS = frozenset({408, 429})


class FetchError(BundleError):
    """An upstream or mirror download failed, or what it gave was refused (never stored)."""


class _Transient(Exception):
    """Worth another try at the same URL."""


class _Unavailable(Exception):
    """This source cannot give the file; the next one may."""


def mirror_url(url: str, mirror_base: Mapping[str, str]) -> str | None:
    """``url`` on the mirror that ``mirror_base`` names for its host, or None."""
    parts = urlsplit(url)
    base = mirror_base.get(parts.netloc)
    if base is None:
        return None
    return base.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")


def mirror_layout(files: str) -> dict[str, str]:
    """``{host: <files>/<host>}`` for every upstream host: a file mirror that keeps each host's paths.

    E.g. ``https://dl.k8s.io/release/v1.36.3/bin/linux/amd64/kubeadm`` is looked for at
    ``<files>/dl.k8s.io/release/v1.36.3/bin/linux/amd64/kubeadm`` (the layout public file
    mirrors such as files.m.daocloud.io use), its ``.sha256`` next to it.
    """
    _require_http(files, "mirrors.files")
    return {host: f"{files.rstrip('/')}/{host}" for host in upstream.HOSTS}


def fetcher_for(source: str, files: str | None = None) -> Fetcher | None:
    """The Fetcher of a lab's ``bundle.source`` (None: never download) and ``mirrors.files``.

    ``auto``: the mirror (when ``files`` is set), then upstream; ``upstream``: upstream only;
    ``build`` and ``offline``: None.
    """
    if source == "auto":
        return Fetcher(mirror_base=mirror_layout(files) if files else {})
    if source == "upstream":
        return Fetcher()
    if source in ("build", "offline"):
        return None
    raise BundleError(f"bundle source {source!r} is not one of auto, upstream, build, offline")


def ensure_release(store: BundleStore, key: ArtifactKey, fetcher: Fetcher) -> tuple[Artifact, Outcome] | None:
    """``key`` from the store, else downloaded into it; None when upstream publishes no release of it.

    A cached artifact is returned without any network traffic (no checksum file is fetched).
    """
    rel = upstream.release(key)
    if rel is None:
        return None
    return store.ensure(key, fetcher.producer(rel))


@dataclass(frozen=True)
class Fetcher:
    """Downloads releases from mirrors and upstream (see the module docstring for the rules)."""

    mirror_base: Mapping[str, str] = field(default_factory=dict)
    upstream: bool = True
    timeout_s: float = 30.0
    deadline_s: float = 900.0
    attempts: int = 4
    max_bytes: int = 1024 * MiB
    interval: Interval = field(default=backoff(0.5, 2.0, 8.0))
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        for host, base in self.mirror_base.items():
            _require_http(base, f"the mirror of {host}")

    def producer(self, rel: Release) -> Producer:
        """A Producer for ``BundleStore.ensure(rel.key, ...)``."""
        return lambda out: self.fetch(rel, out)

    def sources(self, rel: Release) -> list[tuple[str, str]]:
        """(download URL, checksum URL) pairs in the order they are tried."""
        pairs: list[tuple[str, str]] = []
        mirrored, mirrored_sum = mirror_url(rel.url, self.mirror_base), mirror_url(rel.checksum_url, self.mirror_base)
        if mirrored is not None and mirrored_sum is not None:
            pairs.append((mirrored, mirrored_sum))
        if self.upstream:
            pairs.append((rel.url, rel.checksum_url))
        return pairs

    def fetch(self, rel: Release, out: Path, *, expected: str | None = None) -> Source:
        """Write ``rel``'s artifact to ``out``, verified against ``expected`` or its published digest."""
        pairs = self.sources(rel)
        if not pairs:
            raise FetchError(f"{rel.key}: no mirror is set for {urlsplit(rel.url).netloc} and upstream is off",
                             hint="set mirrors.files, or use bundle: {source: auto} to allow upstream")
        failures: list[str] = []
        for url, checksum_url in pairs:
            try:
                return self._from(replace(rel, url=url, checksum_url=checksum_url), out, expected)
            except _Unavailable as exc:
                failures.append(str(exc))
        raise FetchError(
            f"{rel.key}: could not download {rel.filename}: {'; '.join(failures)}",
            hint="check the network or the mirror (mirrors.files), or build it offline: `deploy bundle build`",
        )

    # -- one source ------------------------------------------------------------------------

    def _from(self, rel: Release, out: Path, expected: str | None) -> Source:
        _require_http(rel.url, "a download")
        digest = expected.lower() if expected is not None else self._published(rel)
        part = out.with_name(out.name + ".part")
        try:
            got = self._retry(rel.url, lambda deadline: self._download(rel.url, part, rel.algorithm, deadline))
            if got != digest:
                raise FetchError(
                    f"checksum mismatch for {rel.url}: expected {rel.algorithm} {digest} (from {rel.checksum_url}), "
                    f"got {got}; the download is discarded",
                    hint="the mirror or the transfer is damaged; fix or drop the mirror, or build it offline",
                )
            self._place(rel, part, out)
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        finally:
            part.unlink(missing_ok=True)
        return Source("upstream", rel.url)

    def _published(self, rel: Release) -> str:
        _require_http(rel.checksum_url, "a checksum file")
        data = self._retry(rel.checksum_url, lambda deadline: self._get(rel.checksum_url, CHECKSUM_CAP, deadline))
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FetchError(f"{rel.checksum_url} is not a text checksum file", hint="check the mirror") from exc
        return upstream.expected_digest(rel, text)

    def _place(self, rel: Release, part: Path, out: Path) -> None:
        if rel.member is not None:
            extract_member(part, rel.member, out, rel.url, self.max_bytes)
            return
        if rel.filename.endswith((".tgz", ".tar.gz")):
            extract_member(part, None, out, rel.url, self.max_bytes)  # only checks its members
        os.replace(part, out)
        os.chmod(out, 0o755 if rel.executable else 0o644)

    # -- HTTP ------------------------------------------------------------------------------

    def _retry(self, url: str, attempt: Callable[[Deadline], Any]) -> Any:
        deadline = Deadline.after(self.deadline_s)
        try:
            return retry(lambda: attempt(deadline), describe=f"download of {url}", deadline=deadline,
                         interval=self.interval, retry_on=(_Transient,), attempts=self.attempts, sleep=self.sleep)
        except RetryTimeout as exc:
            raise _Unavailable(f"{url}: {exc.last} ({exc.tries} attempt(s) in {exc.elapsed:.1f} s)") from exc

    def _download(self, url: str, part: Path, algorithm: str, deadline: Deadline) -> str:
        digest = hashlib.new(algorithm)
        with self._open(url, deadline) as response, part.open("wb") as sink:
            for chunk in _chunks(response, url, self.max_bytes, deadline):
                digest.update(chunk)
                sink.write(chunk)
        return digest.hexdigest()

    def _get(self, url: str, cap: int, deadline: Deadline) -> bytes:
        with self._open(url, deadline) as response:
            return b"".join(_chunks(response, url, cap, deadline))

    @contextlib.contextmanager
    def _open(self, url: str, deadline: Deadline) -> Iterator[http.client.HTTPResponse]:
        request = urllib.request.Request(url, headers={"User-Agent": "labdeploy"})
        timeout = max(0.1, min(self.timeout_s, deadline.left()))
        try:
            with _opener().open(request, timeout=timeout) as response:
                yield response
        except urllib.error.HTTPError as exc:
            if exc.code in _RETRY_STATUS or exc.code >= 500:
                raise _Transient(f"HTTP {exc.code} {exc.reason}") from exc
            raise _Unavailable(f"{url}: HTTP {exc.code} {exc.reason}") from exc
        except urllib.error.URLError as exc:
            raise _Transient(f"cannot connect: {exc.reason}") from exc
        except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            raise _Transient(_why(exc)) from exc


def _chunks(response: IO[bytes], url: str, cap: int, deadline: Deadline) -> Iterator[bytes]:
    length = response.headers.get("Content-Length") if hasattr(response, "headers") else None
    if length is not None and length.isdigit() and int(length) > cap:
        raise FetchError(f"{url} is {int(length)} bytes, over the cap of {cap}; refused, nothing kept",
                         hint="raise Fetcher(max_bytes=...) if the release really is that large")
    total = 0
    while True:
        if deadline.passed:
            raise _Transient(f"the download took longer than {deadline.seconds:g} s")
        try:
            chunk = response.read(_CHUNK)
        except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            raise _Transient(_why(exc)) from exc
        if not chunk:
            return
        total += len(chunk)
        if total > cap:
            raise FetchError(f"{url} sent more than the cap of {cap} bytes; refused, nothing kept",
                             hint="raise Fetcher(max_bytes=...) if the release really is that large")
        yield chunk


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out (the server stalled)"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _opener() -> urllib.request.OpenerDirector:
    """http(s) only (no file:, ftp: or data: handlers); proxies from the environment; TLS verified."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(), urllib.request.HTTPHandler(),
                    urllib.request.HTTPSHandler(), urllib.request.HTTPDefaultErrorHandler(),
                    urllib.request.HTTPRedirectHandler(), urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


def _require_http(url: str, what: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise FetchError(f"{what} must be an http(s) URL, got {url!r}", hint="write it as http://host/path/")


# -- archives ---------------------------------------------------------------------------------


def extract_member(archive: Path, member: str | None, out: Path, url: str, cap: int) -> None:
    """Stream ``member`` of the tarball ``archive`` into ``out``; with None, only check every member.

    Any member that is absolute or has a ``..`` part refuses the whole archive (FetchError), as
    does a wanted member that is missing, not a regular file, named twice or over ``cap``.
    """
    found = False
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for info in tar:
                name = _safe_name(info.name, url)
                if member is None or name != member:
                    continue
                if found:
                    raise FetchError(f"{url}: the archive holds {member} twice; refused")
                _copy_member(tar, info, out, url, cap)
                found = True
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise FetchError(f"{url} is not a readable tar archive ({exc}); refused",
                         hint="the mirror may serve another file under that name") from exc
    if member is not None and not found:
        raise FetchError(f"{url} has no member {member}", hint="the release may have changed its layout")


def _safe_name(name: str, url: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise FetchError(f"{url}: archive member {name!r} is absolute or climbs out with '..'; "
                         "the archive is refused and nothing is extracted",
                         hint="a damaged or hostile archive: do not use this mirror or release")
    return "/".join(path.parts)


def _copy_member(tar: tarfile.TarFile, info: tarfile.TarInfo, out: Path, url: str, cap: int) -> None:
    if not info.isreg():
        raise FetchError(f"{url}: archive member {info.name!r} is not a regular file (a link or a folder); refused")
    if info.size > cap:
        raise FetchError(f"{url}: archive member {info.name!r} is {info.size} bytes, over the cap of {cap}")
    source = tar.extractfile(info)
    if source is None:
        raise FetchError(f"{url}: archive member {info.name!r} cannot be read")
    with source, out.open("wb") as sink:
        shutil.copyfileobj(source, sink, _CHUNK)
    os.chmod(out, 0o755 if info.mode & 0o111 else 0o644)
