"""Fetching releases over real HTTP into a real BundleStore: a loopback http.server this test starts.

Nothing leaves loopback: every Fetcher here either maps the release's host to a loopback mirror
with ``upstream=False``, or has a release whose own URL is on loopback.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from deploy.bundle import ArtifactKey, BundleStore, catalog, upstream
from deploy.bundle.build import Wanted, build
from deploy.bundle.fetch import Fetcher, FetchError, ensure_release, mirror_layout

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bundle" / "upstream"
CRICTL = ArtifactKey("crictl", "v1.37.0")


@dataclass
class Server:
    """A loopback file server over ``root``; ``/stall/...`` paths hang, ``failures`` answer 503 first."""

    root: Path
    base: str = ""
    requests: list[str] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)

    def put(self, url: str, data: bytes) -> Path:
        """Serve ``data`` where a file mirror keeps ``url`` (``<host>/<path>``); return the file."""
        parts = urlsplit(url)
        path = self.root / parts.netloc / parts.path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def mirror(self) -> Fetcher:
        return Fetcher(mirror_base=mirror_layout(self.base), upstream=False, timeout_s=5, deadline_s=20)


class Handler(SimpleHTTPRequestHandler):
    state: Server

    def do_GET(self) -> None:
        self.state.requests.append(self.path)
        left = self.state.failures.get(self.path, 0)
        if left:
            self.state.failures[self.path] = left - 1
            self.send_error(503, "try again")
            return
        if self.path.startswith("/stall/headers/"):
            self.state.release.wait(30)
            return
        if self.path.startswith("/stall/body/"):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            self.state.release.wait(30)
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(root: Path) -> Iterator[Server]:
    state = Server(root)
    handler = type("BoundHandler", (Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    httpd.daemon_threads = True
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "www"
    root.mkdir()
    yield from _serve(root)


@pytest.fixture
def recorded() -> Iterator[Server]:
    """The recorded fixtures themselves, served as a file mirror."""
    yield from _serve(FIXTURES)


@pytest.fixture
def store(tmp_path: Path) -> BundleStore:
    return BundleStore(tmp_path / "bundle")


def _tarball(members: dict[str, tuple[bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, (data, mode) in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _sha(data: bytes, algorithm: str = "sha256") -> str:
    return hashlib.new(algorithm, data).hexdigest()


def _publish(server: Server, rel: upstream.Release, data: bytes, digest: str | None = None) -> None:
    server.put(rel.url, data)
    server.put(rel.checksum_url, f"{digest or _sha(data, rel.algorithm)}  {rel.filename}\n".encode())


def _release(key: ArtifactKey) -> upstream.Release:
    rel = upstream.release(key)
    assert rel is not None
    return rel


def _nothing_stored(store: BundleStore) -> None:
    assert store.list() == []
    assert list(store.objects.iterdir()) == []
    assert list((store.root / "tmp").iterdir()) == []


# -- good downloads ------------------------------------------------------------------------


def test_a_tarball_member_from_a_mirror_lands_in_the_store(server: Server, store: BundleStore) -> None:
    crictl = b"\x7fELF crictl stand-in\n"
    rel = _release(CRICTL)
    _publish(server, rel, _tarball({"LICENSE": (b"text", 0o644), "crictl": (crictl, 0o755)}))
    art, outcome = store.ensure(CRICTL, server.mirror().producer(rel), expect_sha256=_sha(crictl))
    mirrored = f"{server.base}/github.com{urlsplit(rel.url).path}"
    assert (outcome, art.source.kind, art.source.ref) == ("built", "upstream", mirrored)
    assert art.path.read_bytes() == crictl
    assert art.path.stat().st_mode & 0o111  # executable as in the tarball
    assert store.ensure(CRICTL, server.mirror().producer(rel), expect_sha256=_sha(crictl))[1] == "cached"
    assert server.requests == [urlsplit(mirrored).path + ".sha256", urlsplit(mirrored).path]


@pytest.mark.parametrize(("name", "version"), [("kubeadm", "v1.36.3"), ("runsc", "20251103.0")])
def test_recorded_checksum_files_verify_the_recorded_downloads(
    recorded: Server, store: BundleStore, name: str, version: str
) -> None:
    key = ArtifactKey(name, version)
    rel = _release(key)
    found = ensure_release(store, key, recorded.mirror())
    assert found is not None
    art, outcome = found
    assert outcome == "built"
    parts = urlsplit(rel.url)
    stand_in = (FIXTURES / parts.netloc / parts.path.lstrip("/")).read_bytes()
    assert art.sha256 == _sha(stand_in)
    assert art.source.ref == f"{recorded.base}/{parts.netloc}{parts.path}"


def test_the_cni_plugins_archive_is_kept_whole_and_not_executable(server: Server, store: BundleStore) -> None:
    key = ArtifactKey("cni-plugins", "v1.10.0")
    rel = _release(key)
    tgz = _tarball({"./bridge": (b"bridge", 0o755), "./loopback": (b"loopback", 0o755)})
    _publish(server, rel, tgz)
    art, _ = store.ensure(key, server.mirror().producer(rel), expect_sha256=_sha(tgz))
    assert art.path.read_bytes() == tgz
    assert not art.path.stat().st_mode & 0o111


def test_a_failing_mirror_falls_back_to_upstream(server: Server, store: BundleStore) -> None:
    """The mirror answers 404; the release's own (here: loopback) URL then gives it."""
    real = _release(ArtifactKey("kubeadm", "v1.36.3"))
    path = urlsplit(real.url).path
    rel = replace(real, url=f"{server.base}{path}", checksum_url=f"{server.base}{path}.sha256")
    data = b"kubeadm stand-in\n"
    (server.root / path.lstrip("/")).parent.mkdir(parents=True)
    (server.root / path.lstrip("/")).write_bytes(data)
    (server.root / (path.lstrip("/") + ".sha256")).write_text(_sha(data))
    fetcher = Fetcher(mirror_base={urlsplit(server.base).netloc: f"{server.base}/empty-mirror"}, timeout_s=5)
    art, _ = store.ensure(rel.key, fetcher.producer(rel))
    assert art.source.ref == rel.url
    assert server.requests == [f"/empty-mirror{path}.sha256", f"{path}.sha256", path]


def test_a_503_is_retried_through_deploy_retry(server: Server, store: BundleStore) -> None:
    rel = _release(CRICTL)
    crictl = b"crictl"
    _publish(server, rel, _tarball({"crictl": (crictl, 0o755)}))
    path = f"/github.com{urlsplit(rel.url).path}"
    server.failures[path] = 2
    fetcher = replace(server.mirror(), interval=0.05)
    art, _ = store.ensure(CRICTL, fetcher.producer(rel))
    assert art.path.read_bytes() == crictl
    assert server.requests.count(path) == 3


# -- refusals ------------------------------------------------------------------------------


def test_a_checksum_mismatch_raises_and_leaves_nothing(server: Server, store: BundleStore, tmp_path: Path) -> None:
    key = ArtifactKey("kubeadm", "v1.36.3")
    rel = _release(key)
    real, tampered = _sha(b"real kubeadm\n"), _sha(b"tampered kubeadm\n")
    server.put(rel.url, b"tampered kubeadm\n")
    server.put(rel.checksum_url, real.encode())
    with pytest.raises(FetchError, match=r"checksum mismatch for http://127\.0\.0\.1:") as info:
        store.ensure(key, server.mirror().producer(rel))
    message = info.value.message
    assert f"expected sha256 {real}" in message
    assert f"got {tampered}; the download is discarded" in message
    _nothing_stored(store)
    out = tmp_path / "by-hand"
    out.mkdir()
    with pytest.raises(FetchError, match="checksum mismatch"):
        server.mirror().fetch(rel, out / "kubeadm")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("evil", ["../crictl", "bin/../../crictl", "/crictl"])
def test_a_member_that_climbs_out_is_refused(server: Server, store: BundleStore, tmp_path: Path, evil: str) -> None:
    rel = _release(CRICTL)
    _publish(server, rel, _tarball({evil: (b"evil", 0o755), "crictl": (b"crictl", 0o755)}))
    with pytest.raises(FetchError, match=r"is absolute or climbs out with '\.\.'; the archive is refused"):
        store.ensure(CRICTL, server.mirror().producer(rel))
    _nothing_stored(store)
    assert not (store.root / "crictl").exists()
    assert not (tmp_path / "crictl").exists()


def test_an_unsafe_member_after_the_wanted_one_removes_what_was_extracted(server: Server, tmp_path: Path) -> None:
    rel = _release(CRICTL)
    _publish(server, rel, _tarball({"crictl": (b"crictl", 0o755), "../evil": (b"evil", 0o644)}))
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(FetchError, match=r"'\.\./evil' is absolute or climbs out"):
        server.mirror().fetch(rel, work / "crictl")
    assert list(work.iterdir()) == []
    assert not (tmp_path / "evil").exists()


def test_a_wanted_member_that_is_a_link_is_refused(server: Server, store: BundleStore) -> None:
    rel = _release(CRICTL)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        link = tarfile.TarInfo("crictl")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    _publish(server, rel, buffer.getvalue())
    with pytest.raises(FetchError, match="not a regular file"):
        store.ensure(CRICTL, server.mirror().producer(rel))
    _nothing_stored(store)


def test_a_download_over_the_size_cap_is_refused(server: Server, store: BundleStore) -> None:
    key = ArtifactKey("kubeadm", "v1.36.3")
    rel = _release(key)
    _publish(server, rel, b"k" * 5000)
    with pytest.raises(FetchError, match="is 5000 bytes, over the cap of 1000"):
        store.ensure(key, replace(server.mirror(), max_bytes=1000).producer(rel))
    _nothing_stored(store)


def test_nothing_anywhere_names_every_url_tried(server: Server, store: BundleStore) -> None:
    rel = _release(ArtifactKey("kubeadm", "v1.36.3"))
    with pytest.raises(FetchError, match=r"could not download kubeadm: http://127\.0\.0\.1:\d+/dl\.k8s\.io/.*HTTP 404"):
        store.ensure(rel.key, server.mirror().producer(rel))
    _nothing_stored(store)


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_stalled_server_hits_the_timeout(server: Server, store: BundleStore, where: str) -> None:
    real = _release(ArtifactKey("kubeadm", "v1.36.3"))
    path = f"/stall/{where}{urlsplit(real.url).path}"
    rel = replace(real, url=f"{server.base}{path}", checksum_url=f"{server.base}/sum.sha256")
    (server.root / "sum.sha256").write_text(_sha(b"never sent"))
    fetcher = Fetcher(timeout_s=0.5, attempts=2, interval=0.1, deadline_s=10)
    start = time.monotonic()
    with pytest.raises(FetchError, match=r"timed out \(the server stalled\) \(2 attempt\(s\)") as info:
        store.ensure(rel.key, fetcher.producer(rel))
    assert time.monotonic() - start < 5
    assert rel.url in info.value.message
    assert server.requests.count(path) == 2
    _nothing_stored(store)


# -- bundle.source auto | upstream through deploy.bundle.build -------------------------------------


def test_auto_downloads_what_a_mirror_has_and_builds_what_it_lacks(server: Server, store: BundleStore) -> None:
    crictl = b"\x7fELF crictl from the mirror\n"
    _publish(server, _release(CRICTL), _tarball({"crictl": (crictl, 0o755)}))
    events: list[dict[str, Any]] = []
    want = Wanted([catalog.crictl(), catalog.pause()])  # pause has no upstream release: always built
    lines = build(want, store, fetcher=server.mirror(), fallback=True, on_event=events.append)
    assert [(line.key.name, line.outcome) for line in lines] == [("crictl", "fetched"), ("pause", "built")]
    got = store.get(CRICTL)
    assert got is not None
    assert (got.source.kind, got.path.read_bytes()) == ("upstream", crictl)
    assert [line.outcome for line in build(want, store, fetcher=server.mirror())] == ["cached", "cached"]


def test_a_failed_download_falls_back_to_the_recipe_only_with_auto(server: Server, tmp_path: Path) -> None:
    rel = _release(CRICTL)
    _publish(server, rel, _tarball({"crictl": (b"tampered", 0o755)}), digest="0" * 64)
    recipe = catalog.crictl()
    strict = build(Wanted([recipe]), BundleStore(tmp_path / "a"), fetcher=server.mirror(), fallback=False)
    assert strict[0].outcome == "failed"
    assert "checksum mismatch" in strict[0].error
    events: list[dict[str, Any]] = []
    auto_store = BundleStore(tmp_path / "b")
    lines = build(Wanted([recipe]), auto_store, fetcher=server.mirror(), fallback=True, on_event=events.append)
    assert lines[0].outcome == "built"  # the real Go build (a warm relink on this machine)
    assert [e["status"] for e in events] == ["started", "fallback", "built"]
    built = auto_store.get(CRICTL)
    assert built is not None
    assert built.source.kind == "build"
