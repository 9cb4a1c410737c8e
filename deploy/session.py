"""One lab, one command: load, lock, plan, run, record. The CLI calls these and only renders.

``up``: lock the lab, refresh what the state says exists, plan, refuse steps this version
cannot run (before any side effect), run the plan, write the run's artifacts and record it.
``destroy``: remove what the state records, then whatever the providers still find tagged
with the lab's name (so a lost state leaves nothing behind).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deploy import resources as rid
from deploy.artifacts import RunArtifacts, new_run_id
from deploy.bundle.build import check_offline
from deploy.errors import LabError, ProviderError, StageError, VerificationError
from deploy.model import LoadedLab, ResolvedLab, open_lab
from deploy.plan import RECONFIGURE, Plan, Request, make_plan
from deploy.providers import registry
from deploy.providers.base import ProviderContext, TaggedResource, Tags
from deploy.run import Engine, RunResult, require_supported
from deploy.secrets import resolve_secret
from deploy.state import LabState, RunRecord, StateStore
from deploy.steps import ProviderPool, StepContext

if TYPE_CHECKING:
    from deploy.reaper import Reaped
    from deploy.verify import VerifyReport

log = logging.getLogger(__name__)
EventSink = Callable[[dict[str, Any]], None]


@dataclass
class UpResult:
    plan: Plan
    result: RunResult
    run_id: str
    artifacts: Path
    summary: dict[str, Any] = field(default_factory=dict)
    verify: VerifyReport | None = None
    drift: dict[str, list[str]] = field(default_factory=dict)  # --reconfigure: node -> operations that changed


def default_parallel(plan: Plan) -> int:
    """Enough threads for the widest stage, bounded; most steps wait on I/O or guests."""
    return max(1, min(16, sum(1 for c in plan.changes if c.kind == "machine") or 1, (os.cpu_count() or 2) * 4))


class LabSession:
    def __init__(self, lab_file: Path, *, state_dir: Path | None = None,
                 artifacts_root: Path | None = None) -> None:
        self.lab_file = lab_file
        self.loaded: LoadedLab
        self.resolved: ResolvedLab
        self.loaded, self.resolved = open_lab(lab_file)
        name = self.resolved.name
        self.state_dir = state_dir or lab_file.resolve().parent / ".labdeploy" / name
        self.store = StateStore(self.state_dir, name)
        self.artifacts_root = artifacts_root or Path("artifacts")
        self._kinds_known: dict[str, bool] = {}

    # --- plan -----------------------------------------------------------------------------

    def plan(self, *, refresh: bool = True, request: Request | None = None) -> Plan:
        """What ``up`` would do. Reads only: no key, state folder or artifact is written."""
        check_offline(self.resolved, str(self.lab_file))
        state = self.store.load()
        missing: list[str] = []
        if refresh and state.resources:
            pool = self._pool(create_key=False)
            try:
                missing = self._missing(state, pool)
            finally:
                pool.close()
        return make_plan(self.resolved, state, missing, request=request, provider_ok=self.provider_ok)

    def provider_ok(self, name: str | None) -> bool:
        """Whether this version implements provider ``name``'s kind (entry points scanned once a kind)."""
        if name is None:
            return True
        kind = self.resolved.providers[name].kind
        known = self._kinds_known.get(kind)
        if known is None:
            known = self._kinds_known[kind] = registry.known(kind)
        return known

    def _missing(self, state: LabState, pool: ProviderPool) -> list[str]:
        """Recorded machines that no longer exist on their provider (deleted behind our back)."""
        gone = []
        for key, record in state.resources.items():
            if record.kind != "machine" or record.status != "ok" or record.provider not in self.resolved.providers:
                continue  # only converged machines of known providers can have vanished
            if pool.get(record.provider or "").status(rid.ResourceId.parse(key).name).state == "absent":
                gone.append(key)
        return gone

    # --- up -------------------------------------------------------------------------------

    def up(self, *, parallel: int | None = None, on_event: EventSink = lambda _e: None,
           stop: threading.Event | None = None, verify: bool = True, request: Request | None = None) -> UpResult:
        run_id = new_run_id()
        with self.store.locked(f"up {run_id}"):
            artifacts = RunArtifacts(self.artifacts_root, self.resolved.name, run_id)
            artifacts.attach_log()
            try:
                result = self._up(run_id, artifacts, parallel, _tee(artifacts.event, on_event), stop=stop,
                                  request=request or Request())
                if verify:
                    result.verify = self._verify(artifacts.dir / "verify", artifacts.event, on_event)
                return result
            except LabError:
                log.exception("run %s failed", run_id)
                raise
            finally:
                artifacts.close()

    def _up(self, run_id: str, artifacts: RunArtifacts, parallel: int | None, sink: EventSink, *,
            stop: threading.Event | None, request: Request) -> UpResult:
        check_offline(self.resolved, str(self.lab_file))
        tags = self._tags(run_id)
        pool = self._pool(artifacts.dir, sink)
        state = self.store.load()
        record = RunRecord(run_id, "up", time.time(), artifacts=str(artifacts.dir))
        try:
            plan = make_plan(self.resolved, state, self._missing(state, pool), request=request,
                             provider_ok=self.provider_ok)
            require_supported(plan)
            _check_providers(plan, pool)
            self._write_inputs(artifacts, plan)
            sink({"event": "run", "status": "started", "run_id": run_id, "lab": self.resolved.name,
                  "counts": plan.count(), "artifacts": str(artifacts.dir)})
            ctx = self._step_context(run_id, tags, pool, state, artifacts.dir, sink=sink)
            engine = Engine(plan, ctx, self.store, state, parallel=parallel or default_parallel(plan),
                            on_event=sink, stop=stop)
            result = engine.run()
        finally:
            pool.close()
        summary = self._finish(state, record, plan, result, artifacts)
        sink({"event": "run", "status": summary["outcome"], "changed": result.changed})
        if not result.ok:
            raise _run_error(result, artifacts.dir)
        return UpResult(plan, result, run_id, artifacts.dir, summary, drift=_drift(plan, state))

    def _write_inputs(self, artifacts: RunArtifacts, plan: Plan) -> None:
        artifacts.write_json("resolved.json", {"name": self.resolved.name, "nodes": self.resolved.nodes,
                                               "networks": self.resolved.networks,
                                               "images": self.resolved.images})
        artifacts.write_json("plan.json", plan.to_json())
        from deploy.render import plan_text

        artifacts.write_text("plan.txt", plan_text(plan))

    def _finish(self, state: LabState, record: RunRecord, plan: Plan, result: RunResult,
                artifacts: RunArtifacts) -> dict[str, Any]:
        record.finished = time.time()
        record.outcome = "interrupted" if result.interrupted else ("ok" if result.ok else "failed")
        record.changed = result.changed
        state.runs.append(record)
        self.store.save(state)
        summary = {"lab": self.resolved.name, "run_id": record.run_id, "outcome": record.outcome,
                   "seconds": round(record.finished - record.started, 3), "changed": result.changed,
                   "plan": plan.count(),
                   "steps": {k: {"status": o.status, "seconds": round(o.seconds, 3), "error": o.error}
                             for k, o in sorted(result.outcomes.items())}}
        artifacts.write_json("timings.json", {k: round(v, 3) for k, v in artifacts.stage_seconds.items()})
        artifacts.write_json("summary.json", summary)
        return summary

    # --- destroy --------------------------------------------------------------------------

    def destroy(self, *, on_event: EventSink = lambda _e: None, parallel: int | None = None) -> list[str]:
        """Remove everything of the lab; returns what was removed."""
        run_id = new_run_id()
        removed: list[str] = []
        with self.store.locked(f"destroy {run_id}"):
            state = self.store.load()
            pool = self._pool(create_key=False)
            try:
                removed += self._destroy_recorded(state, pool, run_id, on_event, parallel)
                removed += self._destroy_tagged(pool, on_event)
            finally:
                pool.close()
            state.runs.append(RunRecord(run_id, "destroy", time.time(), time.time(), "ok", len(removed)))
            self.store.save(state)
        return removed

    def _destroy_recorded(self, state: LabState, pool: ProviderPool, run_id: str,
                          on_event: EventSink, parallel: int | None) -> list[str]:
        from deploy.state import ResourceRecord
        from deploy.steps import destroy_in_order

        ctx = replace(self._step_context(run_id, self._tags(run_id), pool, state, None), destroying=True)
        removed: list[str] = []
        saved = [time.monotonic()]

        def gone(record: ResourceRecord) -> None:
            """Saved at most once a second (500 saves of a 500-record state were a third of a big destroy's
            time): a kill forgets at most that second's deletions, which the next destroy finds absent."""
            del state.resources[record.id]
            removed.append(record.id)
            on_event({"event": "destroy", "id": record.id})
            if time.monotonic() - saved[0] >= 1.0:
                self.store.save(state)
                saved[0] = time.monotonic()

        try:
            destroy_in_order(list(state.resources.values()), ctx, gone, parallel)  # machines forget host keys
        finally:
            self.store.save(state)
        return removed

    def _destroy_tagged(self, pool: ProviderPool, on_event: EventSink) -> list[str]:
        removed = []
        for name in self.resolved.providers:
            provider = pool.get(name)
            for found in provider.find_resources(self.resolved.name):
                provider.delete_resource(found)
                removed.append(f"{found.kind}:{found.name}")
                on_event({"event": "destroy", "id": f"{found.kind}:{found.name}", "untracked": True})
        return removed

    # --- status ---------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        state = self.store.load()
        pool = self._pool(create_key=False)
        rows = []
        try:
            for node in self.resolved.nodes.values():
                record = state.resources.get(rid.machine(node.name))
                info = pool.get(node.provider).status(node.name) if record else None
                rows.append({"node": node.name, "provider": node.provider,
                             "state": info.state if info else "not created",
                             "ssh": record.outputs.get("ssh") if record else None,
                             "recorded": record.status if record else None})
            tagged = [r for p in self.resolved.providers for r in _safe_find(pool, p, self.resolved.name)]
        finally:
            pool.close()
        known = {rid.machine(n) for n in self.resolved.nodes}
        rows += [{"node": r.name, "provider": r.provider, "state": "untracked", "ssh": None,
                  "recorded": None} for r in tagged if r.kind == "machine" and rid.machine(r.name) not in known]
        return rows

    # --- plumbing -------------------------------------------------------------------------

    def _tags(self, run_id: str) -> Tags:
        now = datetime.now(UTC)
        return Tags(self.resolved.name, run_id, now, now + timedelta(seconds=self.resolved.ttl_seconds),
                    str(self.state_dir.resolve()))

    def _pool(self, artifacts_dir: Path | None = None, sink: EventSink | None = None, *,
              create_key: bool = True) -> ProviderPool:
        """The lab's providers; ``create_key=False`` (plan, status) writes nothing, not even the key."""
        from deploy.ssh.keys import generate_keypair

        key, public = generate_keypair(self.state_dir) if create_key else (self.state_dir / "id_ed25519", None)

        def progress(message: str) -> None:
            log.info("%s", message)
            if sink:
                sink({"event": "progress", "message": message})

        ctx = ProviderContext(lab=self.resolved.name, state_dir=self.state_dir, artifacts_dir=artifacts_dir,
                              ssh_private_key=key, ssh_public_key=public, log=progress, nodes=self.resolved.nodes,
                              networks=self.resolved.networks, images=self.resolved.images,
                              secret=lambda ref: resolve_secret(ref, self.lab_file.parent))
        return ProviderPool(self.resolved, ctx)

    def _step_context(self, run_id: str, tags: Tags, pool: ProviderPool, state: LabState,
                      artifacts_dir: Path | None, *, sink: EventSink = lambda _e: None) -> StepContext:
        from deploy.ssh.hostkeys import known_hosts_path

        return StepContext(self.resolved, self.lab_file, self.state_dir, run_id, tags, pool,
                           known_hosts_path(self.state_dir),
                           lambda rid: state.resources[rid].outputs if rid in state.resources else {},
                           artifacts_dir, sink)

    # --- verify ---------------------------------------------------------------------------

    def verify(self, *, out_dir: Path | None = None, on_event: EventSink = lambda _e: None,
               **options: Any) -> VerifyReport:
        """Run the lab's checks against what the state says exists.

        ``options``: kubeconfig, junit, html (paths), layers (built-in layers to run, default
        all the lab has), max_wait (cap on each check's retry deadline, seconds).
        """
        run_id = new_run_id()
        artifacts = RunArtifacts(self.artifacts_root, self.resolved.name, run_id)
        artifacts.attach_log()
        try:
            return self._verify(out_dir or artifacts.dir / "verify", artifacts.event, on_event, **options)
        finally:
            artifacts.close()

    def _verify(self, out_dir: Path, *sinks: EventSink, kubeconfig: Path | None = None,
                junit: Path | None = None, html: Path | None = None, layers: set[str] | None = None,
                max_wait: float | None = None) -> VerifyReport:
        from deploy import inputs
        from deploy.verify import run_verify

        state = self.store.load()
        missing = [n for n in self.resolved.nodes if rid.machine(n) not in state.resources]
        if missing:
            raise VerificationError(f"nodes {', '.join(missing)} have not been created",
                                    hint="run `deploy up` first")
        kubeconfig = kubeconfig or (self.state_dir / "kubeconfig" if (self.state_dir / "kubeconfig").exists()
                                    else None)
        emit = _tee(*sinks)
        emit({"event": "verify", "status": "started"})
        outputs = lambda rid: state.resources[rid].outputs  # noqa: E731
        known = inputs.export_known_hosts(self.state_dir, list(self.resolved.nodes.values()), outputs)
        report = run_verify(
            inputs.verify_targets(self.resolved, outputs),
            inputs.verify_entries(self.resolved), known_hosts=known,
            kubeconfig=kubeconfig, runtimes=self.resolved.runtimes,
            layers=_chosen(inputs.verify_layers(self.resolved, kubeconfig), layers), out_dir=out_dir, junit=junit,
            html=html, lab_file_dir=self.lab_file.resolve().parent, cluster=inputs.cluster_expect(self.resolved),
            max_wait=max_wait)
        emit({"event": "verify", "status": "failed" if report.failed else "ok", "passed": report.passed,
              "failed": report.failed, "skipped": report.skipped})
        if report.failed:
            names = [f"{r.layer}/{r.node or '-'}: {r.name}" for r in report.failures()]
            raise VerificationError(f"{report.failed} of {report.total} checks failed: " + "; ".join(names),
                                    failed=names, hint=f"reports: {out_dir}")
        return report


def reap(lab_file: Path | None, *, uri: str, pool: str, older_than: timedelta | None, dry_run: bool,
         lab: str | None) -> list[Reaped]:
    """Reap through the providers of ``lab_file`` (every one), or a libvirt endpoint by URI."""
    from deploy.reaper import reap as reap_providers

    if lab_file is not None:
        session = LabSession(lab_file)
        providers = session._pool(create_key=False)
        chosen = [providers.get(name) for name, spec in session.resolved.providers.items()
                  if registry.known(spec.kind)]
    else:
        cls = registry.provider_class("libvirt")
        spec = cls.spec_model.model_validate({"kind": "libvirt", "uri": uri, "pool": pool})
        providers = None
        chosen = [cls("libvirt", spec, ProviderContext(lab="", state_dir=Path(".labdeploy")))]
    try:
        return reap_providers(chosen, older_than=older_than, dry_run=dry_run, lab=lab)
    finally:
        for provider in chosen:
            provider.close()


def _drift(plan: Plan, state: LabState) -> dict[str, list[str]]:
    """For each configure step re-run on request, the operations that found the host drifted."""
    return {rid.ResourceId.parse(c.resource_id).name: list(state.resources[c.resource_id].outputs.get("changed", []))
            for c in plan.changes if c.reason == RECONFIGURE and c.resource_id in state.resources}


def _check_providers(plan: Plan, pool: ProviderPool) -> None:
    """Every provider the plan will touch is usable (reachable, accel possible) before any side effect."""
    used = sorted({r.provider for c in plan.changes if c.action != "keep"
                   for r in [plan.resources.get(c.resource_id)] if r is not None and r.provider})
    for name in used:
        pool.get(name).check()


def _chosen(available: set[str], wanted: set[str] | None) -> set[str]:
    if wanted is None:
        return available
    unknown = wanted - available
    if unknown:
        raise VerificationError(f"layer {', '.join(sorted(unknown))} does not apply to this lab",
                                hint=f"layers of this lab: {', '.join(sorted(available))}")
    return wanted


def _safe_find(pool: ProviderPool, name: str, lab: str) -> list[TaggedResource]:
    with contextlib.suppress(ProviderError):
        return pool.get(name).find_resources(lab)
    return []


def _tee(*sinks: EventSink) -> EventSink:
    def emit(event: dict[str, Any]) -> None:
        for sink in sinks:
            sink(event)

    return emit


def _run_error(result: RunResult, artifacts: Path) -> LabError:
    if result.interrupted and not result.failed:
        return StageError("run", "interrupted; run `deploy up` again to resume where it stopped",
                          hint=f"artifacts: {artifacts}")
    first = result.failed[0]
    others = len(result.failed) - 1
    more = f" (and {others} more failed step{'s' if others > 1 else ''})" if others else ""
    then = f"then run `deploy up` again: converged steps are kept. Log: {artifacts}/run.log"
    hint = f"{first.hint}; {then}" if first.hint else f"fix it, {then}"
    return StageError(first.stage, f"{first.error}{more}", host=first.host, hint=hint)
