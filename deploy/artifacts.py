"""The run folder ``artifacts/<lab>/<run-id>/``: resolved lab, plan, events, log, timings, summary.

Everything written here is redacted before it is serialised (:func:`deploy.secrets.redact`
on the data, :func:`deploy.secrets.redact_text` on text and on every formatted log line).
"""

from __future__ import annotations

import json
import logging
import secrets as _random
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from deploy.atomic import atomic_write
from deploy.secrets import RedactingFormatter, redact, redact_text


def new_run_id() -> str:
    """Sortable by start time (to the millisecond), unique by its random tail."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}Z"
    return f"{stamp}-{_random.token_hex(2)}"


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
        text = json.dumps(redact(data), indent=2, sort_keys=True)
        path = self.dir / name
        atomic_write(path, text.encode(), 0o644)
        return path

    def write_text(self, name: str, text: str, mode: int = 0o644) -> Path:
        path = self.dir / name
        atomic_write(path, redact_text(text).encode(), mode)
        return path

    def event(self, event: dict[str, Any]) -> None:
        record = {"time": round(time.time(), 3), **event}
        if event.get("event") == "step" and "seconds" in event:
            self.stage_seconds[str(event.get("stage"))] += float(event["seconds"])
        with self._lock:
            self._events.write(json.dumps(redact(record)) + "\n")
            self._events.flush()

    def attach_log(self) -> None:
        """Send the ``deploy`` logger (tracebacks included) to run.log, redacted."""
        handler = logging.FileHandler(self.dir / "run.log", encoding="utf-8")
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
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

