"""``file:`` and ``url:`` images: sha256 checks, clear errors, download with resume.

The url tests talk to a real HTTP server on 127.0.0.1 that honours ``Range`` and can be
told to cut its first response short, as a dropped connection would.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from deploy.errors import ConfigError, ProviderError
from deploy.images import ensure_image
from deploy.images.fetch import url_entry_name
from deploy.model.resolved import ResolvedImage

PAYLOAD = bytes(range(256)) * 4096 * 3  # 3 MiB, not all one byte value


@dataclass
class Server:
    url: str
    payload: bytes
    requests: list[str | None] = field(default_factory=list)  # the Range header of each GET
    cut_next: bool = False  # cut the next full response in half


def _handler(server: Server) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ranged = self.headers.get("Range")
            server.requests.append(ranged)
            if self.path != "/disk.qcow2":
                self.send_error(404)
                return
            start = int(ranged.removeprefix("bytes=").rstrip("-")) if ranged else 0
            body = server.payload[start:]
            self.send_response(206 if ranged else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if server.cut_next and not ranged:
                server.cut_next = False
                body = body[: len(body) // 2]
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    return Handler


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(url="", payload=PAYLOAD)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def url_image(url: str, sha256: str | None = hashlib.sha256(PAYLOAD).hexdigest()) -> ResolvedImage:
    return ResolvedImage(name="remote", source="url", url=url, sha256=sha256)


def test_url_downloads_checks_and_caches_by_sha256(server: Server, tmp_path: Path) -> None:
    messages: list[str] = []
    image = url_image(f"{server.url}/disk.qcow2")
    path = ensure_image(image, tmp_path, messages.append)
    assert path.read_bytes() == PAYLOAD
    assert path.name == f"url-{image.sha256}.qcow2"
    assert any("downloaded" in m for m in messages)
    again = ensure_image(image, tmp_path)
    assert again == path
    assert server.requests == [None]  # the second call was a cache hit


def test_url_resumes_after_a_truncated_download(server: Server, tmp_path: Path) -> None:
    image = url_image(f"{server.url}/disk.qcow2")
    server.cut_next = True
    with pytest.raises(ProviderError, match="connection closed after") as err:
        ensure_image(image, tmp_path)
    part = tmp_path / f"{url_entry_name(image)}.part"
    assert f"a re-run resumes from {part}" in err.value.hint
    assert 0 < part.stat().st_size < len(PAYLOAD)
    have = part.stat().st_size
    messages: list[str] = []
    path = ensure_image(image, tmp_path, messages.append)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [None, f"bytes={have}-"]
    assert any(f"resuming {image.url} at {have} bytes" in m for m in messages)
    assert not part.exists()


def test_url_with_wrong_sha256_names_both_hashes_and_keeps_nothing(server: Server, tmp_path: Path) -> None:
    wrong = "0" * 64
    with pytest.raises(ConfigError) as err:
        ensure_image(url_image(f"{server.url}/disk.qcow2", wrong), tmp_path)
    assert wrong in str(err.value)
    assert hashlib.sha256(PAYLOAD).hexdigest() in str(err.value)
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == []


def test_url_http_error_is_a_provider_error(server: Server, tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="HTTP 404"):
        ensure_image(url_image(f"{server.url}/missing.qcow2"), tmp_path)


def test_url_without_sha256_is_cached_by_url(server: Server, tmp_path: Path) -> None:
    path = ensure_image(url_image(f"{server.url}/disk.qcow2", None), tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert path.name.startswith("url-u")


def test_file_with_matching_sha256_is_used_in_place(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(PAYLOAD)
    image = ResolvedImage(name="local", source="file", path=str(disk), sha256=hashlib.sha256(PAYLOAD).hexdigest())
    assert ensure_image(image, tmp_path / "cache") == disk
    assert len(list((tmp_path / "cache" / "verified").iterdir())) == 1  # remembered: no re-hash next time


def test_file_with_wrong_sha256_names_both_hashes(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"not the image")
    wrong = "ab" * 32
    with pytest.raises(ConfigError) as err:
        ensure_image(ResolvedImage(name="local", source="file", path=str(disk), sha256=wrong), tmp_path)
    text = str(err.value)
    assert str(disk) in text
    assert wrong in text
    assert hashlib.sha256(b"not the image").hexdigest() in text


def test_file_changed_after_a_check_is_checked_again(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(PAYLOAD)
    image = ResolvedImage(name="local", source="file", path=str(disk), sha256=hashlib.sha256(PAYLOAD).hexdigest())
    ensure_image(image, tmp_path)
    disk.write_bytes(PAYLOAD[:-1])
    with pytest.raises(ConfigError, match="but the lab expects"):
        ensure_image(image, tmp_path)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "noble.img"
    with pytest.raises(ConfigError, match=f"file {missing} does not exist"):
        ensure_image(ResolvedImage(name="noble", source="file", path=str(missing)), tmp_path)
