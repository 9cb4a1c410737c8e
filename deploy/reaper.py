"""Remove expired or orphaned lab resources from hypervisors, whatever lab file made them.

Works through providers (``reap_candidates`` / ``reap_remove``), so every provider kind that
tags what it creates can be reaped. What is taken, each with its reason:

* expired: the ``expires`` tag (the lab's ``ttl``) is in the past;
* orphan: the tagged state folder of its lab no longer holds a state file;
* only with an explicit ``older_than``: anything created before the cutoff, and shared base
  images that no volume uses.

Nothing else is touched: a resource of a live lab that has not expired stays.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from deploy.providers.base import SomeProvider, TaggedResource

KIND_ORDER = {"machine": 0, "network": 1, "volume": 2}


@dataclass(frozen=True)
class Reaped:
    resource: TaggedResource
    reason: str


def reap(providers: Iterable[SomeProvider], *, older_than: timedelta | None, dry_run: bool,
         lab: str | None = None, now: datetime | None = None) -> list[Reaped]:
    """Remove (unless ``dry_run``) what :func:`reason` selects; returns each with its reason."""
    now = now or datetime.now(UTC)
    taken: list[Reaped] = []
    for provider in providers:
        chosen = [Reaped(r, why) for r in provider.reap_candidates()
                  if (lab is None or r.tags.lab == lab) and (why := reason(r, now, older_than, lab))]
        chosen.sort(key=lambda c: KIND_ORDER.get(c.resource.kind, 9))
        if not dry_run:
            for item in chosen:
                provider.reap_remove(item.resource)
        taken += chosen
    return taken


def reason(resource: TaggedResource, now: datetime, older_than: timedelta | None, lab: str | None) -> str:
    """Why ``resource`` is reaped, or "" to keep it."""
    tags = resource.tags
    if not tags.lab:  # shared base images belong to no lab: only an age-based reap of every lab takes them
        old = older_than is not None and lab is None and _aware(tags.created) <= now - older_than
        return f"unused base image, written {_ago(now, tags.created)} ago" if old else ""
    if tags.expires is not None and _aware(tags.expires) <= now:
        return f"expired {_ago(now, tags.expires)} ago (ttl)"
    if tags.state and not (Path(tags.state) / "state.json").exists():
        return f"orphan: the state of lab {tags.lab} ({tags.state}) is gone"
    if older_than is not None and _aware(tags.created) <= now - older_than:
        return f"created {_ago(now, tags.created)} ago (older than --older-than)"
    return ""


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _ago(now: datetime, then: datetime) -> str:
    seconds = max(0, int((now - _aware(then)).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
