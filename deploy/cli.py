"""The command line: the only module that prints errors or sets exit codes.

    deploy LAB                  same as `deploy up LAB`
    deploy validate LAB         load, resolve and check; --resolved prints every node's fields
    deploy plan LAB             what `up` would do; exit 0 no changes, 2 changes, 1 error
    deploy up LAB               converge the lab (resumes after a failure or a kill)
    deploy destroy LAB          remove everything of the lab, tracked or only tagged
    deploy verify LAB           prove each layer works (JUnit, HTML and JSON reports)
    deploy status LAB           machines and their state
    deploy graph LAB            the resource DAG (--format mermaid|dot|html)
    deploy reap [LAB]           remove expired or orphaned lab resources, through the providers
    deploy bundle build|list|prune  fill, list or trim the bundle store (binaries and images labs need)
    deploy kubeconfig LAB       the lab's admin kubeconfig path; --merge adds it to ~/.kube/config
    deploy schema               the lab file's JSON Schema
    deploy doctor               host prerequisites, each with the command that fixes it
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import traceback
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deploy import __version__
from deploy.cli_bundle import Say, bundle_parser, cmd_bundle
from deploy.cli_cluster import cmd_kubeconfig, kubeconfig_parser
from deploy.errors import ConfigError, LabError

out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deploy", description="One lab file to a working, verified lab.")
    parser.add_argument("--version", action="version", version=f"labdeploy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (("validate", "check a lab file"), ("plan", "show what up would change"),
                       ("up", "create, configure and verify the lab"), ("verify", "prove the lab works"),
                       ("destroy", "remove the lab"),
                       ("status", "show the lab's machines"), ("graph", "draw the resource graph")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("lab", type=Path, help="the lab.yaml file")
        cmd.add_argument("--state-dir", type=Path, help="state folder (default .labdeploy/<lab> beside the file)")
        cmd.add_argument("--output", choices=("text", "json"), default="text")
        cmd.add_argument("--debug", action="store_true", help="show tracebacks")
    sub.choices["validate"].add_argument("--resolved", action="store_true", help="print every resolved node")
    sub.choices["plan"].add_argument("--no-refresh", action="store_true", help="do not ask providers")
    for name in ("plan", "up"):
        sub.choices[name].add_argument(
            "--replace", action="append", default=[], metavar="RESOURCE",
            help="tear down and create again (a resource id such as machine:web-1, or a node name); repeatable")
        sub.choices[name].add_argument(
            "--reconfigure", nargs="*", metavar="NODE",
            help="re-run configure on converged nodes (all with roles when none is named) and report drift")
    up = sub.choices["up"]
    up.add_argument("--parallel", type=int, help="steps at once (default: sized to the work)")
    up.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="where run folders go")
    up.add_argument("--quiet", action="store_true", help="print only the result")
    up.add_argument("--no-verify", action="store_true", help="skip the post-deploy checks")
    verify = sub.choices["verify"]
    verify.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="where run folders go")
    verify.add_argument("--kubeconfig", type=Path, help="check a cluster built elsewhere")
    verify.add_argument("--junit", type=Path, help="also write the JUnit XML here")
    verify.add_argument("--html", type=Path, help="also write the HTML report here")
    verify.add_argument("--layer", action="append", dest="layers", metavar="LAYER",
                        help="only this built-in layer (repeatable): nodes, runtimes, kubernetes, ...")
    verify.add_argument("--max-wait", type=float, metavar="SECONDS",
                        help="cap each check's retries (fail fast on a lab that has settled)")
    sub.choices["destroy"].add_argument("--quiet", action="store_true")
    sub.choices["destroy"].add_argument("--parallel", type=int,
                                        help="teardowns of one kind at once (default 16)")
    sub.choices["graph"].add_argument("--format", choices=("mermaid", "dot", "html"), default="mermaid")
    reap = sub.add_parser("reap", help="remove expired or orphaned lab resources, through the providers")
    reap.add_argument("lab_file", nargs="?", type=Path, metavar="LAB",
                      help="reap on this lab file's provider endpoints (default: the local libvirt host)")
    reap.add_argument("--uri", default="qemu:///system", help="libvirt URI without a lab file (default qemu:///system)")
    reap.add_argument("--pool", default="labdeploy", help="storage pool of lab volumes (without a lab file)")
    reap.add_argument("--older-than", help="also take anything created before this (30m, 12h, 7d); off by default")
    reap.add_argument("--lab", help="only this lab's resources")
    reap.add_argument("--debug", action="store_true", help="show tracebacks")
    reap.add_argument("--dry-run", action="store_true", help="list what would be removed")
    reap.add_argument("--output", choices=("text", "json"), default="text")
    bundle_parser(sub)
    kubeconfig_parser(sub)
    schema = sub.add_parser("schema", help="write the lab JSON Schema")
    schema.add_argument("-o", "--out", type=Path, help="file to write (default: stdout)")
    sub.add_parser("doctor", help="check host prerequisites")
    return parser


def _argv(argv: list[str]) -> list[str]:
    """`deploy LAB` means `deploy up LAB`."""
    first = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    return argv if first is None or argv[first] in HANDLERS else [*argv[:first], "up", *argv[first:]]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(_argv(list(sys.argv[1:] if argv is None else argv)))
    try:
        return int(HANDLERS[args.command](args))
    except LabError as exc:
        _error(exc, args)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("[red]interrupted[/red]")
        return 130


def _error(exc: LabError, args: argparse.Namespace) -> None:
    """Print the error (secret values masked: a provider's message may quote what it was given)."""
    from deploy.secrets import redact, redact_text

    message, hint = redact_text(exc.message), redact_text(exc.hint)
    if getattr(args, "output", "text") == "json":
        problems = [str(p) for p in exc.problems] if isinstance(exc, ConfigError) else []
        out.print_json(json.dumps(redact({"error": type(exc).__name__, "message": message, "hint": hint,
                                          "problems": problems})))
    else:
        err.print(f"[bold red]error:[/bold red] {escape(message)}", markup=True, highlight=False)
        if hint:
            err.print(f"  fix: {hint}", markup=False)
    if getattr(args, "debug", False):
        err.print(redact_text("".join(traceback.format_exception(exc))), markup=False)


def _session(args: argparse.Namespace, **kwargs: Any) -> Any:
    from deploy.session import LabSession

    return LabSession(args.lab, state_dir=args.state_dir, **kwargs)


def _request(args: argparse.Namespace) -> Any:
    from deploy.plan import Request

    nodes = args.reconfigure
    return Request(frozenset(args.replace), None if nodes is None else frozenset(nodes))


def cmd_validate(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from deploy.model import open_lab

    _, resolved = open_lab(args.lab)
    if args.output != "json":
        for line in _not_yet(args):
            err.print(f"[yellow]note:[/yellow] {escape(line)}", markup=True, highlight=False)
    implied = resolved.implied
    if args.output == "json":
        out.print_json(json.dumps({"lab": resolved.name, "valid": True,
                                   "nodes": {k: asdict(v) for k, v in resolved.nodes.items()},
                                   "implied": asdict(implied)}, default=str))
        return 0
    if args.resolved:
        def mark(name: str, names: tuple[str, ...]) -> str:
            return f"{name} (implied)" if name in names else name

        table = Table("node", "provider", "image", "cpus", "memory", "disk", "networks", "roles")
        for n in resolved.nodes.values():
            nics = ", ".join(mark(f"{c.network}{'=' + c.ip if c.ip else ''}", implied.networks) for c in n.nics)
            table.add_row(n.name, mark(n.provider, implied.providers), mark(n.image, implied.images) or "-",
                          str(n.cpus), f"{n.memory_mib}MiB", f"{n.disk_gib}GiB", nics, ", ".join(n.roles))
        out.print(table)
        for line in implied.describe(resolved.lab):
            out.print(f"implied {line}", markup=False)
        return 0
    out.print(f"{args.lab}: lab {resolved.name} is valid ({len(resolved.nodes)} nodes, "
              f"{len(resolved.networks)} networks)", markup=False)
    names = [f"provider {p}" for p in implied.providers] + [f"network {n}" for n in implied.networks]
    names += [f"image {i}" for i in implied.images]
    if names:
        out.print(f"implied: {', '.join(names)} (see --resolved)", markup=False)
    return 0


def _not_yet(args: argparse.Namespace) -> list[str]:
    """What `deploy up` would refuse in this lab (steps no stage or provider can run yet)."""
    plan = _session(args).plan(refresh=False)
    ids = [c.resource_id for c in plan.unsupported]
    if not ids:
        return []
    return [f"`deploy up` cannot run {len(ids)} step(s) of this lab yet and refuses it before any side effect: "
            f"{', '.join(ids)}", "remove those sections to deploy the rest; `deploy plan` marks them with !"]


def cmd_plan(args: argparse.Namespace) -> int:
    from deploy.render import plan_text

    plan = _session(args).plan(refresh=not args.no_refresh, request=_request(args))
    if args.output == "json":
        out.print_json(json.dumps(plan.to_json()))
    else:
        out.print(plan_text(plan), markup=False)
    return 2 if plan.has_changes else 0


def cmd_up(args: argparse.Namespace) -> int:
    session = _session(args, artifacts_root=args.artifacts)
    stop = threading.Event()
    view = _Progress(args.output, args.quiet)
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = session.up(parallel=args.parallel, on_event=view.event, stop=stop, verify=not args.no_verify,
                            request=_request(args))
    finally:
        view.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if args.output == "json":
        out.print_json(json.dumps(result.summary))
        return 0
    if not result.plan.has_changes:
        out.print(f"No changes: lab {session.resolved.name} is up to date (every step converged).")
    else:
        out.print(f"Lab {session.resolved.name} is up: {result.result.changed} steps applied.")
    for node, changed in sorted(result.drift.items()):
        drifted = f"{len(changed)} operation(s) found drift and fixed it: {'; '.join(changed)}" if changed \
            else "no drift (every operation already converged)"
        out.print(f"  reconfigured {node}: {drifted}", markup=False)
    if result.verify:
        _print_verify(result.verify)
    _print_access(session)
    out.print(f"Artifacts: {result.artifacts}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    session = _session(args, artifacts_root=args.artifacts)
    report = session.verify(kubeconfig=args.kubeconfig, junit=args.junit, html=args.html,
                            layers=set(args.layers) if args.layers else None, max_wait=args.max_wait)
    if args.output == "json":
        out.print_json(json.dumps({"passed": report.passed, "failed": report.failed, "skipped": report.skipped}))
    else:
        _print_verify(report)
    return 0


def _print_verify(report: Any) -> None:
    out.print(f"Verified: {report.passed} passed, {report.failed} failed, {report.skipped} skipped "
              f"(report: {report.html or report.junit})")


def _print_access(session: Any) -> None:
    from deploy.ssh import SshEndpoint, known_hosts_path

    state = session.store.load()
    known = known_hosts_path(session.state_dir)
    for name in session.resolved.nodes:
        record = state.resources.get(f"machine:{name}")
        ssh = record.outputs.get("ssh") if record else None
        if not session.resolved.nodes[name].ssh:
            addresses = ", ".join((record.outputs.get("addresses") or {}).values()) if record else ""
            out.print(f"  {name}: {addresses or 'no address reported'} (ssh: false)", markup=False)
        elif ssh:
            line = SshEndpoint.from_outputs(ssh).command(known_hosts=known, alias=name)
            out.print(f"  {name}: {line}", markup=False)


class _Progress:
    """Renders run events: a rich live view, JSON lines, or nothing (quiet)."""

    def __init__(self, output: str, quiet: bool) -> None:
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.output, self.quiet = output, quiet
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                 console=err, transient=False)
        self.task: Any = None
        self.lock = threading.Lock()

    def event(self, event: dict[str, Any]) -> None:
        from deploy.secrets import redact

        event = redact(event)
        with self.lock:
            if self.output == "json":
                out.print(json.dumps(event, default=str), markup=False, highlight=False)
            elif not self.quiet:
                self._render(event)

    def _render(self, event: dict[str, Any]) -> None:
        if event.get("event") == "run" and event.get("status") == "started":
            counts = event["counts"]
            total = sum(v for k, v in counts.items() if k != "delete")
            self.progress.start()
            self.task = self.progress.add_task(f"lab {event['lab']}", total=total)
        elif event.get("event") in ("progress", "verify", "pass") and self.task is not None:
            text = event.get("message") or f"{event['event']} {event.get('status', event.get('pass', ''))}"
            self.progress.update(self.task, description=str(text)[:100])
        elif event.get("event") == "step" and self.task is not None:
            status = event["status"]
            if status in ("ok", "kept", "failed", "skipped", "interrupted"):
                self.progress.advance(self.task)
            if status in ("ok", "failed", "skipped", "started"):
                colour = {"ok": "green", "failed": "red", "skipped": "yellow"}.get(status, "cyan")
                extra = f" ({event['seconds']}s)" if "seconds" in event else ""
                self.progress.console.print(f"  [{colour}]{status:>8}[/{colour}] {event['id']}{extra}")
            self.progress.update(self.task, description=f"{event['stage']}: {event['id']}")

    def close(self) -> None:
        self.progress.stop()


def cmd_destroy(args: argparse.Namespace) -> int:
    if args.parallel is not None and args.parallel < 1:
        raise ConfigError("--parallel must be at least 1", hint="deploy destroy --parallel 1 goes one at a time")
    quiet = args.quiet or args.output == "json"
    removed = _session(args).destroy(parallel=args.parallel, on_event=lambda e: None if quiet
                                     else err.print(f"  destroyed {e['id']}", markup=False))
    if args.output == "json":
        out.print_json(json.dumps({"removed": removed}))
    else:
        out.print(f"Destroyed {len(removed)} resources." if removed else "Nothing to destroy.")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    rows = _session(args).status()
    if args.output == "json":
        out.print_json(json.dumps(rows, default=str))
        return 0
    table = Table("node", "provider", "state", "ssh")
    for row in rows:
        ssh = row["ssh"]
        table.add_row(row["node"], row["provider"], row["state"], f"{ssh['host']}:{ssh['port']}" if ssh else "-")
    out.print(table)
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from deploy import render

    plan = _session(args).plan(refresh=False)
    text = {"mermaid": render.mermaid, "dot": render.dot, "html": render.graph_html}[args.format](plan)
    out.print(text, markup=False, highlight=False)
    return 0


def cmd_reap(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from deploy.model.schema import parse_duration
    from deploy.session import reap

    older = None
    if args.older_than is not None:
        try:
            older = timedelta(seconds=parse_duration(args.older_than))
        except ValueError as exc:
            raise ConfigError(f"--older-than: {exc}") from None
    found = reap(args.lab_file, uri=args.uri, pool=args.pool, older_than=older, dry_run=args.dry_run, lab=args.lab)
    if args.output == "json":
        out.print_json(json.dumps([{"kind": r.resource.kind, "name": r.resource.name, "lab": r.resource.tags.lab,
                                    "provider": r.resource.provider, "reason": r.reason} for r in found]))
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for r in found:
        res = r.resource
        owner = f"lab {res.tags.lab}, run {res.tags.run_id}" if res.tags.lab else "no lab"
        out.print(f"  {verb} {res.kind} {res.name} ({owner}): {r.reason}", markup=False)
    done = "would be removed" if args.dry_run else "removed"
    out.print(f"{len(found)} resources {done}." if found else "Nothing to reap.")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from deploy.model.jsonschema import schema_text

    if args.out:
        args.out.write_text(schema_text())
    else:
        out.print(schema_text(), markup=False, highlight=False, end="")
    return 0


def cmd_doctor(_args: argparse.Namespace) -> int:
    from deploy.doctor import run_checks

    findings = run_checks()
    for f in findings:
        out.print(f"{'[green]ok[/green]  ' if f.ok else '[red]FAIL[/red]'} {f.name}: {f.detail}")
        if f.fix:
            out.print(f"       fix: {f.fix}", markup=False)
    return 0 if all(f.ok for f in findings) else 1


HANDLERS: dict[str, Any] = {
    "validate": cmd_validate, "plan": cmd_plan, "up": cmd_up, "verify": cmd_verify, "destroy": cmd_destroy,
    "status": cmd_status, "graph": cmd_graph, "reap": cmd_reap, "schema": cmd_schema, "doctor": cmd_doctor,
    "bundle": partial(cmd_bundle, say=Say.of(out, err)), "kubeconfig": partial(cmd_kubeconfig, say=Say.of(out, err))}


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
