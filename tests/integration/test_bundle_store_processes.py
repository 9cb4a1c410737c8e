"""The bundle store across real processes: a SIGKILLed build, two processes ensuring one key."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from deploy.bundle import ArtifactKey, BundleStore, Source
from deploy.bundle.files import safe_name

REPO = Path(__file__).resolve().parents[2]
KEY = ArtifactKey("tool", "1.0")

# argv: root calls-file go-file mode; prints "<outcome> <sha256>"
CHILD = """
import os, subprocess, sys, time
from pathlib import Path
from deploy.bundle import ArtifactKey, BundleStore, Source
root, calls, go, mode = sys.argv[1:5]

def produce(path):
    with open(calls, "a") as handle:
        handle.write(f"{os.getpid()}\\n")
    if mode == "sleep":
        subprocess.run(["sh", "-c", 'sleep 5; echo x > "$1"', "sh", str(path)], check=True)
    else:
        while not os.path.exists(go):
            time.sleep(0.02)
        path.write_bytes(b"payload")
    return Source("build", "test-recipe")

art, outcome = BundleStore(Path(root)).ensure(ArtifactKey("tool", "1.0"), produce, recipe_hash="h1")
print(outcome, art.sha256, flush=True)
"""


def _spawn(root: Path, calls: Path, go: Path, mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), str(calls), str(go), mode],
        cwd=REPO, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def _wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.02)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _someone_waits_on(lock: Path) -> bool:
    if not lock.exists():
        return False
    inode = f":{os.stat(lock).st_ino} "
    return any("->" in line and inode in line for line in Path("/proc/locks").read_text().splitlines())


def test_a_build_killed_mid_produce_leaves_nothing_and_the_next_ensure_completes(tmp_path: Path) -> None:
    root, calls = tmp_path / "bundle", tmp_path / "calls"
    child = _spawn(root, calls, tmp_path / "go", "sleep")
    try:
        _wait_for("the producer to start", lambda: len(_lines(calls)) == 1)
        assert len(os.listdir(root / "tmp")) == 1  # its work folder
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the python child and its sh -c 'sleep 5'
        child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    store = BundleStore(root)
    assert store.list() == []
    assert os.listdir(store.objects) == []

    def produce(path: Path) -> Source:
        subprocess.run(["sh", "-c", 'echo x > "$1"', "sh", str(path)], check=True, timeout=30)
        return Source("build", "test-recipe")

    art, outcome = store.ensure(KEY, produce, recipe_hash="h1")
    assert outcome == "built"
    assert store.list() == [art]
    assert os.listdir(store.objects) == [art.sha256]
    assert os.listdir(root / "tmp") == []  # the dead build's folder was removed
    assert store.verify() == []


def test_two_processes_ensuring_one_key_build_it_once(tmp_path: Path) -> None:
    root, calls, go = tmp_path / "bundle", tmp_path / "calls", tmp_path / "go"
    lock = root / "locks" / f"{safe_name(KEY)}.lock"
    children = [_spawn(root, calls, go, "wait-go") for _ in range(2)]
    try:
        _wait_for("one producer to start", lambda: len(_lines(calls)) == 1)
        _wait_for("the other process to wait on the key lock", lambda: _someone_waits_on(lock))
        go.touch()
        outputs = [child.communicate(timeout=60)[0].split() for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
    assert [child.returncode for child in children] == [0, 0]
    assert sorted(out[0] for out in outputs) == ["built", "cached"]
    assert outputs[0][1] == outputs[1][1]
    assert len(_lines(calls)) == 1
    [art] = BundleStore(root).list()
    assert art.path.read_bytes() == b"payload"
    assert art.source.recipe_hash == "h1"
