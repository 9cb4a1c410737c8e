"""Secret references (``{env: VAR}``, ``{file: path}``, ``{cmd: "..."}``) and redaction.

A reference is resolved only when a provider needs the value; the value lives in memory and
is registered with the process-wide :data:`REDACTOR`. Every writer of labdeploy redacts
before it serialises:

    redact(obj)        structured data (dicts, lists, tuples, sets, dataclasses, pydantic
                       models; keys too) -> plain JSON-ready data with every secret masked
    redact_text(text)  plain text (log lines, tracebacks, reports) -> masked text
    contains_secret(obj)  whether structured data holds a secret (to refuse, not mask)
    redact_file(path)  mask a file another tool wrote (pytest's log)
    RedactingFormatter a logging formatter whose every formatted line is masked

Redacting the data before ``json.dumps`` matters: JSON escapes ``"``, ``\\`` and non-ASCII
characters, so a substring search on the serialised text misses ``pässwörd`` or ``a"b``.
For text that arrives already escaped (a ``repr`` in a log line, JSON or HTML quoted in an
error message), the escaped spellings of every secret are masked as well.

A multi-line secret (a PEM key) is masked whole and line by line (lines of at least
:data:`MIN_LINE` characters, PEM armour such as ``-----END ... KEY-----`` aside), so a log
line quoting one line of it is masked too.

Secrets shorter than :data:`MIN_SECRET` characters cannot be masked without shredding
unrelated text ("ab" occurs everywhere): :func:`resolve_secret` refuses them with a
:class:`~deploy.errors.ConfigError` rather than leaking them silently.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import os
import re
import subprocess
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from deploy.errors import ConfigError
from deploy.model.schema import SecretRef

MASK = "***"
MIN_SECRET = 3  # shorter values cannot be masked without shredding unrelated text
MIN_LINE = 8  # lines of a multi-line secret at least this long are masked on their own

log = logging.getLogger(__name__)


def spellings(value: str) -> set[str]:
    """The forms in which ``value`` can appear in text: raw, JSON-, repr-, XML/HTML-escaped."""
    forms = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1],
             repr(value)[1:-1], html.escape(value), html.escape(value, quote=False),
             value.encode("unicode_escape").decode("ascii")}
    return {form for form in forms if len(form) >= MIN_SECRET}


_ARMOUR = re.compile(r"-----(BEGIN|END) [A-Z0-9 ]+-----")  # PEM armour lines are public boilerplate


def _pieces(value: str) -> set[str]:
    """What to mask for one secret: nothing when its core is too short, else the value, its
    stripped core and each long enough line."""
    core = value.strip()
    if len(core) < MIN_SECRET:
        return set()
    pieces = {value, core}
    if "\n" in core or "\r" in core:
        lines = {line.strip() for line in core.splitlines()}
        pieces |= {line for line in lines if len(line) >= MIN_LINE and not _ARMOUR.fullmatch(line)}
    return pieces


class Redactor:
    """Masks every registered secret value with ``***`` in text and in structured data."""

    def __init__(self) -> None:
        self._needles: tuple[str, ...] = ()
        self._lock = threading.Lock()
        self._warned_short = False

    def add(self, value: str) -> bool:
        """Register a secret; ``False`` (and a warning, once) when it is too short to mask."""
        pieces = _pieces(value)
        if not pieces:
            self._warn_short()
            return False
        needles = set().union(*(spellings(piece) for piece in pieces))
        with self._lock:
            merged = set(self._needles) | needles
            self._needles = tuple(sorted(merged, key=len, reverse=True))
        return True

    def _warn_short(self) -> None:
        if not self._warned_short:
            self._warned_short = True
            log.warning("a secret shorter than %d characters cannot be redacted from logs and artifacts",
                        MIN_SECRET)

    def redact_text(self, text: str) -> str:
        """``text`` with every occurrence (overlapping ones too) of a secret replaced by ``***``."""
        needles = self._needles
        if not needles or not text:
            return text
        spans = sorted(span for needle in needles if needle in text for span in _find_all(text, needle))
        if not spans:
            return text
        return _mask(text, _merge(spans))

    def redact(self, obj: Any) -> Any:
        """Plain JSON-ready data with every secret masked in every string, keys included.

        Dataclasses and pydantic models become dicts, tuples and sets become lists; any other
        object becomes its ``str`` (as ``json.dumps(default=str)`` would write it), masked.
        """
        if isinstance(obj, str):
            return self.redact_text(obj)
        if obj is None or isinstance(obj, bool | int | float):
            return obj
        if isinstance(obj, dict):
            return {self._key(k): self.redact(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple | set | frozenset):
            items = [self.redact(item) for item in obj]
            return items if isinstance(obj, list | tuple) else sorted(items, key=str)
        return self.redact(_plain(obj)) if _is_structured(obj) else self.redact_text(str(obj))

    def contains(self, obj: Any) -> bool:
        """Whether any string in ``obj`` (keys too, any spelling) holds a registered secret."""
        return bool(self.redact(obj) != Redactor().redact(obj))

    def _key(self, key: Any) -> Any:
        return key if key is None or isinstance(key, bool | int | float) else self.redact_text(str(key))

    def __call__(self, text: str) -> str:
        return self.redact_text(text)


def _is_structured(obj: Any) -> bool:
    return not isinstance(obj, type) and (dataclasses.is_dataclass(obj) or hasattr(obj, "model_dump"))


def _plain(obj: Any) -> Any:
    """A dataclass's fields (not deep-copied) or a pydantic model's JSON-mode dump."""
    if dataclasses.is_dataclass(obj):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return obj.model_dump(mode="json")


def _find_all(text: str, needle: str) -> Iterable[tuple[int, int]]:
    start = text.find(needle)
    while start != -1:
        yield start, start + len(needle)
        start = text.find(needle, start + 1)


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged = [spans[0]]
    for start, end in spans[1:]:
        last_start, last_end = merged[-1]
        if start <= last_end:
            merged[-1] = (last_start, max(last_end, end))
        else:
            merged.append((start, end))
    return merged


def _mask(text: str, spans: list[tuple[int, int]]) -> str:
    parts, position = [], 0
    for start, end in spans:
        parts += [text[position:start], MASK]
        position = end
    parts.append(text[position:])
    return "".join(parts)


REDACTOR = Redactor()


def redact(obj: Any) -> Any:
    """:meth:`Redactor.redact` with the process-wide redactor: use it before serialising."""
    return REDACTOR.redact(obj)


def redact_text(text: str) -> str:
    """:meth:`Redactor.redact_text` with the process-wide redactor."""
    return REDACTOR.redact_text(text)


def contains_secret(obj: Any) -> bool:
    """Whether ``obj`` carries a resolved secret: for checks that refuse rather than mask
    (a provider's step outputs should never hold one)."""
    return REDACTOR.contains(obj)


def redact_file(path: Path) -> None:
    """Rewrite a text file written by someone else (a tool's log) with every secret masked."""
    from deploy.atomic import atomic_write

    text = path.read_text(encoding="utf-8", errors="replace")
    clean = redact_text(text)
    if clean != text:
        atomic_write(path, clean.encode("utf-8"), path.stat().st_mode & 0o777)


class RedactingFormatter(logging.Formatter):
    """A log formatter whose whole output (message, traceback, stack) is redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


def resolve_secret(ref: SecretRef, base: Path | None = None) -> str:
    """The secret's value; registered for redaction before it is returned.

    A value too short to be masked (fewer than :data:`MIN_SECRET` characters, surrounding
    whitespace aside) is refused: labdeploy promises that secrets never reach a file.
    """
    value = _read(ref, base or Path.cwd())
    if not REDACTOR.add(value):
        raise ConfigError(
            f"secret {_describe(ref)} is shorter than {MIN_SECRET} characters and could not be kept "
            "out of logs and artifacts",
            hint=f"use a secret of at least {MIN_SECRET} characters (an empty value usually means "
                 "the variable, file or command is not the one meant)")
    return value


def _describe(ref: SecretRef) -> str:
    if ref.env is not None:
        return f"from environment variable {ref.env}"
    if ref.file is not None:
        return f"from file {ref.file}"
    return f"from command {ref.cmd!r}"


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
