"""State store: atomic writes under SIGKILL, the lab lock (flock) between real processes."""

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
    state.resources[f"machine:n{i % 8}"] = ResourceRecord(f"machine:n{i % 8}", "machine", str(i), "ok",
                                                         outputs={"blob": "x" * 400_000})
    store.save(state)
"""


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_kill_during_save_leaves_a_readable_state_and_the_next_save_no_tmp(tmp_path: Path) -> None:
    """A writer SIGKILLed at random instants leaves the old or the new state, never a torn file,
    and the temp file it could not remove is removed by the next save."""
    rng = random.Random(7)
    loaded, left_behind = [], 0
    kills = 0
    while kills < 20 or (left_behind == 0 and kills < 60):  # bounded; until a kill hit mid-write
        kills += 1
        child = _python(SAVER, str(tmp_path))
        assert child.stdout
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.01, 0.2))
        child.send_signal(signal.SIGKILL)
        child.wait()
        state = StateStore(tmp_path, "lab1").load()  # raises StateError if torn
        loaded.append(len(state.resources))
        left_behind += bool(_temps(tmp_path))
    assert max(loaded) > 1
    assert left_behind >= 1, "no kill landed during a write: the cleanup was not exercised"
    StateStore(tmp_path, "lab1").save(state)
    assert _temps(tmp_path) == []
    assert StateStore(tmp_path, "lab1").load() == state


def test_save_removes_only_temp_files_of_dead_writers(tmp_path: Path) -> None:
    dead = tmp_path / f".state.json.{_dead_pid()}.0badcafe.tmp"
    live = tmp_path / f".state.json.{os.getppid()}.0badcafe.tmp"
    foreign = tmp_path / ".state.json.tmp"  # not a name deploy.atomic makes
    for path in (dead, live, foreign):
        path.write_text("{")
    StateStore(tmp_path, "lab1").save(LabState("lab1"))
    assert not dead.exists()
    assert live.exists()
    assert foreign.exists()


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
        seen = store.holder()
        assert seen is not None
        assert (seen.pid, seen.command) == (holder.pid, "up test")
    finally:
        assert holder.stdin
        holder.stdin.close()
        holder.wait(timeout=10)
    store = StateStore(tmp_path, "lab1")
    assert store.holder() is None
    with store.locked("up other") as mine:  # released when the holder ended
        assert mine.pid == os.getpid()
        assert store.holder() == mine
    assert store.holder() is None
    assert (tmp_path / "lock").read_text() == ""  # truncated on release, never unlinked


def test_lock_held_in_the_same_process_twice_is_refused(tmp_path: Path) -> None:
    store = StateStore(tmp_path, "lab1")
    with store.locked("first"), pytest.raises(StateError, match="locked by pid"), store.locked("second"):
        pass


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_sigkilled_holder_releases_the_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(HOLDER), str(tmp_path)], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout
    assert holder.stdout.readline().strip() == "locked"
    store = StateStore(tmp_path, "lab1")
    seen = store.holder()
    assert seen is not None
    assert seen.pid == holder.pid
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    assert (tmp_path / "lock").read_text()  # the dead holder's record is still in the file ...
    assert store.holder() is None  # ... but nobody holds the lock
    with store.locked("up after kill") as mine:
        assert store.holder() == mine


def test_what_an_unlocked_lock_file_says_does_not_matter(tmp_path: Path) -> None:
    """Leftovers of older versions, other hosts or torn writes: only the flock decides."""
    store = StateStore(tmp_path, "lab1")
    for text in ("{", json.dumps(LockInfo(_dead_pid(), "some-other-host", time.time(), "up").__dict__),
                 json.dumps(LockInfo(os.getppid(), socket.gethostname(), time.time(), "up").__dict__)):
        (tmp_path / "lock").write_text(text)
        assert store.holder() is None
        with store.locked("up new") as info:
            assert store.holder() == info


CONTENDER = """
import os, sys, time
from pathlib import Path
from deploy.errors import StateError
from deploy.state import StateStore
root = Path(sys.argv[1])
store = StateStore(root, "lab1")
print("ready", flush=True)
sys.stdin.readline()  # start together
held = refused = overlaps = 0
for _ in range(300):
    try:
        with store.locked(f"contender {os.getpid()}"):
            try:
                fd = os.open(root / "inside", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                overlaps += 1
            else:
                os.close(fd)
                time.sleep(0.0005)
                os.unlink(root / "inside")
            held += 1
    except StateError:
        refused += 1
    time.sleep(0.0002)
print(held, refused, overlaps, flush=True)
"""


def test_two_processes_never_hold_the_lock_at_once(tmp_path: Path) -> None:
    with StateStore(tmp_path, "lab1").locked("create"):  # creates the lock file
        pass
    inode = (tmp_path / "lock").stat().st_ino
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(CONTENDER), str(tmp_path)], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        assert proc.stdout
        assert proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin
        proc.stdin.write("go\n")
        proc.stdin.flush()
    counts = [tuple(map(int, proc.communicate(timeout=120)[0].split())) for proc in procs]
    assert [overlaps for _held, _refused, overlaps in counts] == [0, 0]
    assert all(held > 0 for held, _refused, _overlaps in counts), counts
    assert sum(refused for _held, refused, _overlaps in counts) > 0, counts  # they did contend
    assert (tmp_path / "lock").stat().st_ino == inode  # nobody unlinked or replaced the lock file
