"""The peers the benchmarks compare labdeploy against, and how to install each one.

`make bench` installs all of them; a benchmark that finds one missing prints one line naming
the install command (``missing()``) and goes on with the others, never a traceback.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

# the venv running the benchmark (where `make bench` pip-installs ansible-core and kcli)
VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Peer:
    name: str  # the program the benchmark runs
    install: str  # the exact command that installs it
    in_venv: bool  # a pip package of the benchmark's venv, else a program on PATH

    def path(self) -> Path | None:
        """Where the program is, or None."""
        if self.in_venv:
            candidate = VENV_BIN / self.name
            return candidate if candidate.is_file() else None
        found = shutil.which(self.name)
        return Path(found) if found else None

    def missing(self) -> str | None:
        """None when installed, else the one-line message saying how to install it."""
        if self.path() is not None:
            return None
        where = f"in {VENV_BIN}" if self.in_venv else "on PATH"
        return f"{self.name} is not installed ({where}): run `make bench`, or `{self.install}`"


ANSIBLE = Peer("ansible-playbook", f"{VENV_BIN / 'pip'} install ansible-core", in_venv=True)
KCLI = Peer("kcli", f"{VENV_BIN / 'pip'} install kcli", in_venv=True)
VAGRANT = Peer("vagrant", "sudo apt-get install vagrant vagrant-libvirt", in_venv=False)
