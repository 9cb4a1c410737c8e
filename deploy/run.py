"""Execute a plan: dependency order, independent steps in parallel, checkpoints after every step.

The engine knows nothing of what a step does; it reads each kind's declaration in
:mod:`deploy.stages` (executor, batched, teardown). Rules:

* a step starts when all its dependencies succeeded (``keep`` counts as success);
* a failed step stops its dependents (recorded as ``skipped``) while independent branches finish;
* every start and end is checkpointed in the state (atomic write), so a run killed at any
  point resumes: a step recorded ``running`` is retried, a converged one is kept;
* a stop request (SIGINT/SIGTERM) starts nothing new and lets in-flight steps end;
* kinds declared ``batched`` (configure) run as one batch of every ready resource, so
  pyinfra connects to all hosts at once;
* a ``replace`` step runs its kind's teardown first, then its executor;
* an executor's unexpected exception fails its steps as an internal error, with its own
  traceback in the run log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from deploy import steps
from deploy.errors import LabError, PlanError, StageError
from deploy.plan import Plan
from deploy.resources import Resource, ResourceId
from deploy.stages import stage_of
from deploy.state import LabState, ResourceRecord, StateStore
from deploy.steps import StepContext

log = logging.getLogger(__name__)
EventSink = Callable[[dict[str, Any]], None]


@dataclass
class StepOutcome:
    resource_id: str
    status: str  # ok | failed | skipped | kept | interrupted
    seconds: float = 0.0
    error: str | None = None
    stage: str = ""
    host: str | None = None
    hint: str = ""  # the failing error's own fix


@dataclass
class RunResult:
    outcomes: dict[str, StepOutcome] = field(default_factory=dict)
    interrupted: bool = False

    @property
    def failed(self) -> list[StepOutcome]:
        return [o for o in self.outcomes.values() if o.status == "failed"]

    @property
    def changed(self) -> int:
        return sum(1 for o in self.outcomes.values() if o.status == "ok")

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted


def require_supported(plan: Plan) -> None:
    """Refuse, before any side effect, a plan with steps that this version cannot run."""
    missing = sorted(c.resource_id for c in plan.unsupported)
    if missing:
        raise PlanError(f"this lab needs steps that labdeploy cannot run yet: {', '.join(missing)}",
                        hint="`deploy plan` marks them with !; remove those sections to deploy the rest")


class Engine:
    """Runs one plan against one state store."""

    def __init__(self, plan: Plan, ctx: StepContext, store: StateStore, state: LabState, *,
                 parallel: int, on_event: EventSink, stop: threading.Event | None = None) -> None:
        self.plan = plan
        self.ctx = ctx
        self.store = store
        self.state = state
        self.parallel = max(1, parallel)
        self.emit = on_event
        self.stop = stop or threading.Event()
        self.result = RunResult()
        self._running: dict[Future[dict[str, Any]], list[str]] = {}
        self._started: dict[str, float] = {}

    # --- public ----------------------------------------------------------------------------

    def run(self) -> RunResult:
        self._delete_removed()
        pending = {c.resource_id for c in self.plan.changes if c.action != "delete"}
        with ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="step") as pool:
            while pending or self._running:
                if self.stop.is_set():
                    self._interrupt(pending)
                    pending.clear()
                else:
                    self._start_ready(pool, pending)
                if self._running:
                    self._collect(wait(self._running, timeout=0.5, return_when=FIRST_COMPLETED)[0])
                elif pending:  # nothing runs and nothing can start: dependents of failures
                    self._skip_blocked(pending)
        return self.result

    # --- scheduling -------------------------------------------------------------------------

    def _status(self, rid: str) -> str | None:
        outcome = self.result.outcomes.get(rid)
        return outcome.status if outcome else None

    def _ready(self, pending: set[str]) -> list[Resource]:
        resources = self.plan.resources
        return [resources[rid] for rid in sorted(pending)
                if all(self._status(d) in ("ok", "kept") for d in resources[rid].deps)]

    def _start_ready(self, pool: ThreadPoolExecutor, pending: set[str]) -> None:
        ready = self._keep_ready(pending)
        starting = self._batches(ready)[:max(0, self.parallel - len(self._running))]
        for batch in starting:
            for resource in batch:
                pending.discard(resource.id)
                self._begin(resource)
        if starting:  # one save marks them all running before any starts (not one save per step: 500 VMs)
            self.store.save(self.state)
        for batch in starting:
            for resource in batch:
                self.emit({"event": "step", "id": resource.id, "stage": resource.stage, "status": "started"})
            future = pool.submit(self._execute, batch)
            self._running[future] = [r.id for r in batch]

    def _keep_ready(self, pending: set[str]) -> list[Resource]:
        """Mark ready ``keep`` steps kept (which may make their dependents ready); the rest to start."""
        while True:
            ready = self._ready(pending)
            kept = [r for r in ready if self.plan.action(r.id) == "keep"]
            if not kept:
                return ready
            for resource in kept:
                pending.discard(resource.id)
                self._finish(resource, "kept", 0.0)

    def _batches(self, ready: list[Resource]) -> list[list[Resource]]:
        singles = [[r] for r in ready if not stage_of(r.kind).batched]
        batched: dict[str, list[Resource]] = {}
        other_work = bool(self._running) or bool(singles)
        for resource in ready:
            if stage_of(resource.kind).batched and not other_work:
                batched.setdefault(resource.kind, []).append(resource)
        return singles + list(batched.values())

    def _skip_blocked(self, pending: set[str]) -> None:
        for rid in sorted(pending):
            resource = self.plan.resources[rid]
            blocker = next((d for d in resource.deps if self._status(d) not in ("ok", "kept")), "?")
            self.result.outcomes[rid] = StepOutcome(rid, "skipped", error=f"{blocker} did not succeed",
                                                    stage=resource.stage)
            self.emit({"event": "step", "id": rid, "stage": resource.stage, "status": "skipped",
                       "reason": f"{blocker} did not succeed"})
        pending.clear()

    def _interrupt(self, pending: set[str]) -> None:
        self.result.interrupted = True
        for rid in sorted(pending):
            self.result.outcomes[rid] = StepOutcome(rid, "interrupted", stage=self.plan.resources[rid].stage)

    # --- one step ---------------------------------------------------------------------------

    def _execute(self, batch: list[Resource]) -> dict[str, Any]:
        replaced = [r for r in batch if self.plan.action(r.id) == "replace"]
        failed: dict[str, Any] = {}
        for resource in replaced:
            try:
                self._teardown(resource)
            except LabError as exc:
                failed[resource.id] = exc
        rest = [r for r in batch if r.id not in failed]
        return failed | (steps.execute(rest, self.ctx) if rest else {})

    def _teardown(self, resource: Resource) -> None:
        record = self.state.resources.get(resource.id)
        if record is not None:
            self.emit({"event": "step", "id": resource.id, "stage": resource.stage, "status": "replacing"})
            steps.destroy(record, self.ctx)

    def _begin(self, resource: Resource) -> None:
        self._started[resource.id] = time.monotonic()
        old = self.state.resources.get(resource.id)
        self.state.resources[resource.id] = ResourceRecord(
            resource.id, resource.kind, resource.input_hash, "running", resource.provider,
            outputs=old.outputs if old else {}, updated=time.time(), run_id=self.ctx.run_id)

    def _collect(self, done: set[Future[dict[str, Any]]]) -> None:
        for future in done:
            ids = self._running.pop(future)
            try:
                results: dict[str, Any] = future.result()
            except LabError as exc:
                results = dict.fromkeys(ids, exc)
            except Exception as exc:  # an executor bug must not lose the checkpoints of the others
                stage = self.plan.resources[ids[0]].stage
                log.error("internal error in %s (%s)", stage, ", ".join(ids), exc_info=exc)
                results = dict.fromkeys(ids, StageError(stage, f"internal error: {exc!r}",
                                                        hint="its traceback is in the run log"))
            for rid in ids:
                self._record(self.plan.resources[rid], results.get(rid, {}))
            self.store.save(self.state)

    def _record(self, resource: Resource, result: dict[str, Any] | LabError) -> None:
        record = self.state.resources[resource.id]
        record.updated = time.time()
        seconds = time.monotonic() - self._started[resource.id]
        if isinstance(result, LabError):
            record.status, record.error = "failed", str(result)
            if getattr(result, "left", None):
                record.outputs = dict(result.left)  # type: ignore[attr-defined]
            host = getattr(result, "host", None) or resource.name
            self._finish(resource, "failed", seconds, str(result), host)
            self.result.outcomes[resource.id].hint = result.hint
        else:
            record.status, record.outputs, record.error = "ok", result, None
            self._finish(resource, "ok", seconds)

    def _finish(self, resource: Resource, status: str, seconds: float, error: str | None = None,
                host: str | None = None) -> None:
        self.result.outcomes[resource.id] = StepOutcome(resource.id, status, seconds, error, resource.stage, host)
        self.emit({"event": "step", "id": resource.id, "stage": resource.stage, "status": status,
                   "seconds": round(seconds, 3), **({"error": error} if error else {})})

    # --- deletions --------------------------------------------------------------------------

    def _delete_removed(self) -> None:
        """Dependents first (the plan's order). A node's resources share its name: when one of them cannot
        be removed (a member that does not drain), the node's earlier ones stay, so its machine is not
        destroyed under a cluster that still counts on it."""
        blocked: dict[str, str] = {}
        for change in self.plan.changes:
            if change.action != "delete" or self.stop.is_set():
                continue
            record = self.state.resources[change.resource_id]
            name = ResourceId.parse(record.id).name
            if name in blocked:
                self._delete_outcome(record.id, "skipped", f"kept: {blocked[name]} could not be removed")
                continue
            started = time.monotonic()
            try:
                steps.destroy(record, self.ctx)
            except LabError as exc:
                blocked[name] = record.id
                self._delete_outcome(record.id, "failed", exc.message, record.kind)
                continue
            del self.state.resources[record.id]
            self.store.save(self.state)
            self.result.outcomes[record.id] = StepOutcome(record.id, "ok", time.monotonic() - started,
                                                          stage=record.kind)
            self.emit({"event": "step", "id": record.id, "stage": "delete", "status": "deleted"})

    def _delete_outcome(self, rid: str, status: str, error: str, stage: str = "delete") -> None:
        self.result.outcomes[rid] = StepOutcome(rid, status, error=error, stage=stage)
        self.emit({"event": "step", "id": rid, "status": status, "error" if status == "failed" else "reason": error})
