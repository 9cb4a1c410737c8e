"""``deploy destroy`` tears dependents down first, the records of one kind in parallel, and stops at a failure."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from deploy import steps
from deploy.errors import ProviderError
from deploy.state import ResourceRecord


def _records(*ids: str) -> list[ResourceRecord]:
    return [ResourceRecord(id=i, kind=i.partition(":")[0], input_hash="h", status="ok", provider="p") for i in ids]


class _Teardowns:
    """Stands in for steps.destroy: records when each teardown ran, fails the ones named."""

    def __init__(self, fail: set[str] = frozenset(), seconds: float = 0.2) -> None:
        self.fail, self.seconds = fail, seconds
        self.lock = threading.Lock()
        self.running = self.peak = 0
        self.started: list[str] = []

    def __call__(self, record: ResourceRecord, _ctx: Any) -> None:
        with self.lock:
            self.started.append(record.id)
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1
        if record.id in self.fail:
            raise ProviderError(f"cannot delete {record.id}")


def test_machines_go_together_before_their_networks_and_images(monkeypatch: pytest.MonkeyPatch) -> None:
    teardowns = _Teardowns()
    monkeypatch.setattr(steps, "destroy", teardowns)
    records = _records("image:p/deb", "network:lan", *(f"machine:m{i}" for i in range(8)),
                       *(f"reachable:m{i}" for i in range(8)))
    done: list[str] = []
    started = time.monotonic()
    steps.destroy_in_order(records, None, lambda r: done.append(r.id))  # type: ignore[arg-type]
    elapsed = time.monotonic() - started
    assert sorted(done) == sorted(r.id for r in records)
    kinds = [i.partition(":")[0] for i in teardowns.started]
    assert kinds == ["reachable"] * 8 + ["machine"] * 8 + ["network", "image"]  # a kind only after the one above
    assert teardowns.peak == 8
    assert elapsed < 4 * 0.2 + 1.0  # four kinds one after another, each kind at once (18 in a row: 3.6 s)


def test_a_failed_teardown_keeps_its_record_and_no_later_kind_is_touched(monkeypatch: pytest.MonkeyPatch) -> None:
    teardowns = _Teardowns(fail={"machine:m1"}, seconds=0.01)
    monkeypatch.setattr(steps, "destroy", teardowns)
    records = _records("network:lan", "machine:m0", "machine:m1", "machine:m2")
    done: list[str] = []
    with pytest.raises(ProviderError, match="cannot delete machine:m1"):
        steps.destroy_in_order(records, None, lambda r: done.append(r.id))  # type: ignore[arg-type]
    assert sorted(done) == ["machine:m0", "machine:m2"]  # the others of its kind still went (and were saved)
    assert "network:lan" not in teardowns.started
