"""Text renderings of plans and graphs (no printing here: the CLI prints what these return)."""

from __future__ import annotations

import html
import json

from deploy.plan import Change, Plan

SYMBOL = {"create": "+", "update": "~", "retry": "~", "replace": "-/+", "keep": " ", "delete": "-"}
UNSUPPORTED = "!"


def plan_text(plan: Plan, *, show_keep: bool = False) -> str:
    lines = [f"Plan for lab {plan.lab}:"]
    providers = {r.provider for r in plan.resources.values() if r.kind == "machine"}
    for change in plan.changes:
        if change.action == "keep" and not show_keep:
            continue
        lines.append(_change_line(change, _where(plan, change) if len(providers) > 1 else ""))
    counts = plan.count()
    if not plan.has_changes:
        lines.append("  No changes. The lab matches its file.")
    lines.append(f"Plan: {counts['create']} to create, {counts['update']} to update, "
                 f"{counts['retry']} to retry, {counts['replace']} to replace, {counts['delete']} to delete, "
                 f"{counts['keep']} unchanged.")
    if counts["unsupported"]:
        lines.append(f"      {counts['unsupported']} not supported yet (marked !): `deploy up` refuses this lab "
                     "until they are removed from it.")
    return "\n".join(lines)


def _change_line(change: Change, where: str = "") -> str:
    if not change.supported and change.action not in ("keep", "delete"):
        return f"  {UNSUPPORTED:>3} {change.resource_id:<40} not supported yet"
    reason = f"  ({change.reason})" if change.reason and change.action != "create" else ""
    return f"  {SYMBOL[change.action]:>3} {change.resource_id:<40} {change.action}{where}{reason}"


def _where(plan: Plan, change: Change) -> str:
    """On a lab of several providers: which one a machine (or its network or image) lands on."""
    resource = plan.resources.get(change.resource_id)
    if resource is None or resource.kind not in ("machine", "network", "image") or not resource.provider:
        return ""
    return f" on {resource.provider}"


def _node_id(resource_id: str) -> str:
    return "n_" + "".join(ch if ch.isalnum() else "_" for ch in resource_id)


def mermaid(plan: Plan) -> str:
    lines = ["flowchart LR"]
    for rid, resource in plan.resources.items():
        lines.append(f'  {_node_id(rid)}["{rid}"]')
        lines += [f"  {_node_id(dep)} --> {_node_id(rid)}" for dep in resource.deps]
    return "\n".join(lines)


def dot(plan: Plan) -> str:
    lines = [f'digraph "{plan.lab}" {{', "  rankdir=LR;", "  node [shape=box, fontname=monospace];"]
    for rid, resource in plan.resources.items():
        lines.append(f'  "{rid}" [label="{rid}\\n{plan.action(rid)}"];')
        lines += [f'  "{dep}" -> "{rid}";' for dep in resource.deps]
    lines.append("}")
    return "\n".join(lines)


def graph_html(plan: Plan) -> str:
    """A self-contained page: resources laid out by stage, edges drawn as SVG lines."""
    from deploy.plan import STAGES

    columns: dict[str, list[str]] = {stage: [] for stage in STAGES}
    for rid, resource in plan.resources.items():
        columns[resource.stage].append(rid)
    used = [s for s in STAGES if columns[s]]
    pos = {rid: (40 + 260 * col, 60 + 44 * row) for col, s in enumerate(used) for row, rid in enumerate(columns[s])}
    width = 260 * max(1, len(used)) + 80
    height = 44 * max([len(columns[s]) for s in used] or [1]) + 100
    edges = "".join(
        f'<line x1="{pos[d][0] + 200}" y1="{pos[d][1] + 14}" x2="{pos[r][0]}" y2="{pos[r][1] + 14}" '
        f'stroke="#999" marker-end="url(#a)"/>' for r, res in plan.resources.items() for d in res.deps)
    boxes = "".join(
        f'<g><rect x="{x}" y="{y}" width="200" height="28" rx="5" class="{html.escape(plan.action(r))}"/>'
        f'<text x="{x + 8}" y="{y + 18}">{html.escape(r)}</text></g>' for r, (x, y) in pos.items())
    heads = "".join(f'<text x="{40 + 260 * i}" y="35" class="h">{s}</text>' for i, s in enumerate(used))
    data = html.escape(json.dumps(plan.to_json()))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(plan.lab)} graph</title>
<style>body{{font-family:sans-serif}} text{{font:12px monospace}} .h{{font-weight:bold}}
rect{{fill:#eef;stroke:#557}} rect.create{{fill:#dfd}} rect.update,rect.retry{{fill:#ffd}}
rect.delete{{fill:#fdd}}</style></head><body><h1>Lab {html.escape(plan.lab)}</h1>
<svg width="{width}" height="{height}"><defs><marker id="a" markerWidth="8" markerHeight="8" refX="8" refY="4"
orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#999"/></marker></defs>{heads}{edges}{boxes}</svg>
<script type="application/json" id="plan">{data}</script></body></html>"""
