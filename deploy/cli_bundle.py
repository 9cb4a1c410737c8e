"""``deploy bundle build|list|prune``: the CLI of the bundle store (errors still reach ``cli.main``).

Nothing here prints: ``cli.py`` hands in a :class:`Say` with its consoles, and this module says
through it what each verb reports.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Say:
    """Where the verbs report: a result line (stdout), JSON (stdout), and the console for the progress bar."""

    line: Callable[[str], None]
    json: Callable[[str], None]
    note: Callable[[str], None]  # a remark beside the progress bar (stderr)
    progress_console: Any  # the rich Console (stderr) the bar draws on

    @classmethod
    def of(cls, out: Any, err: Any) -> Say:
        """From cli.py's two rich Consoles."""
        return cls(line=lambda text: out.print(text, markup=False), json=out.print_json,
                   note=lambda text: err.print(text, markup=False), progress_console=err)


def bundle_parser(sub: Any) -> None:
    bundle = sub.add_parser("bundle", help="the bundle store: binaries and images that labs consume")
    verbs = bundle.add_subparsers(dest="verb", required=True, metavar="VERB")
    build = verbs.add_parser("build", help="fill in what a lab (or a Kubernetes minor and runtimes) needs")
    build.add_argument("lab", type=Path, nargs="?", help="the lab.yaml whose needs to build")
    build.add_argument("--kubernetes", metavar="MINOR", help="without a lab: the Kubernetes minor, e.g. 1.36")
    build.add_argument("--runtimes", default="runc", help="without a lab: runtimes, comma-separated (gvisor,wasmedge)")
    build.add_argument("--parallel", type=int, help="artifacts built at once (default: half the CPUs)")
    build.add_argument("--source", choices=("auto", "upstream", "build"),
                       help="download (upstream), build, or download then build (auto); default: the lab's "
                            "bundle.source, or build without a lab")
    verbs.add_parser("list", help="what the store holds")
    prune = verbs.add_parser("prune", help="keep only the newest versions of each artifact")
    prune.add_argument("--keep", type=int, required=True, metavar="N", help="versions to keep per artifact")
    for verb in verbs.choices.values():
        verb.add_argument("--output", choices=("text", "json"), default="text")
        verb.add_argument("--debug", action="store_true", help="show tracebacks")


def cmd_bundle(args: argparse.Namespace, say: Say) -> int:
    from deploy.bundle.store import BundleStore

    store = BundleStore()
    if args.verb == "build":
        return _bundle_build(args, store, say)
    items = store.list() if args.verb == "list" else store.prune(args.keep)
    if args.output == "json":
        say.json(json.dumps([{"key": str(a.key), "sha256": a.sha256, "size": a.size, "source": a.source.kind,
                                    "ref": a.source.ref, "created": a.created} for a in items]))
        return 0
    for a in items:
        say.line(f"  {a.key}  {a.size / 2**20:.1f} MiB  sha256:{a.sha256[:16]}  {a.source.kind}: {a.source.ref}")
    verb = "holds" if args.verb == "list" else "pruned"
    say.line(f"The bundle {verb} {len(items)} artifact{'s' * (len(items) != 1)} ({store.root}).")
    return 0


def _bundle_build(args: argparse.Namespace, store: Any, say: Say) -> int:
    from deploy.bundle import build as bundle
    from deploy.bundle.fetch import fetcher_for

    source, files = args.source or "build", None
    if args.lab is not None:
        from deploy.model import open_lab

        resolved = open_lab(args.lab)[1]
        want = bundle.lab_wanted(resolved)
        source, files = args.source or resolved.lab.bundle.source, resolved.lab.mirrors.files
    else:
        want = bundle.wanted(args.kubernetes, [r for r in args.runtimes.split(",") if r])
    if source == "offline":  # the lab says never to build or download: only check what is there
        bundle.refuse_missing(want, store, str(args.lab))
    quiet = args.output == "json"
    view = _BuildView(len(want.recipes), quiet, say)
    try:
        lines = bundle.build(want, store, parallel=args.parallel, on_event=view.event,
                             fetcher=fetcher_for(source, files), fallback=source == "auto")
    finally:
        view.close()
    if quiet:
        say.json(json.dumps({"artifacts": [{"key": str(x.key), "outcome": x.outcome,
                                                  "seconds": round(x.seconds, 3), "size": x.size, "error": x.error}
                                                 for x in lines],
                                   "not_buildable": [str(k) for k in want.not_buildable]}))
    else:
        if want.not_buildable:
            say.line(f"  not buildable by this version yet: {', '.join(str(k) for k in want.not_buildable)}")
        outcomes = ("built", "fetched", "cached", "failed")
        counts = ", ".join(f"{sum(x.outcome == o for x in lines)} {o}" for o in outcomes)
        say.line(f"{counts} ({store.root}).")
    return 6 if any(x.outcome == "failed" for x in lines) else 0


class _BuildView:
    """A bar over the artifacts and what is being built now (stderr), and a line as each one ends (stdout)."""

    def __init__(self, total: int, quiet: bool, say: Say) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.quiet, self.say, self.lock, self.running = quiet, say, threading.Lock(), dict[str, float]()
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=say.progress_console, transient=True)
        self.task = self.progress.add_task("bundle", total=total)
        if not quiet and total:
            self.progress.start()

    def event(self, event: dict[str, Any]) -> None:
        from deploy.bundle.build import Line
        from deploy.bundle.manifest import ArtifactKey

        if self.quiet:
            return
        with self.lock:
            key = event["key"]
            if event["status"] == "started":
                self.running[key] = time.monotonic()
            elif event["status"] == "fallback":
                self.say.note(f"  {key}: download failed, building it instead ({event['error']})")
            else:
                self.running.pop(key, None)
                self.progress.advance(self.task)
                line = Line(ArtifactKey.parse(key), event["status"], event["seconds"], event.get("size", 0),
                            event.get("error", ""))
                self.say.line(line.text())
            now = time.monotonic()
            busy = ", ".join(f"{k.split('/')[0]} {now - t:.0f}s" for k, t in self.running.items())
            self.progress.update(self.task, description=f"ensuring {busy}" if busy else "bundle")

    def close(self) -> None:
        self.progress.stop()
