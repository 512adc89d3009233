"""A team's task graph drawn as text, for the CLI's `team show` and the dashboard's team
page: pure, standard library only, over the tasks as the API returns them (dicts)."""

from __future__ import annotations

from typing import Any

_MARK = {
    "waiting": "..", "starting": ">>", "running": ">>", "plan_review": "??",
    "integrating": "<<", "conflicted": "!!", "done": "ok", "failed": "XX", "canceled": "--",
}  # fmt: skip


def draw_graph(tasks: list[dict[str, Any]]) -> list[str]:
    """The task graph as text: each task under the last of its blockers (roots first),
    with its state, job and what it still waits on. Pure."""
    by_id = {t["id"]: t for t in tasks}
    children: dict[int | None, list[int]] = {}
    for t in tasks:
        known = [b for b in t["blocked_by"] if b in by_id]
        children.setdefault(max(known) if known else None, []).append(t["id"])
    lines: list[str] = []

    def label(t: dict[str, Any]) -> str:
        text = f"[{_MARK.get(t['state'], '  ')}] #{t['id']} {t['title']} ({t['state']}"
        text += f", job {t['job_id']})" if t["job_id"] is not None else ")"
        others = [b for b in t["blocked_by"] if b != max(t["blocked_by"], default=None)]
        if others:
            text += " also after " + ", ".join(f"#{b}" for b in others)
        if t["waiting_on"]:
            text += " waits on " + ", ".join(f"#{b}" for b in t["waiting_on"])
        if t.get("fix_of"):
            text += f" fixes #{t['fix_of']}"
        return text

    def walk(node: int, prefix: str, last: bool, root: bool) -> None:
        branch = "" if root else ("`-> " if last else "|-> ")
        lines.append(prefix + branch + label(by_id[node]))
        kids = children.get(node, [])
        inner = prefix + ("" if root else ("    " if last else "|   "))
        for i, kid in enumerate(kids):
            walk(kid, inner, i == len(kids) - 1, False)

    for root in children.get(None, []):
        walk(root, "", True, True)
    return lines
