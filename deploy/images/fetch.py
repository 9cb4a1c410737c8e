"""``file:`` and ``url:`` images: check a local image's sha256, download with resume.

A local file is used where it is (never copied); its sha256, when the lab gives one, is
checked and the result remembered for that exact file (path, size, mtime) so a re-run does
not re-read gigabytes. A download goes to ``<entry>.part`` in the cache directory and
continues from where it stopped with an HTTP ``Range`` request; it is renamed into place
only once its sha256 matches.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from deploy.errors import ConfigError, ProviderError
from deploy.images.cache import Progress, entry_lock, sha256_file
from deploy.model.resolved import ResolvedImage

_CHUNK = 1 << 20
_TIMEOUT = 60.0
_REPORT_EVERY = 16 << 20


def _noop(_message: str) -> None:
    """Default progress sink."""


def check_sha256(image: ResolvedImage, where: str, actual: str) -> None:
    """Raise a ConfigError naming both hashes when ``actual`` is not the lab's sha256."""
    expected = (image.sha256 or "").lower()
    if expected and actual != expected:
        raise ConfigError(
            f"image {image.name!r}: {where} has sha256 {actual} but the lab expects {expected}",
            hint="the file is corrupt or a different version: fetch it again, or correct the sha256",
        )


def local_file(image: ResolvedImage, cache_dir: Path, on_progress: Progress = _noop) -> Path:
    """The checked path of a ``file:`` image."""
    path = Path(image.path or "").expanduser()
    if not image.path or not path.is_file():
        raise ConfigError(
            f"image {image.name!r}: file {path} does not exist",
            hint="fix the path under images.<name>.file, or put the image there",
        )
    if image.sha256:
        _check_local_once(image, path.resolve(), cache_dir, on_progress)
    return path.resolve()


def _check_local_once(image: ResolvedImage, path: Path, cache_dir: Path, on_progress: Progress) -> None:
    stat = path.stat()
    identity = f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0{(image.sha256 or '').lower()}"
    marker = cache_dir / "verified" / hashlib.sha256(identity.encode()).hexdigest()
    if marker.exists():
        return
    on_progress(f"checking sha256 of {path} ({stat.st_size >> 20} MiB)")
    check_sha256(image, str(path), sha256_file(path))
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{path}\n")


def url_entry_name(image: ResolvedImage) -> str:
    """The cache file name of a ``url:`` image: by sha256, or by the URL when none is given."""
    url = image.url or ""
    suffix = Path(url.split("?", 1)[0]).suffix[:8] or ".img"
    if image.sha256:
        return f"url-{image.sha256.lower()}{suffix}"
    return f"url-u{hashlib.sha256(url.encode()).hexdigest()[:32]}{suffix}"


def download(image: ResolvedImage, cache_dir: Path, on_progress: Progress = _noop) -> Path:
    """The cached path of a ``url:`` image, downloading (and resuming) it when needed."""
    if not image.url:
        raise ConfigError(f"image {image.name!r}: url is empty", hint="set images.<name>.url")
    name = url_entry_name(image)
    final = cache_dir / name
    with entry_lock(cache_dir, name):
        if final.exists():
            return final
        part = cache_dir / f"{name}.part"
        _fetch_to(image.url, part, on_progress)
        actual = sha256_file(part)
        try:
            check_sha256(image, f"the download of {image.url}", actual)
        except ConfigError:
            part.unlink()
            raise
        os.replace(part, final)
    on_progress(f"downloaded {image.url} ({final.stat().st_size >> 20} MiB, sha256 {actual[:12]}…)")
    return final


def _fetch_to(url: str, part: Path, on_progress: Progress) -> None:
    """Download ``url`` into ``part``, continuing after the bytes already there."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "labdeploy"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
            resumed = have > 0 and response.status == 206
            total = _total_size(response.headers.get("Content-Length"), have if resumed else 0)
            if have:
                on_progress(f"resuming {url} at {have} bytes" if resumed else f"restarting {url}")
            with part.open("ab" if resumed else "wb") as out:
                done = _copy(response, out, done=have if resumed else 0, total=total, url=url, on_progress=on_progress)
        if total is not None and done < total:
            raise OSError(f"the connection closed after {done} of {total} bytes")
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            return  # the partial file is already complete; the sha256 check decides
        raise ProviderError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ProviderError(
            f"downloading {url} failed: {reason}",
            hint=f"check the URL and the network; a re-run resumes from {part}",
        ) from exc


def _total_size(length: str | None, offset: int) -> int | None:
    return int(length) + offset if length and length.isdigit() else None


def _copy(source: BinaryIO, out: BinaryIO, *, done: int, total: int | None, url: str, on_progress: Progress) -> int:
    """Copy the body to ``out``; returns the byte count of the file so far."""
    next_report = done + _REPORT_EVERY
    while chunk := source.read(_CHUNK):
        out.write(chunk)
        done += len(chunk)
        if done >= next_report:
            of_total = f" of {total >> 20} MiB" if total else ""
            on_progress(f"downloading {url}: {done >> 20} MiB{of_total}")
            next_report = done + _REPORT_EVERY
    return done
