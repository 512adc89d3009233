"""The ``dispatcher`` command: thin Typer commands over the API client.

Any error prints one line (``dispatcher: <reason>``) on stderr and exits 1, a
usage error (unknown command or option, missing or bad argument) exits 2;
this happens in one place, :func:`main`.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

import dispatcher
from dispatcher.cli.client import Client
from dispatcher.cli.prompt import read_prompt
from dispatcher.config import Settings
from dispatcher.errors import DispatcherError, InvalidInput
from dispatcher.lifecycle import TERMINAL, JobState, MergeStrategy
from dispatcher.process import logpage

app = typer.Typer(
    name="dispatcher",
    help="Run coding agents in isolated git worktrees; review, merge or discard the result.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion, --show-completion: Typer's own
    pretty_exceptions_enable=False,
)
repo_app = typer.Typer(help="Register and inspect repositories.", no_args_is_help=True)
app.add_typer(repo_app, name="repo")
triggers_app = typer.Typer(
    help="Check trigger files; print their JSON Schema.", no_args_is_help=True
)
app.add_typer(triggers_app, name="triggers")


PromptFile = Annotated[
    Path | None, typer.Option("--prompt-file", help="Read the prompt from this file (UTF-8)")
]
_WAIT_HELP = "Wait until the job ends; exit 1 (saying how it ended) unless it succeeded"


def _client() -> Client:
    return Client.from_settings(Settings())


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def _when(stamp: str | None) -> str:
    """An API time (ISO 8601, UTC) as the text output shows it: local, to the second."""
    if not stamp:
        return ""
    return datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"dispatcher {dispatcher.__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """The options before any command (the help is the app's)."""


# ------------------------------------------------------------------ daemon


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8765)")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="State dir (DISPATCHER_STATE_DIR)")] = None,
    log_format: Annotated[
        Literal["text", "json"] | None,
        typer.Option(help="Log lines on stderr: text, or one JSON object each (default text)"),
    ] = None,
) -> None:
    """Run the daemon in the foreground."""
    from dispatcher.daemon import serve as run_daemon

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if state_dir is not None:
        overrides["state_dir"] = state_dir
    if log_format is not None:
        overrides["log_format"] = log_format
    run_daemon(Settings(**overrides))


# ------------------------------------------------------------------ repos


MaxParallel = Annotated[int | None, typer.Option(help="Agents at once for this repo")]
ForgeName = Annotated[
    str | None,
    typer.Option(help="owner/name on GitHub or GitLab (default: from the origin remote)"),
]
PoolSize = Annotated[int | None, typer.Option(help="Warm worktrees kept for this repo (0: none)")]
DailyCost = Annotated[float | None, typer.Option(help="Cap on agents' reported cost per UTC day")]
Fetch = Annotated[
    bool | None,
    typer.Option("--fetch/--no-fetch", help="Fetch the remote before each job's base is resolved"),
]
FetchRemote = Annotated[str | None, typer.Option(help="The remote --fetch fetches (origin)")]
Hub = Annotated[
    str | None,
    typer.Option(help="The shared remote job branches, work in progress and merges go to"),
]


class RepoSetting(StrEnum):
    """The settings `repo update --clear` puts back to their default."""

    MAX_PARALLEL = "max-parallel"
    POOL_SIZE = "pool-size"
    FORGE_NAME = "forge-name"
    DAILY_COST_USD = "daily-cost-usd"
    FETCH = "fetch"
    FETCH_REMOTE = "fetch-remote"
    HUB = "hub"


@repo_app.command("add")
def repo_add(
    path: Path,
    name: Annotated[str | None, typer.Option(help="Name to refer to it by")] = None,
    max_parallel: MaxParallel = None,
    forge_name: ForgeName = None,
    pool_size: PoolSize = None,
    daily_cost_usd: DailyCost = None,
    fetch: Fetch = None,
    fetch_remote: FetchRemote = None,
    hub: Hub = None,
) -> None:
    """Register a local git repository."""
    body = {
        "path": str(path.expanduser().absolute()), "name": name,
        "max_parallel": max_parallel, "forge_name": forge_name, "pool_size": pool_size,
        "daily_cost_usd": daily_cost_usd, "fetch": fetch, "fetch_remote": fetch_remote,
        "hub": hub,
    }  # fmt: skip
    with _client() as c:
        repo = c.post("/repos", body)
    others = len(repo.get("clones", [])) - 1  # other nodes' clones of it (docs/cluster.md)
    joined = f"; a clone of a repo with {others} other clone(s)" if others > 0 else ""
    typer.echo(
        f"registered {repo['name']} at {repo['path']}"
        f" (default branch {repo['default_branch']}{joined})"
    )


@repo_app.command("update")
def repo_update(
    name: str,
    max_parallel: MaxParallel = None,
    forge_name: ForgeName = None,
    pool_size: PoolSize = None,
    daily_cost_usd: DailyCost = None,
    fetch: Fetch = None,
    fetch_remote: FetchRemote = None,
    hub: Hub = None,
    clear: Annotated[
        list[RepoSetting] | None,
        typer.Option(help="Put this setting back to its default (repeatable)"),
    ] = None,
) -> None:
    """Change a registered repo's settings; its jobs, events and history stay. Only the
    settings given change; the next job uses them, no restart needed."""
    given = {
        "max_parallel": max_parallel, "forge_name": forge_name, "pool_size": pool_size,
        "daily_cost_usd": daily_cost_usd, "fetch": fetch, "fetch_remote": fetch_remote,
        "hub": hub,
    }  # fmt: skip
    body: dict[str, Any] = {key: value for key, value in given.items() if value is not None}
    for setting in clear or []:
        key = setting.value.replace("-", "_")
        if key in body:
            raise typer.BadParameter(
                f"--{setting.value} is given a value and cleared", param_hint="--clear"
            )
        body[key] = None
    if not body:
        raise typer.BadParameter(
            "nothing to change: give a setting or --clear SETTING", param_hint="NAME"
        )
    with _client() as c:
        repo = c.patch(f"/repos/{_seg(name)}", body)
    changed = ", ".join(
        f"{key} {'default' if repo[key] is None else repo[key]}" for key in sorted(body)
    )
    typer.echo(f"updated {repo['name']}: {changed}")


@repo_app.command("list")
def repo_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List registered repositories."""
    with _client() as c:
        repos = c.get("/repos")
    if as_json:
        _print_json(repos)
        return
    for r in repos:
        missing = "" if r["exists"] else "  (path missing!)"
        typer.echo(f"{r['name']:<24} {r['default_branch']:<16} {r['path']}{missing}")


@repo_app.command("show")
def repo_show(name: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show one repository."""
    with _client() as c:
        repo = c.get(f"/repos/{_seg(name)}")
    if as_json:
        _print_json(repo)
        return
    keys = (
        "name", "path", "default_branch", "forge_name", "max_parallel", "pool_size",
        "daily_cost_usd", "fetch", "fetch_remote", "hub", "exists", "created_at",
    )  # fmt: skip
    for key in keys:
        typer.echo(f"{key:<15} {_when(repo[key]) if key == 'created_at' else repo[key]}")
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(repo["jobs"].items())) or "none"
    typer.echo(f"{'jobs':<15} {counts}")
    size = repo["worktrees_bytes"]
    disk = "measuring" if size is None else f"{size / 2**20:.1f} MiB on disk"
    at = f" (measured {_when(repo['worktrees_measured_at'])})" if size is not None else ""
    typer.echo(f"{'worktrees':<15} {disk}{at}")
    typer.echo(f"{'triggers':<15} {', '.join(repo['triggers']) or 'none'}")
    clones = repo.get("clones", [])
    if len(clones) > 1:  # other nodes' clones too (docs/cluster.md, "Clones per node")
        for i, clone in enumerate(clones):
            typer.echo(f"{'clones' if i == 0 else '':<15} {clone['node']} {clone['path']}")
    if repo["triggers_error"]:
        typer.echo(
            f"{'trigger error':<15} the newest file is broken; the last good one stays active"
        )
        for problem in repo["triggers_error"].splitlines():
            typer.echo(f"{'':<15} {problem}")


@repo_app.command("remove")
def repo_remove(name: str) -> None:
    """Unregister a repository (its files are not touched)."""
    with _client() as c:
        c.delete(f"/repos/{_seg(name)}")
    typer.echo(f"removed {name}")


# ------------------------------------------------------------------ jobs


@app.command()
def run(
    repo: str,
    prompt: Annotated[
        str | None, typer.Option(help="What the agent should do; - reads it from stdin")
    ] = None,
    prompt_file: PromptFile = None,
    agent: Annotated[str | None, typer.Option(help="Agent profile (claude, codex, ...)")] = None,
    command: Annotated[
        str | None, typer.Option(help='Any program, e.g. "./my-agent.sh --fast" (split like sh)')
    ] = None,
    base: Annotated[str | None, typer.Option(help="Branch or commit to start from")] = None,
    timeout: Annotated[float | None, typer.Option(help="Timeout in minutes")] = None,
    wait: Annotated[bool, typer.Option(help=_WAIT_HELP)] = False,
    sparse: Annotated[
        list[str] | None,
        typer.Option(help="Check out only this directory (repeatable): a sparse worktree"),
    ] = None,
    skill: Annotated[
        list[str] | None,
        typer.Option(help="A skill of .dispatcher/skills/ given in full (repeatable)"),
    ] = None,
    max_cost_usd: Annotated[float | None, typer.Option(help="Budget for the agent")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Queue an agent job; print its id."""
    text = read_prompt(
        prompt, prompt_file, text_flag="--prompt", usage_error=_library_error("UsageError")
    )
    if agent and command:
        raise InvalidInput("give --agent or --command, not both")
    argv = None
    if command is not None:
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise InvalidInput(f"cannot split --command: {exc}") from None
        if not argv:
            raise InvalidInput("--command is empty")
    body = {
        "repo": repo, "prompt": text, "agent": agent, "command": argv,
        "base": base, "timeout_minutes": timeout, "sparse": sparse or None,
        "skills": skill or None, "max_cost_usd": max_cost_usd,
    }  # fmt: skip
    with _client() as c:
        job = c.post("/jobs", body)
        if wait:
            job = _wait(c, job["id"])
    _print_queued(job, wait=wait, as_json=as_json)


def _print_queued(job: Any, *, wait: bool, as_json: bool) -> None:
    """A queued (or, with --wait, ended) job: its id, or JSON; with --wait, exit 1 (and one
    ``dispatcher:`` line on stderr) unless it succeeded."""
    if as_json:
        _print_json(job)
    else:
        typer.echo(job["id"])
    if wait and job["state"] != JobState.SUCCEEDED:
        error = " ".join((job.get("error") or "").split())
        typer.echo(
            f"dispatcher: job {job['id']} {_state(job)}" + (f": {error}" if error else ""), err=True
        )
        raise typer.Exit(1)


@app.command()
def followup(
    job: int,
    prompt: Annotated[
        str | None, typer.Argument(help="What the agent should do next; - reads it from stdin")
    ] = None,
    prompt_file: PromptFile = None,
    timeout: Annotated[float | None, typer.Option(help="Timeout in minutes")] = None,
    wait: Annotated[bool, typer.Option(help=_WAIT_HELP)] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run the agent again in JOB's worktree and branch with PROMPT (resuming its
    session where the agent can); print the new job's id."""
    text = read_prompt(
        prompt, prompt_file, text_flag="PROMPT", usage_error=_library_error("UsageError")
    )
    with _client() as c:
        new = c.post(f"/jobs/{job}/followup", {"prompt": text, "timeout_minutes": timeout})["job"]
        if wait:
            new = _wait(c, new["id"])
    _print_queued(new, wait=wait, as_json=as_json)


@app.command()
def inbox(
    limit: Annotated[int, typer.Option(help="How many (newest first)")] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Jobs with commits awaiting review (succeeded; failed or timed out: marked), newest first."""
    with _client() as c:
        items = c.get("/inbox", params={"limit": limit})
    if as_json:
        _print_json(items)
        return
    if not items:
        typer.echo("nothing awaits review")
    for j in items:
        churn = f"+{j['insertions']}/-{j['deletions']}"
        cost = f"  ${j['cost_usd']:.2f}" if j.get("cost_usd") is not None else ""
        mark = "" if j["state"] == JobState.SUCCEEDED else f"  [{_state(j)}, has commits]"
        typer.echo(
            f"{j['id']:>5}  {j['repo']}  {j['branch']}  {churn}{cost}  "
            f"{_when(j['finished_at'])}{mark}".rstrip()
        )
        first = (j["prompt"].splitlines() or [""])[0][:100]
        typer.echo(f"       asked: {first}")
        if j["state"] != JobState.SUCCEEDED and j.get("error"):
            typer.echo(f"       error: {' '.join(j['error'].split())[:300]}")
        summary = " ".join((j.get("summary") or "(no summary)").split())
        typer.echo(f"       summary: {summary[:300]}")


def _state(job: Any) -> str:
    """The job's state in words: ``timed out`` for ``timed_out``."""
    return str(job["state"]).replace("_", " ")


def _wait(c: Client, job_id: int) -> Any:
    delay = 0.05
    while True:
        job = c.get(f"/jobs/{job_id}")
        if job["state"] in TERMINAL:
            return job
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


@app.command()
def jobs(
    repo: Annotated[str | None, typer.Option(help="Only this repo")] = None,
    state: Annotated[JobState | None, typer.Option(help="Only this state")] = None,
    limit: Annotated[int, typer.Option(help="How many (newest first)")] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List jobs, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if repo:
        params["repo"] = repo
    if state:
        params["state"] = state.value
    with _client() as c:
        page = c.get("/jobs", params=params)
    if as_json:
        _print_json(page["items"])
        return
    typer.echo(
        f"{'ID':>5}  {'STATE':<10} {'CREATED':<19}  {'REPO':<16} {'AGENT':<8} {'AHEAD':>5}  "
        f"{'+/-':<11} {'COST':>7}  {'PR':<8} PROMPT"
    )
    for j in page["items"]:
        ahead = "" if j["commits_ahead"] is None else str(j["commits_ahead"])
        churn = "" if j["insertions"] is None else f"+{j['insertions']}/-{j['deletions']}"
        cost = "" if j.get("cost_usd") is None else f"${j['cost_usd']:.2f}"
        first = (j["prompt"].splitlines() or [""])[0][:50]
        pr = "" if j.get("pr_number") is None else f"#{j['pr_number']}"
        typer.echo(
            f"{j['id']:>5}  {j['state']:<10} {_when(j['created_at']):<19}  {j['repo'][:16]:<16} "
            f"{j['agent'][:8]:<8} {ahead:>5}  {churn:<11} {cost:>7}  {pr:<8} {first}"
        )


@app.command()
def show(job: int, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show one job (and how its notifications went)."""
    with _client() as c:
        data = c.get(f"/jobs/{job}")
        deliveries = [] if as_json else c.get(f"/jobs/{job}/deliveries")
    if as_json:
        _print_json(data)
        return
    keys = (
        "id", "repo", "state", "agent", "branch", "base", "target_branch", "worktree",
        "exit_code", "signal", "error", "commits_ahead", "files_changed", "insertions",
        "deletions", "duration_s", "created_at", "started_at", "finished_at", "merged_into",
        "merged_sha", "retry_of", "followup_of", "followed_by", "port", "cost_usd",
        "max_cost_usd", "input_tokens", "output_tokens", "turns", "session_id",
        "pushed_remote", "pushed_sha", "pushed_at", "pr_url", "pr_number", "pr_state",
        "forge_error", "rebased_onto", "rebased_at", "fix_attempts", "fixes_queued",
        "summary",
    )  # fmt: skip
    for key in keys:
        if data.get(key) is not None:
            value = _when(data[key]) if key.endswith("_at") else data[key]
            typer.echo(f"{key:<14} {value}")
    if source := data.get("worktree_source"):
        wait = data.get("worktree_wait_s")
        waited = f", {wait:g}s" if wait is not None else ""
        cold = "; the warm pool had none idle" if source == "cold" else ""
        typer.echo(f"{'worktree from':<14} {source}{waited}{cold}")
    for d in deliveries:
        outcome = f"ok ({d['status_code']})" if d["ok"] else f"failed: {d['error']}"
        typer.echo(f"{'notified':<14} {d['target']} {d['url']} on {d['state']}: {outcome}")
    typer.echo(f"{'prompt':<14} {data['prompt']}")


@app.command()
def logs(
    job: int,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream until the job ends")
    ] = False,
    tail: Annotated[
        int, typer.Option(help="Show the log's last BYTES (at most 8 MiB; from a character start)")
    ] = logpage.DEFAULT_LIMIT,
    all_: Annotated[bool, typer.Option("--all", help="Show the whole log, page by page")] = False,
) -> None:
    """Print the job's log (agent output and the daemon's notes): its last MiB unless --all."""
    if not 1 <= tail <= logpage.MAX_LIMIT:
        raise InvalidInput(f"--tail must be 1 to {logpage.MAX_LIMIT} bytes, not {tail}")
    with _client() as c:
        if follow:
            events = c.follow_log(job) if all_ else c.follow_log(job, tail=tail)
            for event in events:
                if event["event"] == "log":
                    sys.stdout.write(event["data"]["text"])
                    sys.stdout.flush()
            return
        pages = c.log_pages(job) if all_ else c.log_pages(job, tail=tail)
        first = None
        for page in pages:
            first = first or page
            if page.restarted:  # the earlier pages came from the file now at agent.log.1
                sys.stdout.flush()
                typer.echo(
                    "[dispatcher] the log was rotated while read: a new file starts", err=True
                )
            sys.stdout.write(page.data.decode("utf-8", errors="replace"))
        sys.stdout.flush()
        if first is not None and first.start > 0:
            typer.echo(
                f"[dispatcher] shown: the last {first.size - first.start} of {first.size} bytes"
                f" of the log; `dispatcher logs {job} --all` shows all of it",
                err=True,
            )


@app.command()
def diff(job: int, stat: Annotated[bool, typer.Option(help="Only the diffstat")] = False) -> None:
    """Print the job's changes against its base commit."""
    with _client() as c:
        data = c.get(f"/jobs/{job}/diff")
    sys.stdout.write(data["stat"] if stat else data["patch"])


@app.command()
def merge(
    job: int,
    strategy: Annotated[
        MergeStrategy,
        typer.Option(help="merge: a merge commit; squash: one commit; rebase; ff: fast-forward"),
    ] = MergeStrategy.MERGE,
    into: Annotated[
        str | None, typer.Option(help="Target branch (default: the job's base)")
    ] = None,
    delete_branch: Annotated[bool, typer.Option(help="Delete the job branch after")] = False,
) -> None:
    """Land the job's branch; refused with the conflicting files if it would conflict."""
    body = {"strategy": strategy.value, "into": into, "delete_branch": delete_branch}
    _action(job, "merge", body)


@app.command()
def push(
    job: int,
    remote: Annotated[str, typer.Option(help="The repo's remote")] = "origin",
    force_with_lease: Annotated[
        bool,
        typer.Option(
            "--force-with-lease",
            help="Overwrite the remote branch if it is where this job last pushed it",
        ),
    ] = False,
) -> None:
    """Push the job's branch to the repo's remote (docs/forge.md)."""
    _action(job, "push", {"remote": remote, "force_with_lease": force_with_lease})


@app.command()
def pr(
    job: int,
    draft: Annotated[bool, typer.Option("--draft", help="Open it as a draft")] = False,
    base: Annotated[
        str | None, typer.Option(help="The branch to merge into (default: the job's target)")
    ] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", help="A label to put on it (repeatable)")
    ] = None,
    remote: Annotated[str, typer.Option(help="The repo's remote")] = "origin",
) -> None:
    """Push if needed, then open the job's pull (merge) request; print its URL."""
    body = {"remote": remote, "draft": draft, "base": base, "labels": label or []}
    result = _action(job, "pr", body, quiet=True)
    typer.echo(result["job"]["pr_url"])


@app.command()
def rebase(job: int) -> None:
    """Bring the job's branch onto its target's tip; a conflict starts a follow-up job that
    resolves it (docs/forge.md)."""
    _action(job, "rebase")


@app.command()
def discard(job: int) -> None:
    """Stop the job if it runs; remove its worktree and branch."""
    _action(job, "discard")


@app.command()
def cancel(job: int) -> None:
    """Stop the job's agent; keep its worktree and branch."""
    _action(job, "cancel")


@app.command()
def retry(job: int) -> None:
    """Queue a fresh job with the same inputs; print its id."""
    result = _action(job, "retry", quiet=True)
    typer.echo(result["job"]["id"])


@app.command()
def issue(
    repo: str,
    title: str,
    body: Annotated[str, typer.Option(help="Issue text")] = "",
    label: Annotated[list[str] | None, typer.Option(help="A label (repeatable)")] = None,
) -> None:
    """File an issue in the local inbox; triggers `on: issues` fire. Prints its number."""
    with _client() as c:
        created = c.post(
            f"/repos/{_seg(repo)}/issues", {"title": title, "body": body, "labels": label or []}
        )
    typer.echo(created["number"])


@app.command()
def events(
    repo: Annotated[str | None, typer.Option(help="Only this repo")] = None,
    limit: Annotated[int, typer.Option(help="How many (newest first)")] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Stored events: what matched, why not, which jobs they made."""
    params: dict[str, Any] = {"limit": limit}
    if repo:
        params["repo"] = repo
    with _client() as c:
        rows = c.get("/events", params=params)
    if as_json:
        _print_json(rows)
        return
    for e in rows:
        what = e["kind"] + (f".{e['action']}" if e["action"] else "")
        jobs_ = ",".join(str(j) for j in e["jobs"]) or "-"
        notes = "; ".join(e["notes"])
        if e.get("pending_triggers"):
            notes = "; ".join(filter(None, [notes, "pending: " + ", ".join(e["pending_triggers"])]))
        typer.echo(
            f"{e['id']:>5}  {_when(e['created_at'])}  {e['repo'][:16]:<16} {what:<28} "
            f"jobs {jobs_:<8} {notes}".rstrip()
        )


@app.command("agents")
def agents_list(
    repo: Annotated[
        str | None, typer.Option(help="As this repo's jobs run them (its agents: overrides)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List every agent profile: found on the daemon's PATH or not, its version, and whether
    it can resume a session, report its cost and take a system prompt."""
    with _client() as c:
        rows = c.get("/agents", params={"repo": repo} if repo else None)
    if as_json:
        _print_json(rows)
        return
    yes = {True: "yes", False: "-"}
    typer.echo(f"{'AGENT':<12} {'VERSION':<30} {'RESUME':<7} {'COST':<5} {'SYSTEM':<7} NOTES")
    for a in rows:
        version = a["version"] or ("not found" if a["path"] is None else "?")
        notes = "; ".join(
            n
            for n in (a["blocked"], a["problem"], None if a["source"] == "builtin" else a["source"])
            if n
        )
        typer.echo(
            f"{a['name']:<12} {version[:30]:<30} {yes[a['can_resume']]:<7} "
            f"{yes[a['reports_cost']]:<5} {yes[a['system_prompt']]:<7} {notes}".rstrip()
        )


@app.command("workers")
def workers_list(
    all_: Annotated[bool, typer.Option("--all", help="Stopped workers too")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List the workers: the daemons running jobs from this database, whether each is alive
    (on PostgreSQL, by its heartbeat), and their jobs running now."""
    with _client() as c:
        rows = c.get("/workers", params={"all": "true"} if all_ else None)
    if as_json:
        _print_json(rows)
        return
    head = f"{'ID':>5}  {'NAME':<24} {'STATE':<8} {'RUNNING':>7}/{'SLOTS':<5} {'HEARTBEAT':<20}"
    typer.echo(f"{head} STATE DIR")
    for w in rows:
        state = "stopped" if w["stopped_at"] else ("alive" if w["alive"] else "silent")
        me = " *" if w["this"] else ""
        typer.echo(
            f"{w['id']:>5}  {(w['name'] + me)[:24]:<24} {state:<8} {w['running']:>7}/"
            f"{w['slots']:<5} {_when(w['heartbeat_at']):<20} {w['state_dir']}"
        )


@triggers_app.command("check")
def triggers_check(path: Path) -> None:
    """Check a trigger file (or a repo dir's .dispatcher/triggers.yml): file:line: reason."""
    from triggers.config import TRIGGER_FILE, check

    file = path / TRIGGER_FILE if path.is_dir() else path
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {file}: {exc}") from None
    problems = check(text, filename=str(path if not path.is_dir() else file))
    for problem in problems:
        typer.echo(f"dispatcher: {problem}", err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{file}: ok")


@triggers_app.command("schema")
def triggers_schema() -> None:
    """Print the JSON Schema of .dispatcher/triggers.yml."""
    from triggers.config import json_schema

    _print_json(json_schema())


def _action(job: int, verb: str, body: Any = None, *, quiet: bool = False) -> Any:
    with _client() as c:
        result = c.post(f"/jobs/{job}/{verb}", body)
    if not quiet:
        typer.echo(result["message"])
    else:
        typer.echo(result["message"], err=True)
    return result


def _seg(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def _library_error(name: str) -> type[Exception]:
    """The CLI library's exception class called ``name`` (``UsageError``, ``ClickException``).

    Found through ``typer.BadParameter``, which typer exports publicly: it is click's class in
    typer < 0.29 and that of typer's own copy of click since, and either way a ``UsageError``
    and a ``ClickException``. So the errors are caught whatever the library's internals are.
    """
    for cls in typer.BadParameter.__mro__:
        if cls.__name__ == name and issubclass(cls, Exception):
            return cls
    raise RuntimeError(f"typer.BadParameter has no base class {name}")  # pragma: no cover


def _one_line(exc: Exception) -> str:
    """The library error's message (``format_message``), its lines joined into one."""
    text = str(getattr(exc, "format_message", exc.__str__)())
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _usage_error(exc: Exception) -> int:
    """Print a usage error as one line (or the help a bare group asks for); return 2."""
    ctx = getattr(exc, "ctx", None)
    if any(cls.__name__ == "NoArgsIsHelpError" for cls in type(exc).__mro__):
        # `dispatcher`, `dispatcher repo`: the help, on stdout as for --help. Typer's rich help
        # is printed while the error is made; plain click's is the error's message.
        help_text = str(getattr(exc, "format_message", str)())
        if help_text.strip():
            typer.echo(help_text)
        return 2
    path = ctx.command_path if ctx is not None else "dispatcher"
    typer.echo(f"dispatcher: {_one_line(exc)} (see '{path} --help')", err=True)
    return 2


# Commands in modules of their own register on `app` when imported.
from dispatcher.cli import doctor as _doctor  # noqa: E402, F401  `dispatcher doctor`
from dispatcher.cli import maintenance as _maintenance  # noqa: E402, F401  `dispatcher prune`
from dispatcher.cli import mcp as _mcp  # noqa: E402, F401  `dispatcher mcp`
from dispatcher.cli import teams as _teams  # noqa: E402, F401  `dispatcher team`
from dispatcher.cli import unit as _unit  # noqa: E402, F401  `dispatcher service`


def main(args: list[str] | None = None) -> None:
    """Entry point: errors become one line on stderr; exit 1, or 2 for a usage error."""
    usage_error, click_error = _library_error("UsageError"), _library_error("ClickException")
    try:
        # Without standalone mode click returns (not raises) the code of typer.Exit and raises
        # its own exceptions here instead of printing them.
        code = app(args=args, prog_name="dispatcher", standalone_mode=False)
    except DispatcherError as exc:
        typer.echo(f"dispatcher: {exc.message}", err=True)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("dispatcher: aborted", err=True)
        sys.exit(130)
    except usage_error as exc:
        sys.exit(_usage_error(exc))
    except click_error as exc:
        typer.echo(f"dispatcher: {_one_line(exc)}", err=True)
        sys.exit(getattr(exc, "exit_code", 1))
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
