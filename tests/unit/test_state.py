"""State store: atomic writes under SIGKILL, the lab lock between real processes, stale locks."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from deploy.errors import StateError
from deploy.state import LabState, LockInfo, ResourceRecord, RunRecord, StateStore

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_round_trip(tmp_path: Path) -> None:
    store = StateStore(tmp_path, "lab1")
    assert store.load().resources == {}
    state = LabState("lab1")
    state.resources["machine:a"] = ResourceRecord("machine:a", "machine", "h1", "ok", "local", {"x": 1})
    state.runs.append(RunRecord("r1", "up", 1.0, 2.0, "ok", 3))
    store.save(state)
    assert store.load() == state
    assert (tmp_path / "state.json").stat().st_mode & 0o777 == 0o600


def test_unreadable_state_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(StateError, match="cannot be read") as info:
        StateStore(tmp_path, "lab1").load()
    assert "move" in info.value.hint


def test_newer_state_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps({"version": 99, "lab": "lab1"}))
    with pytest.raises(StateError, match="newer labdeploy"):
        StateStore(tmp_path, "lab1").load()


SAVER = """
import sys
from pathlib import Path
from deploy.state import LabState, ResourceRecord, StateStore
store = StateStore(Path(sys.argv[1]), "lab1")
state = LabState("lab1")
store.save(state)  # imports done: from here on the child only writes
print("ready", flush=True)
i = 0
while True:
    i += 1
    state.resources[f"machine:n{i}"] = ResourceRecord(f"machine:n{i}", "machine", "x" * 500, "ok")
    store.save(state)
"""


def test_state_file_always_parses_after_sigkill(tmp_path: Path) -> None:
    """A writer killed at random instants leaves the old or the new state, never a torn file."""
    rng = random.Random(7)
    sizes = []
    for _ in range(12):
        child = _python(SAVER, str(tmp_path))
        assert child.stdout
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.01, 0.25))
        child.send_signal(signal.SIGKILL)
        child.wait()
        if (tmp_path / "state.json").exists():
            state = StateStore(tmp_path, "lab1").load()  # raises StateError if torn
            sizes.append(len(state.resources))
    assert len(sizes) == 12
    assert max(sizes) > 1


HOLDER = """
import sys, time
from pathlib import Path
from deploy.state import StateStore
with StateStore(Path(sys.argv[1]), "lab1").locked("up test"):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_lock_between_two_processes(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(HOLDER), str(tmp_path)], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout
        assert holder.stdout.readline().strip() == "locked"
        store = StateStore(tmp_path, "lab1")
        with pytest.raises(StateError) as info, store.locked("up other"):
            pass
        assert f"pid {holder.pid} on {socket.gethostname()}" in info.value.message
        assert "up test" in info.value.message
        assert str(store.lock_path) in info.value.hint
    finally:
        assert holder.stdin
        holder.stdin.close()
        holder.wait(timeout=10)
    with StateStore(tmp_path, "lab1").locked("up other") as mine:  # released when the holder ended
        assert mine.pid == os.getpid()
    assert not (tmp_path / "lock").exists()


def test_lock_held_in_the_same_process_twice_is_refused(tmp_path: Path) -> None:
    store = StateStore(tmp_path, "lab1")
    with store.locked("first"), pytest.raises(StateError, match="locked by pid"), store.locked("second"):
        pass


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    store = StateStore(tmp_path, "lab1")
    stale = LockInfo(_dead_pid(), socket.gethostname(), time.time() - 60, "up killed")
    (tmp_path / "lock").write_text(json.dumps(stale.__dict__))
    with store.locked("up new") as info:
        holder = store.holder()
        assert holder is not None
        assert holder.pid == os.getpid() == info.pid


def test_lock_of_another_host_is_not_taken_over(tmp_path: Path) -> None:
    store = StateStore(tmp_path, "lab1")
    other = LockInfo(_dead_pid(), "some-other-host", time.time(), "up elsewhere")
    (tmp_path / "lock").write_text(json.dumps(other.__dict__))
    with pytest.raises(StateError, match="some-other-host"), store.locked("up"):
        pass
    assert (tmp_path / "lock").exists()


def test_torn_lock_file_is_removed_only_when_old(tmp_path: Path) -> None:
    store = StateStore(tmp_path, "lab1")
    (tmp_path / "lock").write_text("{")
    with pytest.raises(StateError, match="another run"), store.locked("up"):
        pass
    old = time.time() - 60
    os.utime(tmp_path / "lock", (old, old))
    with store.locked("up"):
        assert store.holder() is not None
