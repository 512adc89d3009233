"""``dispatcher doctor``: one line per check (ok, warning or problem, and how to fix it).

The daemon makes the checks in its own environment (``GET /doctor``): its PATH, its
git, its settings. This command first asks ``/health`` whether a daemon answers and
which version it runs; with no daemon (or no way in: a token refused) it says so and
makes the checks that need none, git and the state dir, itself. It exits 1 when a
line is a problem, 0 when every line is ok or a warning (docs/configuration.md,
"dispatcher doctor").
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from dispatcher import __version__
from dispatcher.cli.client import Client, RemoteError, read_token
from dispatcher.cli.commands import _print_json, app
from dispatcher.config import Settings
from dispatcher.errors import DaemonUnavailable, Unauthorized

HEALTH_TIMEOUT_S = 5.0
"""How long ``/health`` may take to answer before the daemon counts as unreachable."""
DOCTOR_TIMEOUT_S = 300.0
"""How long the daemon's checks may take (each agent's version command: up to 20 s)."""

Line = dict[str, Any]


def _line(status: str, detail: str, fix: str | None = None) -> Line:
    return {"check": "daemon", "status": status, "detail": detail, "fix": fix}


def _health(url: str) -> tuple[Line, bool]:
    """The daemon line, and whether its checks can be asked for."""
    start = (
        "start it: `dispatcher serve` (or `dispatcher service install` to keep it running); "
        "DISPATCHER_URL says where this command looks"
    )
    try:
        with Client(url, None, timeout=HEALTH_TIMEOUT_S) as c:
            health = c.get("/health")
    except DaemonUnavailable:
        return _line("problem", f"no daemon answers at {url}", start), False
    except RemoteError as exc:
        detail = f"{url} answers, but not as the daemon: {exc.message}"
        return _line("problem", detail, start), False
    if not isinstance(health, dict) or "version" not in health:
        return _line("problem", f"{url} answers, but not as the daemon", start), False
    version = health["version"]
    if version != __version__:
        detail = f"the daemon at {url} runs {version}, this command is {__version__}"
        return _line("warning", detail, "restart the daemon so that both are one version"), True
    return _line("ok", f"{version} at {url}, {health.get('jobs_active', 0)} job(s) active"), True


def _daemon_checks(settings: Settings, url: str) -> tuple[list[Line], Line | None]:
    """The daemon's checks, or the line saying why they could not be had."""
    token_fix = (
        f"run this with the daemon's state dir (DISPATCHER_STATE_DIR; its token is "
        f"{settings.token_file}) or its DISPATCHER_TOKEN"
    )
    try:
        with Client(url, read_token(settings), timeout=DOCTOR_TIMEOUT_S) as c:
            return list(c.get("/doctor")), None
    except Unauthorized as exc:
        return [], {**_line("problem", exc.message, token_fix), "check": "token"}
    except RemoteError as exc:
        if exc.http_status == 401:
            detail = f"the daemon at {url} refused the token"
            return [], {**_line("problem", detail, token_fix), "check": "token"}
        fix = "see the daemon's log; restart the daemon if it is older than this command"
        detail = f"the daemon could not make its checks: {exc.message}"
        return [], {**_line("problem", detail, fix), "check": "checks"}
    except DaemonUnavailable as exc:
        return [], {**_line("problem", exc.message), "check": "checks"}


def checks(settings: Settings) -> list[Line]:
    """Every line: the daemon's, then its checks (or, without them, the local ones)."""
    url = (settings.url or settings.api_url).rstrip("/")
    daemon, reachable = _health(url)
    lines = [daemon]
    if reachable:
        theirs, failed = _daemon_checks(settings, url)
        if failed is None:
            return lines + theirs
        lines.append(failed)
    from dispatcher.daemon import local_checks

    return lines + local_checks(settings)


def shown(line: Line) -> str:
    """``status  check: detail; fix: how``, the status padded to one width."""
    text = f"{line['status']:<7}  {line['check']}: {line['detail']}"
    return text + (f"; fix: {line['fix']}" if line.get("fix") else "")


@app.command()
def doctor(
    as_json: Annotated[
        bool,
        typer.Option("--json", help="The lines as a JSON list of {check, status, detail, fix}"),
    ] = False,
) -> None:
    """Check the set-up (git, state dir, daemon, repos, trigger files, agents, webhook
    secrets, notify targets): one line each; exit 1 if one is a problem."""
    lines = checks(Settings())
    problems = sum(1 for line in lines if line["status"] == "problem")
    warnings = sum(1 for line in lines if line["status"] == "warning")
    if as_json:
        _print_json(lines)
    else:
        for line in lines:
            typer.echo(shown(line))
    if problems:
        if not as_json:
            typer.echo(
                f"dispatcher: {problems} problem(s), {warnings} warning(s): jobs would fail "
                "or never start until the problems are fixed",
                err=True,
            )
        raise typer.Exit(1)
    if not as_json:
        typer.echo(f"no problems, {warnings} warning(s)")
