"""Filling the bundle store with what a lab (or a Kubernetes minor and runtimes) needs.

    wanted(...)  -> Wanted: recipes that can build here, and artifacts no recipe can make yet
    build(...)   -> one line per artifact (built / fetched / cached, seconds, size), in parallel where it can
    refuse_missing(...) raises the ``bundle: {source: offline}`` PlanError before any side effect

The store (``deploy.bundle.store``) keeps each artifact once, content-addressed, under a lock;
this module only decides what to ask it for and reports what happened.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from deploy.bundle import Artifact, ArtifactKey, BundleError, BundleStore, catalog
from deploy.bundle.fetch import Fetcher, FetchError, ensure_release
from deploy.bundle.recipes import Recipe
from deploy.errors import LabError, PlanError
from deploy.model.resolve import ResolvedLab

EventSink = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Wanted:
    recipes: list[Recipe] = field(default_factory=list)
    not_buildable: list[ArtifactKey] = field(default_factory=list)  # needed, but no recipe here yet

    @property
    def keys(self) -> list[ArtifactKey]:
        return [r.key for r in self.recipes]


@dataclass(frozen=True)
class Line:
    key: ArtifactKey
    outcome: str  # built | fetched | cached | failed
    seconds: float
    size: int = 0
    error: str = ""

    def text(self) -> str:
        if self.outcome == "failed":
            return f"  failed  {self.key}  ({self.seconds:.1f} s): {self.error}"
        return f"  {self.outcome:<7} {self.key}  {self.seconds:.1f} s  {self.size / 2**20:.1f} MiB"


def wanted(kubernetes: str | None, runtimes: Iterable[str], store: BundleStore | None = None) -> Wanted:
    """Binaries (deploy.bundle.catalog), then the images made from them (deploy.bundle.images)."""
    from deploy.bundle import images

    chosen, store = list(runtimes), store or BundleStore()
    binaries = catalog.needs(kubernetes, chosen)
    if kubernetes is None:  # the verification images serve clusters: a lab without one needs none
        return Wanted(binaries, catalog.planned(kubernetes, chosen))
    made = images.needs(kubernetes, store, binaries)
    return Wanted([*binaries, *made], [*catalog.planned(kubernetes, chosen), *images.planned(kubernetes, store,
                                                                                              binaries)])


def lab_wanted(resolved: ResolvedLab) -> Wanted:
    """What the lab's Kubernetes section and runtimes need; nothing for a lab without a cluster."""
    k8s = resolved.lab.kubernetes
    if k8s is None:
        return Wanted()
    want = wanted(k8s.version, resolved.runtimes)
    if k8s.cni and k8s.cni.bridge and k8s.cni.bridge.network_policy:  # the enforcer and its image
        from deploy.bundle import images, recipes_tools

        enforcer = images.network_policy_image(images.from_store(BundleStore()))
        want = Wanted([*want.recipes, recipes_tools.network_policies(), enforcer], want.not_buildable)
    return want


def build(want: Wanted, store: BundleStore, *, parallel: int | None = None,
          on_event: EventSink = lambda _e: None, fetcher: Fetcher | None = None, fallback: bool = True) -> list[Line]:
    """Ensure every buildable artifact; a failure fails its line and what is made from it only.

    Recipes run in waves: one whose ``requires`` are not yet ensured waits for a later wave, so
    an image is packed only after its binaries are in the store. Lines keep the recipes' order.
    With a ``fetcher`` (``bundle.source`` auto or upstream) an artifact with an upstream release is
    downloaded and checked first; ``fallback`` (auto) builds it when the download fails.
    """
    workers = parallel or max(1, min(len(want.recipes), (os.cpu_count() or 2) // 2))
    lines: dict[ArtifactKey, Line] = {}
    pending = list(want.recipes)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="bundle") as pool:
        while pending:
            wave, blocked, pending = _next_wave(pending, lines)
            for recipe, why in blocked:
                lines[recipe.key] = Line(recipe.key, "failed", 0.0, error=why)
            for line in pool.map(lambda r: _one(r, store, on_event, fetcher, fallback), wave):
                lines[line.key] = line
    return [lines[r.key] for r in want.recipes]


def _next_wave(pending: list[Recipe], done: dict[ArtifactKey, Line]
               ) -> tuple[list[Recipe], list[tuple[Recipe, str]], list[Recipe]]:
    """(ready to run, blocked and why, still waiting) for the next wave."""
    inside = {r.key for r in pending}
    ready: list[Recipe] = []
    blocked: list[tuple[Recipe, str]] = []
    waiting: list[Recipe] = []
    for recipe in pending:
        failed = next((k for k in recipe.requires if k in done and done[k].outcome == "failed"), None)
        if failed is not None:
            blocked.append((recipe, f"needs {failed}, which failed"))
        elif any(k in inside for k in recipe.requires):
            waiting.append(recipe)
        else:
            ready.append(recipe)
    if not ready and not blocked and waiting:  # a cycle among requires: refuse rather than spin
        blocked = [(r, f"its requires form a cycle ({', '.join(str(k) for k in r.requires)})") for r in waiting]
        waiting = []
    return ready, blocked, waiting


def _one(recipe: Recipe, store: BundleStore, on_event: EventSink, fetcher: Fetcher | None, fallback: bool) -> Line:
    start = time.monotonic()
    on_event({"event": "bundle", "status": "started", "key": str(recipe.key)})
    try:
        artifact, outcome = _ensure(recipe, store, on_event, fetcher, fallback)
    except LabError as exc:
        line = Line(recipe.key, "failed", time.monotonic() - start, error=exc.message)
    else:
        line = Line(recipe.key, outcome, time.monotonic() - start, artifact.size)
    on_event({"event": "bundle", "status": line.outcome, "key": str(recipe.key), "seconds": round(line.seconds, 3),
              "size": line.size, **({"error": line.error} if line.error else {})})
    return line


def _ensure(recipe: Recipe, store: BundleStore, on_event: EventSink, fetcher: Fetcher | None,
            fallback: bool) -> tuple[Artifact, str]:
    """Download (when a fetcher is given and upstream publishes the artifact), else build."""
    if fetcher is not None:
        try:
            fetched = ensure_release(store, recipe.key, fetcher)
        except FetchError as exc:
            if not fallback:
                raise
            on_event({"event": "bundle", "status": "fallback", "key": str(recipe.key), "error": exc.message})
        else:
            if fetched is not None:
                artifact, outcome = fetched
                return artifact, "fetched" if outcome == "built" else outcome
            if not fallback:
                raise BundleError(f"{recipe.key} has no upstream release to download",
                                  hint="use bundle: {source: auto} or build to build it from its recipe")
    return store.ensure(recipe.key, recipe.produce, recipe_hash=recipe.recipe_hash())


def check_offline(resolved: ResolvedLab, lab_file: str) -> None:
    """``bundle: {source: offline}`` with artifacts missing is refused before any side effect (plan, up)."""
    if resolved.lab.bundle.source == "offline":
        refuse_missing(lab_wanted(resolved), BundleStore(), lab_file)


def refuse_missing(want: Wanted, store: BundleStore, lab_file: str) -> None:
    """``bundle: {source: offline}``: every artifact must already be in the store."""
    missing = store.missing(want.keys)
    if not missing and not want.not_buildable:
        return
    parts = []
    if missing:
        parts.append(f"not in the store: {', '.join(str(k) for k in missing)}")
    if want.not_buildable:
        parts.append(f"not buildable by this version yet: {', '.join(str(k) for k in want.not_buildable)}")
    hint = f"run `deploy bundle build {lab_file}` on a machine with the Go module proxy" if missing else \
        "those artifacts need a recipe (see `deploy bundle build --help`); or use bundle: {source: auto}"
    raise PlanError(f"bundle: {{source: offline}}, and the bundle lacks what this lab needs: {'; '.join(parts)}",
                    hint=hint)
