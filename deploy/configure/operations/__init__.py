"""Custom pyinfra operations: each reads facts, compares, and yields commands or calls host.noop."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from io import StringIO

from pyinfra.api.command import FileUploadCommand, StringCommand


def put_text(path: str, text: str, mode: str = "644") -> Iterator[StringCommand | FileUploadCommand]:
    """Commands that write ``text`` to ``path`` (parent directory created, mode set)."""
    parent = path.rsplit("/", 1)[0] or "/"
    yield StringCommand(f"mkdir -p {shlex.quote(parent)}")
    yield FileUploadCommand(StringIO(text), path)
    yield StringCommand(f"chmod {mode} {shlex.quote(path)}")


def lines_text(lines: list[str]) -> str:
    """File text of ``lines`` with a trailing newline (empty list: empty file)."""
    return "".join(f"{line}\n" for line in lines)
