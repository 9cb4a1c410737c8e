"""``deploy bundle build|list|prune``: the CLI of the bundle store (errors still reach ``cli.main``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def bundle_parser(sub: Any) -> None:
    bundle = sub.add_parser("bundle", help="the bundle store: binaries and images that labs consume")
    verbs = bundle.add_subparsers(dest="verb", required=True, metavar="VERB")
    build = verbs.add_parser("build", help="fill in what a lab (or a Kubernetes minor and runtimes) needs")
    build.add_argument("lab", type=Path, nargs="?", help="the lab.yaml whose needs to build")
    build.add_argument("--kubernetes", metavar="MINOR", help="without a lab: the Kubernetes minor, e.g. 1.36")
    build.add_argument("--runtimes", default="runc", help="without a lab: runtimes, comma-separated (gvisor,wasmedge)")
    build.add_argument("--parallel", type=int, help="artifacts built at once (default: half the CPUs)")
    verbs.add_parser("list", help="what the store holds")
    prune = verbs.add_parser("prune", help="keep only the newest versions of each artifact")
    prune.add_argument("--keep", type=int, required=True, metavar="N", help="versions to keep per artifact")
    for verb in verbs.choices.values():
        verb.add_argument("--output", choices=("text", "json"), default="text")
        verb.add_argument("--debug", action="store_true", help="show tracebacks")


def cmd_bundle(args: argparse.Namespace) -> int:
    from deploy.bundle.store import BundleStore
    from deploy.cli import out

    store = BundleStore()
    if args.verb == "build":
        return _bundle_build(args, store)
    items = store.list() if args.verb == "list" else store.prune(args.keep)
    if args.output == "json":
        out.print_json(json.dumps([{"key": str(a.key), "sha256": a.sha256, "size": a.size, "source": a.source.kind,
                                    "ref": a.source.ref, "created": a.created} for a in items]))
        return 0
    for a in items:
        out.print(f"  {a.key}  {a.size / 2**20:.1f} MiB  sha256:{a.sha256[:16]}  {a.source.kind}: {a.source.ref}",
                  markup=False)
    verb = "holds" if args.verb == "list" else "pruned"
    out.print(f"The bundle {verb} {len(items)} artifact{'s' * (len(items) != 1)} ({store.root}).", markup=False)
    return 0


def _bundle_build(args: argparse.Namespace, store: Any) -> int:
    from deploy.bundle import build as bundle
    from deploy.cli import err, out

    if args.lab is not None:
        from deploy.model import open_lab

        want = bundle.lab_wanted(open_lab(args.lab)[1])
    else:
        want = bundle.wanted(args.kubernetes, [r for r in args.runtimes.split(",") if r])
    quiet = args.output == "json"
    lines = bundle.build(want, store, parallel=args.parallel,
                         on_event=lambda e: None if quiet or e["status"] != "started" else
                         err.print(f"  ensuring {e['key']} (cached, or built now) ...", markup=False))
    if quiet:
        out.print_json(json.dumps({"artifacts": [{"key": str(x.key), "outcome": x.outcome,
                                                  "seconds": round(x.seconds, 3), "size": x.size, "error": x.error}
                                                 for x in lines],
                                   "not_buildable": [str(k) for k in want.not_buildable]}))
    else:
        for line in lines:
            out.print(line.text(), markup=False)
        if want.not_buildable:
            out.print(f"  not buildable by this version yet: {', '.join(str(k) for k in want.not_buildable)}",
                      markup=False)
        out.print(f"{sum(x.outcome == 'built' for x in lines)} built, {sum(x.outcome == 'cached' for x in lines)} "
                  f"cached, {sum(x.outcome == 'failed' for x in lines)} failed ({store.root}).", markup=False)
    return 6 if any(x.outcome == "failed" for x in lines) else 0
