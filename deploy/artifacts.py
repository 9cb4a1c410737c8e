"""The run folder ``artifacts/<lab>/<run-id>/``: resolved lab, plan, events, log, timings, summary.

Everything written here passes through the secret redactor first.
"""

from __future__ import annotations

import json
import logging
import secrets as _random
import threading
import time
from collections import defaultdict
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from deploy.secrets import REDACTOR
from deploy.state import atomic_write


def new_run_id() -> str:
    """Sortable by start time (to the millisecond), unique by its random tail."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}Z"
    return f"{stamp}-{_random.token_hex(2)}"


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return str(value)


class RunArtifacts:
    """Writes one run's artifacts; safe to call from step threads."""

    def __init__(self, root: Path, lab: str, run_id: str) -> None:
        self.dir = root / lab / run_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self._events = (self.dir / "events.jsonl").open("a", encoding="utf-8")
        self._lock = threading.Lock()
        self._handler: logging.Handler | None = None
        self.stage_seconds: dict[str, float] = defaultdict(float)

    def write_json(self, name: str, data: Any) -> Path:
        text = REDACTOR(json.dumps(data, indent=2, sort_keys=True, default=_jsonable))
        path = self.dir / name
        atomic_write(path, text.encode(), 0o644)
        return path

    def write_text(self, name: str, text: str, mode: int = 0o644) -> Path:
        path = self.dir / name
        atomic_write(path, REDACTOR(text).encode(), mode)
        return path

    def event(self, event: dict[str, Any]) -> None:
        record = {"time": round(time.time(), 3), **event}
        if event.get("event") == "step" and "seconds" in event:
            self.stage_seconds[str(event.get("stage"))] += float(event["seconds"])
        with self._lock:
            self._events.write(REDACTOR(json.dumps(record, default=str)) + "\n")
            self._events.flush()

    def attach_log(self) -> None:
        """Send the ``deploy`` logger (tracebacks included) to run.log, redacted."""
        handler = logging.FileHandler(self.dir / "run.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
        handler.addFilter(_redact_record)
        logger = logging.getLogger("deploy")
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
        self._handler = handler

    def close(self) -> None:
        if self._handler:
            logging.getLogger("deploy").removeHandler(self._handler)
            self._handler.close()
        with self._lock:
            self._events.close()


def _redact_record(record: logging.LogRecord) -> bool:
    record.msg = REDACTOR(record.getMessage())
    record.args = ()
    if record.exc_info:
        record.exc_text = REDACTOR(logging.Formatter().formatException(record.exc_info))
        record.exc_info = None
    return True
