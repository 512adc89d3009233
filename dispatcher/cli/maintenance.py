"""``dispatcher prune``: discard finished jobs in bulk and tidy the branches and worktrees
that merged and discarded jobs left (the rules: :mod:`dispatcher.service.prune`)."""

from __future__ import annotations

from typing import Annotated

import httpx
import typer

from dispatcher.cli.commands import _client, _print_json, app
from dispatcher.durations import HELP, parse_duration
from dispatcher.lifecycle import JobState


def _duration(text: str | None) -> str | None:
    """Checked here so that a bad one is a usage error (exit 2); sent as typed."""
    if text is not None:
        try:
            parse_duration(text)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return text


@app.command()
def prune(
    state: Annotated[
        list[JobState] | None,
        typer.Option(
            help="Prune jobs in this state, with or without commits (repeatable). Default: "
            "failed, canceled and timed_out jobs without commits, and merged and discarded "
            "jobs' leftover branches and worktrees"
        ),
    ] = None,
    older_than: Annotated[
        str | None,
        typer.Option(help=f"Only jobs finished at least this long ago: {HELP}", callback=_duration),
    ] = None,
    repo: Annotated[str | None, typer.Option(help="Only this repo's jobs")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be pruned; change nothing")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Discard finished jobs in bulk (worktree and branch removed, job discarded) and tidy
    what merged and discarded jobs left. Queued and running jobs are never pruned; jobs with
    commits and succeeded jobs only when their --state is given."""
    body = {
        "states": [s.value for s in state] if state else None, "older_than": older_than,
        "repo": repo, "dry_run": dry_run,
    }  # fmt: skip
    with _client() as c:
        # One request does it all; many jobs on big trees can take minutes: no read timeout.
        result = c.post("/jobs/prune", body, timeout=httpx.Timeout(10.0, read=None))
    if as_json:
        _print_json(result)
        return
    for job in result["jobs"]:
        typer.echo(job["message"])
    verb = "would remove" if dry_run else "removed"
    for path in result["orphans"]:
        typer.echo(f"orphan worktree {path}: {verb} (its state saved under refs/dispatcher/)")
    if any(j["action"] != "keep" and not j["done"] for j in result["jobs"]) and not dry_run:
        typer.echo(f"dispatcher: {result['summary']}", err=True)  # some could not be pruned
        raise typer.Exit(1)
    typer.echo(result["summary"])
