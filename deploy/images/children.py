"""Build children that die with deploy, and the cleanup of a killed build's leftovers.

Every child of an image build is started in its own session (so it and everything it forks
share one process group) with ``PR_SET_PDEATHSIG = SIGKILL``: when deploy dies, even by
SIGKILL, the kernel kills the child. The child's own children (apt, dpkg under mmdebstrap) do
not inherit that, so the group id is also appended to a record file in the build's work
directory: ``kill_recorded`` (called under the cache entry's lock before the work directory
is removed) kills whatever of a previous, killed build's groups still runs. When deploy itself
stops a build (an error, Ctrl-C), ``run_logged`` kills the whole group before returning.

PR_SET_PDEATHSIG fires when the *thread* that started the child exits, so a child is started
and waited for by the same thread (``run_logged`` does both).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

RECORD = ".children"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec function that makes the child get SIGKILL when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork: the child only calls it
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: nobody would signal us
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def spawn(argv: list[str], record: Path | None = None, **popen: Any) -> subprocess.Popen[str]:
    """Start ``argv`` as the leader of a new process group that dies with this process."""
    # the preexec function only calls prctl, getppid and kill (no locks, no imports), so it is
    # safe after a fork from a threaded process, which the generic warning is about
    preexec = _die_with_parent()
    proc = subprocess.Popen(argv, start_new_session=True, preexec_fn=preexec, text=True, **popen)  # noqa: PLW1509
    if record is not None:
        with record.open("a") as handle:
            handle.write(f"{proc.pid}\n")
    return proc


def kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL ``proc``'s process group and reap ``proc``.

    The leader is waited for without being reaped first, so its pid (the group id) cannot have
    been reused by an unrelated process when the group is signalled.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _wait_unreaped(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)


@contextlib.contextmanager
def running(argv: list[str], record: Path | None = None, **popen: Any) -> Iterator[subprocess.Popen[str]]:
    """``spawn`` for the block; on leaving it (normally or by an exception) the group is killed."""
    proc = spawn(argv, record, **popen)
    try:
        yield proc
        _wait_unreaped(proc)
    finally:
        kill_group(proc)  # after a normal exit this only takes stragglers the leader left
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def run_logged(
    argv: list[str], log: IO[str], record: Path | None = None, on_line: Callable[[str], None] | None = None
) -> int:
    """Run ``argv`` with stdout and stderr into ``log`` (each line also to ``on_line``); its exit status."""
    with running(argv, record, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if on_line is not None:
                on_line(line)
        log.flush()
    return proc.returncode


def group_members(pgid: int) -> list[int]:
    """Pids of the live processes in process group ``pgid`` (zombies excluded)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def kill_recorded(record: Path, timeout: float = 10.0) -> list[int]:
    """Kill what still runs of the groups a previous build recorded; the pids killed.

    A group whose leader still lives is left alone: a dead build's leader died with deploy
    (PR_SET_PDEATHSIG), and a live leader means that group id now names someone else's group.
    """
    try:
        pgids = {int(line) for line in record.read_text().split() if line.isdigit()}
    except OSError:
        return []
    killed: list[int] = []
    for pgid in sorted(pgids):
        members = group_members(pgid)
        if pgid in members:
            continue
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in killed) and time.monotonic() < deadline:
        time.sleep(0.05)
    return killed


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"
