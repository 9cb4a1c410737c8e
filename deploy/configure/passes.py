"""One configure pass: connect, prepare every host's operations, run them, collect results.

A failure of one host (it cannot be reached, a fact or the preparing of an operation fails, or
an operation fails) fails that host only: its HostResult carries the StageError and pyinfra
stops running operations on it, while the other hosts of the pass go on.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyinfra.api.config import Config
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.host import Host
from pyinfra.api.operations import run_ops
from pyinfra.api.state import BaseStateCallback, State

from deploy.configure.deploys import OpSink, PlannedOp, step_function, steps_for_roles
from deploy.configure.inventory import HostTarget, build_inventory
from deploy.configure.settings import ConfigureSettings
from deploy.errors import StageError

logging.getLogger("pyinfra").addHandler(logging.NullHandler())
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _ErrorLog(logging.Handler):
    """Keeps pyinfra's error lines (fact failures are only logged) to quote them in StageErrors."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(_ANSI.sub("", record.getMessage()))

    def for_host(self, name: str, last: int = 5) -> str:
        prefix = f"[{name}] "
        lines = [line.removeprefix(prefix) for line in self.lines if line.startswith(prefix)]
        return "\n".join(lines[-last:])


EventSink = Callable[[dict[str, Any]], None]
STAGE = "configure"


@dataclass(frozen=True)
class OpResult:
    op: str
    changed: bool
    seconds: float
    ok: bool = True
    error: str = ""


@dataclass(frozen=True)
class HostResult:
    """One host's operations in a pass; ``error`` says why the host failed (None: it did not)."""

    name: str
    ops: tuple[OpResult, ...]
    error: StageError | None = None

    @property
    def changed(self) -> list[str]:
        return [op.op for op in self.ops if op.changed]

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class _Recorder(BaseStateCallback):
    """pyinfra callbacks → timings, connect errors and live op events."""

    emit: EventSink
    pass_no: int
    by_hash: dict[str, list[tuple[OpSink, PlannedOp]]] = field(default_factory=dict)
    started: dict[tuple[str, str], float] = field(default_factory=dict)
    seconds: dict[tuple[str, str], float] = field(default_factory=dict)
    connect_errors: dict[str, str] = field(default_factory=dict)
    emitted: set[tuple[str, str]] = field(default_factory=set)
    errors: _ErrorLog = field(default_factory=_ErrorLog)

    def host_connect_error(self, state: State, host: Host, error: Any) -> None:  # type: ignore[override]  # noqa: ARG002
        self.connect_errors[host.name] = str(error)

    def operation_host_start(self, state: State, host: Host, op_hash: str) -> None:  # type: ignore[override]  # noqa: ARG002
        self.started[(host.name, op_hash)] = time.monotonic()

    def operation_host_success(self, state: State, host: Host, op_hash: str, *_: Any) -> None:  # type: ignore[override]  # noqa: ARG002
        self._stop(host.name, op_hash)

    def operation_host_error(self, state: State, host: Host, op_hash: str, *_: Any) -> None:  # type: ignore[override]  # noqa: ARG002
        self._stop(host.name, op_hash)

    def operation_end(self, state: State, op_hash: str) -> None:  # type: ignore[override]  # noqa: ARG002
        for sink, planned in self.by_hash.get(op_hash, []):
            self.emit_op(sink, planned)

    def _stop(self, host: str, op_hash: str) -> None:
        start = self.started.pop((host, op_hash), None)
        if start is not None:
            self.seconds[(host, op_hash)] = time.monotonic() - start

    def result(self, sink: OpSink, planned: PlannedOp) -> OpResult:
        meta = planned.meta
        seconds = round(self.seconds.get((sink.host.name, planned.op_hash), 0.0), 3)
        if not meta.is_complete():
            return OpResult(planned.name, False, seconds, ok=False, error="not run")
        if meta.did_error():
            return OpResult(planned.name, False, seconds, ok=False, error=_output_tail(meta))
        return OpResult(planned.name, meta.did_change(), seconds)

    def emit_op(self, sink: OpSink, planned: PlannedOp) -> None:
        key = (sink.host.name, planned.op_hash)
        if key in self.emitted or not planned.meta.is_complete():
            return
        self.emitted.add(key)
        res = self.result(sink, planned)
        self.emit(
            {
                "event": "op",
                "pass": self.pass_no,
                "host": sink.host.name,
                "op": res.op,
                "changed": res.changed,
                "ok": res.ok,
                "seconds": res.seconds,
            }
        )


def _output_tail(meta: Any, lines: int = 15) -> str:
    text = meta.stderr.strip() or meta.stdout.strip()
    return "\n".join(text.splitlines()[-lines:]) or "no output"


def run_pass(
    targets: list[HostTarget],
    settings: ConfigureSettings,
    *,
    known_hosts: Path,
    emit: EventSink,
    pass_no: int,
    parallel: int | None = None,
) -> dict[str, HostResult]:
    """Run every deploy step of ``targets`` once; a failed host's HostResult carries its StageError."""
    config = Config(PARALLEL=parallel or 0, CONNECT_TIMEOUT=20)  # type: ignore[no-untyped-call]
    state = State(build_inventory(targets, known_hosts), config)
    recorder = _Recorder(emit, pass_no, errors=_ErrorLog())
    state.add_callback_handler(recorder)  # type: ignore[no-untyped-call]
    logger = logging.getLogger("pyinfra")
    logger.addHandler(recorder.errors)
    try:
        failed = _connect(state, recorder, targets)
        sinks = _prepare(state, recorder, [t for t in targets if t.name not in failed], settings, failed)
        _execute(state)
        results = {name: HostResult(name, (), error) for name, error in failed.items()}
        results.update(_collect(recorder, sinks, failed))
        return {t.name: results[t.name] for t in targets}
    finally:
        logger.removeHandler(recorder.errors)
        disconnect_all(state)


def _connect(state: State, recorder: _Recorder, targets: list[HostTarget]) -> dict[str, StageError]:
    """Connect to every target; the StageError of each one that could not be reached."""
    with contextlib.suppress(PyinfraError):  # raised when every host failed; errors are recorded
        connect_all(state)
    active = _active(state)
    errors = recorder.connect_errors
    return {
        t.name: StageError(
            STAGE,
            f"cannot reach over ssh: {t.name} ({t.ssh.user}@{t.ssh.host}:{t.ssh.port}): "
            + errors.get(t.name, "not connected"),
            host=t.name,
            hint="check that the machine is running, its sshd listens on that port and its host key "
            "is in the lab's known_hosts",
        )
        for t in targets
        if t.name in errors or t.name not in active
    }


def _active(state: State) -> set[str]:
    return {host.name for host in state.activated_hosts if host not in state.failed_hosts}


def _prepare(
    state: State,
    recorder: _Recorder,
    targets: list[HostTarget],
    settings: ConfigureSettings,
    failed: dict[str, StageError],
) -> list[OpSink]:
    """Add every host's operations; a host whose preparing fails goes into ``failed`` (and stops)."""
    sinks = []
    for target in targets:
        sink = OpSink(state, state.inventory.get_host(target.name), target)
        try:
            for step in steps_for_roles(target.roles):
                _prepare_step(sink, step, settings, recorder.errors)
        except StageError as exc:
            failed[target.name] = exc
            _fail_host(state, sink.host)
        sinks.append(sink)
        for planned in sink.ops:
            recorder.by_hash.setdefault(planned.op_hash, []).append((sink, planned))
    return sinks


def _fail_host(state: State, host: Host) -> None:
    """Take ``host`` out of the pass: pyinfra runs no operation on a failed host."""
    with contextlib.suppress(PyinfraError):  # "No hosts remaining!" when it was the last one
        state.fail_hosts({host})  # type: ignore[no-untyped-call]


def _prepare_step(sink: OpSink, step: str, settings: ConfigureSettings, errors: _ErrorLog) -> None:
    name = sink.target.name
    try:
        step_function(step)(sink, settings)
    except (PyinfraError, OSError, ValueError, KeyError, TypeError) as exc:
        if sink.host not in sink.state.failed_hosts:
            raise StageError(
                STAGE, f"preparing operation {sink.current!r} of deploy {step!r} failed: {exc}", host=name
            ) from exc
    if sink.host in sink.state.failed_hosts:
        raise StageError(
            STAGE,
            f"could not read the host's state for operation {sink.current!r} of deploy {step!r}:\n"
            + (errors.for_host(name) or "a fact command failed"),
            host=name,
            hint="the node lacks what this deploy needs (see the lines above) or dropped the connection",
        )


def _execute(state: State) -> None:
    with contextlib.suppress(PyinfraError):  # failed operations are read from their results
        run_ops(state)


def _collect(recorder: _Recorder, sinks: list[OpSink], failed: dict[str, StageError]) -> dict[str, HostResult]:
    results: dict[str, HostResult] = {}
    for sink in sinks:
        name = sink.target.name
        for planned in sink.ops:
            recorder.emit_op(sink, planned)
        ops = tuple(recorder.result(sink, planned) for planned in sink.ops)
        error = failed.get(name) or _op_failure(name, ops)
        results[name] = HostResult(name, ops, error)
    return results


def _op_failure(host: str, ops: tuple[OpResult, ...]) -> StageError | None:
    """The StageError of the host's first failed operation (the ones after it did not run)."""
    failure = next((op for op in ops if not op.ok and op.error != "not run"), None)
    if failure is None:
        return None
    return StageError(
        STAGE,
        f"operation {failure.op!r} failed on {host}:\n{failure.error}",
        host=host,
        hint="fix the cause shown above and re-run; converged operations are skipped",
    )
