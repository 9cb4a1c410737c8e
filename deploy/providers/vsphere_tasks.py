"""vCenter tasks and property waits through the PropertyCollector (``WaitForUpdatesEx``), never polling.

Each wait makes its own PropertyCollector with one filter, so waits in parallel threads do not
see each other's updates; a deadline bounds every wait and its message names what was awaited.
A :class:`TaskCap` bounds how many tasks are in flight at once (vCenter queues or refuses beyond
its limits).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pyVmomi import vim as _vim
from pyVmomi import vmodl as _vmodl

from deploy.errors import ProviderError

vim: Any = _vim  # pyvmomi's stubs leave the data objects untyped
vmodl: Any = _vmodl


class TaskFailed(ProviderError):
    """A vCenter task that ended in error; ``fault`` is the vim fault it reported (SSLVerifyFault, ...)."""

    def __init__(self, message: str, fault: Any) -> None:
        super().__init__(message)
        self.fault = fault


class TaskCap:
    """At most ``limit`` tasks in flight; ``peak`` records the most seen at once."""

    def __init__(self, limit: int) -> None:
        self._sem = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self.limit, self.in_flight, self.peak = limit, 0, 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._sem:
            with self._lock:
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
            try:
                yield
            finally:
                with self._lock:
                    self.in_flight -= 1


def _filter_spec(obj: Any, paths: list[str]) -> Any:
    prop = vmodl.query.PropertyCollector.PropertySpec(type=type(obj), pathSet=paths)
    target = vmodl.query.PropertyCollector.ObjectSpec(obj=obj, skip=False)
    return vmodl.query.PropertyCollector.FilterSpec(objectSet=[target], propSet=[prop])


def wait_for(si: Any, obj: Any, paths: list[str], done: Callable[[dict[str, Any]], bool],
             *, what: str, timeout: float, collector: Any = None) -> dict[str, Any]:
    """Block until ``done(values of paths)`` is true; the values. ProviderError after ``timeout``.

    ``collector``: a PropertyCollector of this thread's own to put the filter on (the wait then costs
    CreateFilter, the waits and DestroyPropertyFilter); without one, a collector is made for the wait.
    """
    if collector is None:
        own = si.content.propertyCollector.CreatePropertyCollector()
        try:
            return wait_for(si, obj, paths, done, what=what, timeout=timeout, collector=own)
        finally:
            own.DestroyPropertyCollector()
    watched = collector.CreateFilter(_filter_spec(obj, paths), partialUpdates=False)
    try:
        return _wait_loop(collector, done, what=what, timeout=timeout)
    finally:
        watched.DestroyPropertyFilter()


def _wait_loop(collector: Any, done: Callable[[dict[str, Any]], bool], *, what: str,
               timeout: float) -> dict[str, Any]:
    values: dict[str, Any] = {}
    version = ""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        options = vmodl.query.PropertyCollector.WaitOptions(maxWaitSeconds=max(1, int(left)))
        update = collector.WaitForUpdatesEx(version, options)
        if update is None:
            continue
        version = update.version
        for filter_set in update.filterSet:
            for obj in filter_set.objectSet:
                values.update({change.name: change.val for change in obj.changeSet})
        if done(values):
            return values
    raise ProviderError(f"timed out after {timeout:.0f}s waiting for {what}")


def wait_task(si: Any, task: Any, *, what: str, timeout: float = 600.0, collector: Any = None) -> Any:
    """The task's result once it succeeded; its fault as a ProviderError when it failed."""
    states = (vim.TaskInfo.State.success, vim.TaskInfo.State.error)
    values = wait_for(si, task, ["info.state", "info.error", "info.result"],
                      lambda v: v.get("info.state") in states, what=what, timeout=timeout, collector=collector)
    if values["info.state"] == vim.TaskInfo.State.error:
        fault = values.get("info.error")
        detail = getattr(fault, "localizedMessage", "") or type(getattr(fault, "fault", fault)).__name__
        raise TaskFailed(f"{what} failed: {detail}", getattr(fault, "fault", fault))
    return values.get("info.result")
