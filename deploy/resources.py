"""Resources: the steps of a run, named by typed ids.

A :class:`ResourceId` is ``<kind>:<name>`` (``machine:web-1``, ``image:local/debian12``). It is a
``str`` so that it keys the state and JSON as before, but it is only ever built here, from its
parts, and it knows them (``rid.kind``, ``rid.name``) instead of being split again at each use.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from deploy.errors import PlanError

Outputs = dict[str, Any]


class ResourceId(str):
    """``kind:name``, built from its parts (or parsed once from the state)."""

    __slots__ = ()

    def __new__(cls, kind: str, name: str) -> ResourceId:
        if not kind or ":" in kind or not name:
            raise ValueError(f"a resource id needs a kind without ':' and a name, got {kind!r}, {name!r}")
        return super().__new__(cls, f"{kind}:{name}")

    def __getnewargs__(self) -> tuple[str, str]:  # type: ignore[override]  # copy and pickle rebuild from parts
        return self.kind, self.name

    @classmethod
    def parse(cls, text: str) -> ResourceId:
        kind, sep, name = text.partition(":")
        if not sep or not kind or not name:
            raise PlanError(f"{text!r} is not a resource id", hint="write it as kind:name, e.g. machine:web-1")
        return cls(kind, name)

    @property
    def kind(self) -> str:
        return self.partition(":")[0]

    @property
    def name(self) -> str:
        return self.partition(":")[2]


def machine(node: str) -> ResourceId:
    return ResourceId("machine", node)


def reachable(node: str) -> ResourceId:
    return ResourceId("reachable", node)


def configure(node: str) -> ResourceId:
    return ResourceId("configure", node)


def network(name: str) -> ResourceId:
    return ResourceId("network", name)


def image(provider: str, name: str) -> ResourceId:
    return ResourceId("image", f"{provider}/{name}")


@dataclass(frozen=True)
class Resource:
    """One step of a run. ``inputs`` decide its outcome: their hash is its checkpoint."""

    id: ResourceId
    kind: str
    name: str
    provider: str | None = None
    deps: tuple[ResourceId, ...] = ()
    inputs: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    runnable: bool = True  # False: its stage exists, but nothing can make this one yet (the plan marks it)

    @classmethod
    def make(cls, kind: str, name: str, provider: str | None = None, deps: tuple[ResourceId, ...] = (),
             inputs: dict[str, Any] | None = None, *, id_name: str | None = None) -> Resource:
        return cls(ResourceId(kind, id_name or name), kind, name, provider, deps, inputs or {})

    @property
    def stage(self) -> str:
        from deploy.stages import stage_of

        return stage_of(self.kind).name

    @property
    def input_hash(self) -> str:
        blob = json.dumps(self.inputs, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
