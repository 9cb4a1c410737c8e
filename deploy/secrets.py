"""Secret references (``{env: VAR}``, ``{file: path}``, ``{cmd: "..."}``) and redaction.

A reference is resolved only when a provider needs the value; the value lives in memory and
is registered with the process-wide :data:`REDACTOR`, which every log line, event and artifact
written by labdeploy passes through.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from deploy.errors import ConfigError
from deploy.model.schema import SecretRef

MASK = "***"


class Redactor:
    """Replaces every registered secret value in text with ``***``."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        if len(value) >= 3:  # masking one or two characters would shred unrelated text
            with self._lock:
                self._values.add(value)

    def __call__(self, text: str) -> str:
        for value in sorted(self._values, key=len, reverse=True):
            text = text.replace(value, MASK)
        return text


REDACTOR = Redactor()


def resolve_secret(ref: SecretRef, base: Path | None = None) -> str:
    """The secret's value; registered for redaction before it is returned."""
    value = _read(ref, base or Path.cwd())
    REDACTOR.add(value)
    return value


def _read(ref: SecretRef, base: Path) -> str:
    if ref.env is not None:
        if ref.env not in os.environ:
            raise ConfigError(f"secret: environment variable {ref.env} is not set",
                              hint=f"export {ref.env}=... before running deploy")
        return os.environ[ref.env]
    if ref.file is not None:
        path = (base / Path(ref.file).expanduser()).resolve()
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"secret: cannot read {path}: {exc.strerror}") from None
    return _run(ref.cmd or "")


def _run(cmd: str) -> str:
    try:
        done = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"secret: command {cmd!r} did not finish within 60 s") from None
    if done.returncode != 0:
        raise ConfigError(f"secret: command {cmd!r} exited with {done.returncode}",
                          hint="run it by hand to see why; its output is not shown to keep secrets out of logs")
    return done.stdout.strip()
