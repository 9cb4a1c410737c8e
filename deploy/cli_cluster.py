"""``deploy kubeconfig LAB [--merge] [--into PATH]``: the lab's admin kubeconfig (errors still reach ``cli.main``).

stdout carries exactly one line, the kubeconfig's path, so ``export KUBECONFIG=$(deploy kubeconfig lab.yaml)``
works; what ``--merge`` did is said on stderr. Nothing here prints: ``cli.py`` hands in a :class:`Say`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from deploy.cli_bundle import Say


def kubeconfig_parser(sub: Any) -> None:
    cmd = sub.add_parser("kubeconfig", help="the path of the lab's admin kubeconfig (--merge: into ~/.kube/config)")
    cmd.add_argument("lab", type=Path, help="the lab.yaml file")
    cmd.add_argument("--state-dir", type=Path, help="state folder (default .labdeploy/<lab> beside the file)")
    cmd.add_argument("--merge", action="store_true",
                     help="also add the lab's cluster, user and context (named after the lab) to ~/.kube/config")
    cmd.add_argument("--into", type=Path, metavar="PATH", help="merge into this kubeconfig instead (implies --merge)")
    cmd.add_argument("--debug", action="store_true", help="show tracebacks")


def cmd_kubeconfig(args: argparse.Namespace, say: Say) -> int:
    from deploy.cluster import kubeconfig
    from deploy.session import LabSession

    session = LabSession(args.lab, state_dir=args.state_dir)
    path = kubeconfig.require(session.state_dir, args.lab)
    if args.merge or args.into is not None:
        name = session.resolved.name
        target = args.into or kubeconfig.default_target()
        kubeconfig.merge(path, target, name)
        current = kubeconfig.current_context(target)
        then = "it is the current context" if current == name else \
            f"the current context stays {current} (`kubectl config use-context {name}` switches)"
        say.note(f"merged lab {name} into {target} as context {name}; {then}")
    say.line(str(path.absolute()))
    return 0
