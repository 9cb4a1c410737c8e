"""The bundle: every binary and image a lab needs, versioned and checksummed, in one store.

Public API (see deploy.bundle.store for the layout and its guarantees)::

    ArtifactKey(name, version, platform="linux/amd64")   # str(key) == "name@version/platform"; ArtifactKey.parse
    Source(kind: "build" | "upstream", ref, recipe_hash=None)
    Artifact(key, sha256, size, source, created, path)    # path: absolute, read-only object file
    Producer = Callable[[Path], Source]                   # writes one file at the path it is given
    BundleStore(root=None)                                # $LABDEPLOY_CACHE/bundle or ~/.cache/labdeploy/bundle
        .get(key) -> Artifact | None
        .ensure(key, produce, *, recipe_hash=None, expect_sha256=None) -> (Artifact, "built" | "cached")
        .list() -> list[Artifact]
        .missing(keys) -> list[ArtifactKey]
        .prune(keep) -> list[Artifact]
        .verify() -> list[(ArtifactKey, problem)]
    BundleError(PlanError)                                # exit 4

Logging (logger ``deploy.bundle.store``): WARNING for a corrupt or missing file (key, path, both
hashes); INFO for a stale recipe, a wait on another process's build (its pid), removed dead work.
"""

from __future__ import annotations

from deploy.bundle.manifest import Artifact, ArtifactKey, BundleError, Source
from deploy.bundle.store import ENV_CACHE, BundleStore, Outcome, Producer, default_root

__all__ = [
    "ENV_CACHE",
    "Artifact",
    "ArtifactKey",
    "BundleError",
    "BundleStore",
    "Outcome",
    "Producer",
    "Source",
    "default_root",
]
